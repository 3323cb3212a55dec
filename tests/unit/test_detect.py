"""detect: every kind and normalisation trap on hand-built silver tables, exact rows asserted."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from stripe_recon import tables
from stripe_recon.detect import detect
from stripe_recon.ledger import Run
from stripe_recon.silver import stored_ready as fingerprint_ready

from .silver_rows import T0, iprice, iprod, sprice, sprod, write_quarantine, write_silver

COLS = ["entity", "key", "stripe_id", "kind", "attribute", "internal_value", "stripe_value", "owner", "action"]
H = dt.timedelta(hours=1)


# Every test that writes silver runs twice: fingerprints computed by detect (silver written by another
# tool) and fingerprints stored at landing (silver written by land). Both must give the same rows.
STORED = pytest.mark.parametrize("stored", [False, True], ids=["computed", "stored"])


def _fingerprint_source(spark, cfg, run_id):
    """'computed' or 'stored', read from the detect stage's ledger message."""
    row = tables.read(spark, cfg, tables.GOLD_RUNS).where(f"run_id = '{run_id}' AND stage = 'detect'").first()
    return "computed" if row["message"] and "fingerprints computed" in row["message"] else "stored"


def _rows(spark, cfg, run_id):
    df = tables.read(spark, cfg, tables.GOLD_DISCREPANCIES).where(f"run_id = '{run_id}'")
    return sorted((tuple(r) for r in df.select(*COLS).collect()), key=repr)


def _catalog():
    products_i = [
        iprod("P1", name="  Cafe\u0301\u00a0", description=None, metadata={"a": "1", "b": "2"}),
        iprod("P2", name="Blue Shirt"),
        iprod("P3", name="New"),
        iprod("P4", active=False),
        iprod("P5", deleted_at=T0),
        iprod("P6", name="old", active=False),
        iprod("P7"),
        iprod("P8", tax_code=None),
        iprod("P9", metadata={"color": "red", "size": "L"}),
        iprod("P10", description="Nice  thing\u2003"),
        iprod("P11", description=" "),
    ]
    products_s = [
        sprod("prod_1", "P1", name="Caf\u00e9", description="", metadata={"b": "2", "a": "1"}),
        sprod("prod_2", "P2", name="Blue shirt"),
        sprod("prod_5", "P5"),
        sprod("prod_6", "P6", name="OLD", active=False),
        sprod("prod_7a", "P7", created=T0),
        sprod("prod_7b", "P7", created=T0 + H),
        sprod("prod_7c", "P7", created=T0 - 24 * H, active=False),
        sprod("prod_7d", "P7", created=T0 - 24 * H, is_deleted=True),
        sprod("prod_8", "P8", tax_code="txcd_1"),
        sprod("prod_9", "P9", metadata={"extra": "x", "color": "blue"}),
        sprod("prod_10", "P10", description="Nice  thing"),
        sprod("prod_11", "P11", description=None),
        sprod("prod_x", "PX"),
        sprod("prod_y", None),
        sprod("prod_z", "PZ", active=False),
    ]
    prices_i = [
        iprice("PR1", "P1", currency="usd", unit_amount=1999),
        iprice("PR2", "P2", currency="jpy", unit_amount=500),
        iprice("PR3", "P3", currency="kwd", unit_amount=1250),
        iprice("PR4", "P1"),
        iprice("PR5", "P3"),
        iprice("PR6", "P2", interval="month", interval_count=1, nickname="Monthly"),
        iprice("PR7", "P2", interval="month", interval_count=1),
        iprice("PR9", "P2", active=False),
        iprice("PR10", "P2", active=False, unit_amount=100),
    ]
    prices_s = [
        sprice("price_1", "PR1", "prod_1", currency="USD", unit_amount=1999),
        sprice("price_2", "PR2", "prod_2", currency="jpy", unit_amount=5000),
        sprice("price_3", "PR3", "prod_x", currency="kwd", unit_amount=1250),
        sprice("price_4", "PR4", "prod_2"),
        sprice("price_6", "PR6", "prod_2", interval="month", interval_count=1, nickname=" monthly "),
        sprice("price_7", "PR7", "prod_2", interval="year", interval_count=1),
        sprice("price_8", "PR8", "prod_2"),
        sprice("price_9", "PR9", "prod_2"),
        sprice("price_10", "PR10", "prod_2", active=False, unit_amount=200),
    ]
    return products_i, products_s, prices_i, prices_s


# Written from the rules in docs/internals.md, not from the code's output.
EXPECTED = sorted(
    [
        ("product", "P2", "prod_2", "field_mismatch", "name", "Blue Shirt", "Blue shirt", "internal", "push"),
        ("product", "P3", None, "missing_in_stripe", None, None, None, "internal", "create"),
        ("product", "P5", "prod_5", "field_mismatch", "active", "false", "true", "internal", "push"),
        ("product", "P7", "prod_7b", "duplicate_in_stripe", None, None, None, None, "review"),
        ("product", "P8", "prod_8", "field_mismatch", "tax_code", None, "txcd_1", "stripe", "pull"),
        ("product", "P9", "prod_9", "field_mismatch", "metadata.color", "red", "blue", "internal", "push"),
        ("product", "P9", "prod_9", "field_mismatch", "metadata.extra", None, "x", "internal", "push"),
        ("product", "P9", "prod_9", "field_mismatch", "metadata.size", "L", None, "internal", "push"),
        ("product", "PX", "prod_x", "missing_in_internal", None, None, None, None, "review"),
        ("product", None, "prod_y", "missing_in_internal", None, None, None, None, "review"),
        ("price", "PR2", "price_2", "field_mismatch", "amount", "500", "5000", "internal", "replace"),
        # price_3 hangs off prod_x (key PX) while PR3 belongs to P3
        ("price", "PR3", "price_3", "price_product_mismatch", "product", "P3", "PX", "internal", "replace"),
        ("price", "PR4", "price_4", "price_product_mismatch", "product", "P1", "P2", "internal", "replace"),
        ("price", "PR5", None, "missing_in_stripe", None, None, None, "internal", "create"),
        ("price", "PR6", "price_6", "field_mismatch", "nickname", "Monthly", "monthly", "internal", "push"),
        ("price", "PR7", "price_7", "field_mismatch", "interval", "month", "year", "internal", "replace"),
        ("price", "PR8", "price_8", "missing_in_internal", None, None, None, None, "review"),
        ("price", "PR9", "price_9", "field_mismatch", "active", "false", "true", "internal", "push"),
    ],
    key=repr,
)


@STORED
def test_every_kind_and_trap(spark, cfg, run, stored):
    write_silver(spark, cfg, *_catalog(), fingerprints=stored)
    counts = detect(run)
    assert _fingerprint_source(spark, cfg, run.run_id) == ("stored" if stored else "computed")
    assert _rows(spark, cfg, run.run_id) == EXPECTED
    assert counts["discrepancies"] == len(EXPECTED)
    assert counts["field_mismatch"] == 10
    assert counts["missing_in_internal"] == 3
    assert counts["missing_in_stripe"] == 2
    assert counts["duplicate_in_stripe"] == 1
    assert counts["price_product_mismatch"] == 2
    assert counts["price.missing_in_stripe"] == 1

    # Same run detected again: rows replaced, not appended. Ledger rows carry counts and versions.
    detect(run)
    assert _rows(spark, cfg, run.run_id) == EXPECTED
    ledger = tables.read(spark, cfg, tables.GOLD_RUNS).where(f"run_id = '{run.run_id}' AND stage = 'detect'").collect()
    assert len(ledger) == 2 and all(r["status"] == "ok" for r in ledger)
    assert ledger[0]["counts"]["discrepancies"] == len(EXPECTED)
    assert set(ledger[0]["versions_read"]) == {
        "silver.internal_products", "silver.internal_prices", "silver.stripe_products", "silver.stripe_prices"
    }


def _detect_message(spark, cfg, run_id) -> str:
    return (tables.read(spark, cfg, tables.GOLD_RUNS).where(f"run_id = '{run_id}' AND stage = 'detect'")
            .first().message) or ""


def test_other_run_rows_kept_and_unchanged_silver_keeps_them(spark, cfg):
    """Another run's rows stay; a detect over the very silver versions the last detect read keeps
    that run's rows (not compared again), and compares again once that run's rows are gone from
    gold.discrepancies or with detect.reuse_unchanged=false."""
    write_silver(spark, cfg, [iprod("P1"), iprod("P2", name="Old")], [sprod("prod_2", "P2", name="New")], [], [])
    expected = [("product", "P1", None, "missing_in_stripe", None, None, None, "internal", "create"),
                ("product", "P2", "prod_2", "field_mismatch", "name", "Old", "New", "internal", "push")]
    detect(Run.new(spark, cfg, "run-a"))
    counts = detect(Run.new(spark, cfg, "run-b"))
    assert _rows(spark, cfg, "run-a") == _rows(spark, cfg, "run-b") == expected
    assert "unchanged" not in _detect_message(spark, cfg, "run-a")
    assert "silver unchanged since run run-a: its rows stand (0 keys compared again)" in _detect_message(spark, cfg, "run-b")
    assert counts["discrepancies"] == 2 and counts["field_mismatch"] == 1 and counts["changed_keys"] == 0

    off = cfg.with_overrides("detect.reuse_unchanged=false")
    detect(Run.new(spark, off, "run-c"))
    assert "unchanged" not in _detect_message(spark, off, "run-c") and _rows(spark, off, "run-c") == expected

    # the newest detect's rows are gone (say, deleted by hand): compared again, not copied as nothing
    tables.delete_where(spark, cfg, tables.GOLD_DISCREPANCIES, "run_id = 'run-c'")
    detect(Run.new(spark, cfg, "run-d"))
    assert "unchanged" not in _detect_message(spark, cfg, "run-d") and _rows(spark, cfg, "run-d") == expected


@STORED
def test_latest_wins_and_metadata_owners(spark, make_cfg, stored):
    cfg = make_cfg(
        "attributes.product.name.owner=bidirectional",
        "attributes.product.name.resolve=latest_wins",
        "attributes.price.nickname.owner=bidirectional",
        "attributes.price.nickname.resolve=latest_wins",
        'metadata.owners={"promo_*": stripe, "promo_code": internal, "secret": ignore, "sec*": stripe}',
    )
    write_silver(
        spark, cfg,
        [
            iprod("A", name="new", updated_at=T0 + H),
            iprod("B", name="mine", updated_at=T0),
            iprod("C", name="tie", updated_at=T0 + dt.timedelta(milliseconds=400)),
            iprod("D", metadata={"promo_x": "1", "promo_code": "a", "secret": "s", "second": "1"}),
        ],
        [
            sprod("prod_a", "A", name="old", updated=T0),
            sprod("prod_b", "B", name="theirs", updated=T0 + H),
            sprod("prod_c", "C", name="TIE", updated=T0),
            sprod("prod_d", "D", metadata={"promo_x": "2", "promo_code": "b", "secret": "t", "second": "2"}),
        ],
        [iprice("Q1", "A", nickname="n1", updated_at=T0 + H), iprice("Q2", "A", nickname="n1", updated_at=T0)],
        [sprice("price_q1", "Q1", "prod_a", nickname="n2", created=T0),
         sprice("price_q2", "Q2", "prod_a", nickname="n2", created=T0)],
        fingerprints=stored,
    )
    run = Run.new(spark, cfg)
    detect(run)
    assert _rows(spark, cfg, run.run_id) == sorted(
        [
            ("product", "A", "prod_a", "field_mismatch", "name", "new", "old", "bidirectional", "push"),
            ("product", "B", "prod_b", "field_mismatch", "name", "mine", "theirs", "bidirectional", "pull"),
            ("product", "C", "prod_c", "field_mismatch", "name", "tie", "TIE", "bidirectional", "review"),
            ("product", "D", "prod_d", "field_mismatch", "metadata.promo_x", "1", "2", "stripe", "pull"),
            ("product", "D", "prod_d", "field_mismatch", "metadata.promo_code", "a", "b", "internal", "push"),
            ("product", "D", "prod_d", "field_mismatch", "metadata.second", "1", "2", "stripe", "pull"),
            ("price", "Q1", "price_q1", "field_mismatch", "nickname", "n1", "n2", "bidirectional", "push"),
            ("price", "Q2", "price_q2", "field_mismatch", "nickname", "n1", "n2", "bidirectional", "review"),
        ],
        key=repr,
    )


@STORED
def test_id_mapping_ignore_owner_and_metadata_path(spark, make_cfg, stored):
    cfg = make_cfg(
        "mapping.product_key=id",
        "mapping.price_key=id",
        "attributes.product.tax_code.owner=ignore",
        'attributes.product.color={"internal": "metadata.color", "stripe": "metadata.colour", "normalise": ["trim", "lower"]}',
    )
    write_silver(
        spark, cfg,
        [iprod("prod_1", tax_code="a", metadata={"color": " Red", "size": "S"}), iprod("prod_2", metadata={"color": "red"})],
        [sprod("prod_1", None, tax_code="b", metadata={"colour": "RED", "size": "S"}),
         sprod("prod_2", None, metadata={"colour": "blue"})],
        [iprice("price_1", "prod_1")],
        [sprice("price_1", None, "prod_2")],
        fingerprints=stored,
    )
    run = Run.new(spark, cfg)
    detect(run)
    assert _rows(spark, cfg, run.run_id) == sorted(
        [
            ("product", "prod_2", "prod_2", "field_mismatch", "color", "red", "blue", "internal", "push"),
            # color/colour are mapped to their own attribute, so they leave the metadata map compare;
            # prod_1's " Red" vs "RED" is equal after trim+lower; tax_code (a vs b) is ignored
            ("price", "price_1", "price_1", "price_product_mismatch", "product", "prod_1", "prod_2", "internal", "replace"),
        ],
        key=repr,
    )


def test_missing_in_internal_archive_action_and_missing_table(spark, make_cfg):
    cfg = make_cfg("detect.missing_in_internal_action=archive")
    run = Run.new(spark, cfg)
    from stripe_recon.errors import InputError

    with pytest.raises(InputError, match="silver.internal_products.*recon land internal"):
        detect(run)
    write_silver(spark, cfg, [], [sprod("prod_1", "K")], [], [])
    detect(run)
    assert _rows(spark, cfg, run.run_id) == [("product", "K", "prod_1", "missing_in_internal", None, None, None, None, "archive")]


@STORED
def test_an_attribute_whose_column_the_input_lacked_is_not_compared(spark, make_cfg, stored):
    """design.md "Catalog fields": an internal input without description / nickname (land records the
    absent columns with the silver commit) leaves those attributes uncompared, and says so; the same
    silver landed from an input that had the columns compares them."""
    cfg = make_cfg()
    catalog = ([iprod("P1", description=None), iprod("P2", name="Old")],
               [sprod("prod_1", "P1", description="In Stripe"), sprod("prod_2", "P2", name="New")],
               [iprice("R1", "P1", nickname=None)], [sprice("price_1", "R1", "prod_1", nickname="Stripe's")])
    mismatches = [("price", "R1", "price_1", "field_mismatch", "nickname", None, "Stripe's", "internal", "push"),
                  ("product", "P1", "prod_1", "field_mismatch", "description", None, "In Stripe", "internal", "push"),
                  ("product", "P2", "prod_2", "field_mismatch", "name", "Old", "New", "internal", "push")]
    write_silver(spark, cfg, *catalog, fingerprints=stored)
    detect(Run.new(spark, cfg, "with-columns"))
    assert _rows(spark, cfg, "with-columns") == sorted(mismatches, key=repr)

    write_silver(spark, cfg, *catalog, fingerprints=stored,
                 absent={"product": ["description", "tax_code"], "price": ["nickname", "updated_at"]})
    counts = detect(Run.new(spark, cfg, "without"))
    assert _rows(spark, cfg, "without") == [mismatches[2]]
    assert "not compared (the internal input has no such column): product.description, product.tax_code, " \
           "price.nickname" in _detect_message(spark, cfg, "without")
    assert (counts["product.attributes_not_compared"], counts["price.attributes_not_compared"]) == (2, 1)


@STORED
def test_numeric_tolerance_is_compared_outside_the_fingerprint(spark, make_cfg, stored):
    cfg = make_cfg("attributes.price.amount.compare=numeric", "attributes.price.amount.tolerance=100")
    write_silver(
        spark, cfg, [iprod("P1")], [sprod("prod_1", "P1")],
        [iprice("Q1", "P1", unit_amount=1000), iprice("Q2", "P1", unit_amount=1000)],
        [sprice("price_1", "Q1", "prod_1", unit_amount=1100), sprice("price_2", "Q2", "prod_1", unit_amount=1101)],
        fingerprints=stored,
    )
    run = Run.new(spark, cfg)
    detect(run)
    assert _rows(spark, cfg, run.run_id) == [
        ("price", "Q2", "price_2", "field_mismatch", "amount", "1000", "1101", "internal", "replace"),
    ]


def test_stored_fingerprints_are_trusted_only_under_the_same_config(spark, make_cfg):
    cfg = make_cfg()
    write_silver(spark, cfg, [iprod("P1")], [sprod("prod_1", "P1")], [], [], fingerprints=True)
    read = {n: tables.read(spark, cfg, n) for n in (tables.SILVER_INTERNAL_PRODUCTS, tables.SILVER_STRIPE_PRODUCTS)}
    assert all(fingerprint_ready(spark, cfg, n, df) for n, df in read.items())
    # another normaliser, another key mapping: the stored values mean something else
    other = make_cfg("attributes.product.name.normalise=[]")
    assert not fingerprint_ready(spark, other, tables.SILVER_INTERNAL_PRODUCTS, read[tables.SILVER_INTERNAL_PRODUCTS])
    ids = make_cfg("mapping.product_key=id")
    assert fingerprint_ready(spark, ids, tables.SILVER_INTERNAL_PRODUCTS, read[tables.SILVER_INTERNAL_PRODUCTS])
    assert not fingerprint_ready(spark, ids, tables.SILVER_STRIPE_PRODUCTS, read[tables.SILVER_STRIPE_PRODUCTS])
    # a later write by anything else (here: a plain Delta append of a changed row) is not vouched for
    changed = read[tables.SILVER_INTERNAL_PRODUCTS].withColumn("name", F.lit("changed"))
    changed.write.format("delta").mode("append").save(tables.table_path(cfg, tables.SILVER_INTERNAL_PRODUCTS))
    df = tables.read(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS)
    assert not fingerprint_ready(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS, df)


def _quarantined_catalog(spark, cfg, stored, landing):
    """Silver as land leaves it after rejecting some records, and the rejects in gold.quarantine."""
    write_silver(
        spark, cfg,
        [iprod("P1"), iprod("P_S"), iprod("PM")],
        [sprod("prod_1", "P1"), sprod("prod_dup", "P_DUP"), sprod("prod_x", "PX")],
        [iprice("PR1", "P1"), iprice("PRD1", "P_DUP", unit_amount=500), iprice("PRS", "P1", unit_amount=700),
         iprice("PRM", "PM")],
        [sprice("price_1", "PR1", "prod_1"), sprice("price_d1", "PRD1", "prod_dup"),
         sprice("price_q", "PRQ", "prod_1"), sprice("price_m", "PRM", "prod_m")],
        fingerprints=stored, landing=landing)
    i, s = landing["internal"], landing["stripe"]
    write_quarantine(spark, cfg, [
        # internal: a duplicated product key (both records) and a price with an unknown currency
        (i, "land", "internal", "product", "P_DUP", ["duplicate_key"], '{"product_id": "P_DUP"}'),
        (i, "land", "internal", "product", "P_DUP", ["duplicate_key"], '{"product_id": "P_DUP", "name": "2"}'),
        (i, "land", "internal", "price", "PRQ", ["unknown_currency"], '{"price_id": "PRQ"}'),
        # Stripe: a product and a price whose records map to P_S / PRS, and a product whose key
        # cannot be read (its metadata is not an object): only its id prod_m is known
        (s, "land", "stripe", "product", "prod_s", ["wrong_type:active"],
         '{"id": "prod_s", "object": "product", "active": "yes", "metadata": {"internal_id": "P_S"}}'),
        (s, "validate", "stripe", "price", "price_s", ["name_too_long"],
         '{"id": "price_s", "object": "price", "lookup_key": "PRS", "product": "prod_1"}'),
        (s, "land", "stripe", "product", "prod_m", ["wrong_type:metadata"],
         '{"id": "prod_m", "object": "product", "metadata": [1]}'),
        # another run's rejects (not the landings read) and an unrecognised line change nothing
        ("OTHER", "land", "internal", "product", "PM", ["duplicate_key"], "{}"),
        (s, "land", "stripe", "unknown", None, ["malformed_json"], "{oops"),
    ])


@STORED
def test_quarantined_keys_are_unknown_not_absent(spark, make_cfg, stored):
    """Without the quarantine: P_DUP and PRQ are missing_in_internal (archive), P_S and PRS
    missing_in_stripe (create), PRD1 a field mismatch and PRM a price_product_mismatch."""
    cfg = make_cfg("detect.missing_in_internal_action=archive")
    _quarantined_catalog(spark, cfg, stored, {"internal": "L_INT", "stripe": "L_STR"})
    run = Run.new(spark, cfg)
    counts = detect(run)
    assert _rows(spark, cfg, run.run_id) == sorted([
        ("product", "PM", None, "missing_in_stripe", None, None, None, "internal", "create"),
        ("product", "PX", "prod_x", "missing_in_internal", None, None, None, None, "archive"),
    ], key=repr)
    # P_DUP, prod_s (P_S), prod_m; PRQ, price_s (PRS)
    assert (counts["product.unknown_keys"], counts["price.unknown_keys"]) == (3, 2)


def test_quarantine_of_other_runs_is_ignored(spark, make_cfg):
    """Silver not written by a landing (no run named in its commits): the rejects count for nothing."""
    cfg = make_cfg("detect.missing_in_internal_action=archive")
    _quarantined_catalog(spark, cfg, False, {"internal": "L_INT", "stripe": "L_STR"})
    write_silver(spark, cfg, [iprod("P1")], [sprod("prod_1", "P1"), sprod("prod_dup", "P_DUP")])
    run = Run.new(spark, cfg)
    counts = detect(run)
    assert _rows(spark, cfg, run.run_id) == [
        ("product", "P_DUP", "prod_dup", "missing_in_internal", None, None, None, None, "archive")]
    assert "product.unknown_keys" not in counts
