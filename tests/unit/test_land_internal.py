"""Landing the internal side: parquet, csv, delta; bad rows quarantined with reasons; idempotence."""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import Row

from stripe_recon import silver as silver_mod
from stripe_recon import tables
from stripe_recon.errors import InputError
from stripe_recon.land.internal import land_internal
from stripe_recon.ledger import Run

PRODUCT_HEADER = ["product_id", "name", "description", "active", "deleted_at", "tax_code", "metadata", "updated_at"]
PRICE_HEADER = ["price_id", "product_id", "currency", "amount", "interval", "interval_count", "active", "nickname",
                "updated_at"]
TS = dt.datetime(2026, 1, 2, 3, 4, 5)


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if v is None else v for v in r])
    return str(path)


def land(spark, make_cfg, *overrides: str, run_id: str | None = None) -> tuple[Run, dict]:
    run = Run.new(spark, make_cfg(*overrides), run_id)
    return run, land_internal(run)


def silver(run: Run, name: str, drop_lineage: bool = True) -> list[Row]:
    df = tables.read(run.spark, run.cfg, name)
    # the derived columns (silver.py; tested in test_detect and below) follow the silver columns
    assert df.columns[-3:] == ["_fp", "_rh", "_hash"]
    assert {df.schema[c].dataType.simpleString() for c in df.columns[-3:]} == {"bigint"}
    df = df.drop("_fp", "_rh", "_hash")
    if drop_lineage:
        df = df.drop("_run_id", "_source", "_source_file", "_ingested_at")
    key = "product_id" if "internal_products" in name else "price_id"
    return sorted(df.collect(), key=lambda r: r[key])


def quarantined(run: Run) -> list[tuple[str, str | None, list[str]]]:
    rows = tables.read(run.spark, run.cfg, tables.GOLD_QUARANTINE).where(f"run_id = '{run.run_id}'").collect()
    return sorted(((r.entity, r.key, sorted(r.reasons)) for r in rows), key=lambda t: (t[0], t[1] or "", t[2]))


def good_csv(tmp_path: Path) -> tuple[str, str]:
    products = write_csv(tmp_path / "in" / "products.csv", PRODUCT_HEADER, [
        ["p1", "Basic", "A plan, with comma", "true", None, "txcd_1", '{"color": "red", "internal_id": "p1"}',
         "2026-01-02 03:04:05"],
        ["p2", "Café", None, "false", "2026-01-01T00:00:00Z", None, None, None],
    ])
    prices = write_csv(tmp_path / "in" / "prices.csv", PRICE_HEADER, [
        ["pr_usd", "p1", "usd", "19.99", "month", "1", "true", "Monthly", "2026-01-02 03:04:05"],
        ["pr_jpy", "p1", "JPY", "500", None, None, None, None, None],
        ["pr_kwd", "p2", "kwd", "1.230", "year", "2", "false", "Yearly", None],
        ["pr_cheap", "p2", "usd", "0.29", None, None, "true", None, None],
    ])
    return products, prices


def csv_overrides(products: str, prices: str, *more: str) -> list[str]:
    return ["sources.internal.format=csv", f"sources.internal.products={products}",
            f"sources.internal.prices={prices}", *more]


EXPECTED_PRODUCTS = [
    Row(product_id="p1", name="Basic", description="A plan, with comma", active=True, deleted_at=None,
        tax_code="txcd_1", metadata={"color": "red", "internal_id": "p1"}, updated_at=TS),
    Row(product_id="p2", name="Café", description=None, active=False, deleted_at=dt.datetime(2026, 1, 1),
        tax_code=None, metadata=None, updated_at=None),
]
EXPECTED_PRICES = [
    Row(price_id="pr_cheap", product_id="p2", currency="usd", amount=Decimal("0.290000"), unit_amount=29,
        interval=None, interval_count=None, active=True, nickname=None, updated_at=None),
    Row(price_id="pr_jpy", product_id="p1", currency="jpy", amount=Decimal("500.000000"), unit_amount=500,
        interval=None, interval_count=None, active=None, nickname=None, updated_at=None),
    Row(price_id="pr_kwd", product_id="p2", currency="kwd", amount=Decimal("1.230000"), unit_amount=1230,
        interval="year", interval_count=2, active=False, nickname="Yearly", updated_at=None),
    Row(price_id="pr_usd", product_id="p1", currency="usd", amount=Decimal("19.990000"), unit_amount=1999,
        interval="month", interval_count=1, active=True, nickname="Monthly", updated_at=TS),
]


def test_csv_lands_typed_silver_and_ledger(spark, make_cfg, tmp_path):
    products, prices = good_csv(tmp_path)
    run, out = land(spark, make_cfg, *csv_overrides(products, prices))
    assert silver(run, tables.SILVER_INTERNAL_PRODUCTS) == EXPECTED_PRODUCTS
    assert silver(run, tables.SILVER_INTERNAL_PRICES) == EXPECTED_PRICES
    assert out["products"] == {"rows_in": 2, "landed": 2, "quarantined": 0, "silver_rows": 2, "suite_quarantined": 0}
    assert out["prices"] == {"rows_in": 4, "landed": 4, "quarantined": 0, "silver_rows": 4, "suite_quarantined": 0}
    assert out["paths"] == {"products": products, "prices": prices}
    lineage = tables.read(spark, run.cfg, tables.SILVER_INTERNAL_PRICES).select(
        "_run_id", "_source", "_source_file").distinct().collect()
    assert len(lineage) == 1
    assert lineage[0]._run_id == run.run_id and lineage[0]._source == "internal:csv"
    assert lineage[0]._source_file.endswith("prices.csv")
    bronze = tables.read(spark, run.cfg, tables.BRONZE_INTERNAL_PRICES).where("price_id = 'pr_jpy'").first()
    assert '"currency":"JPY"' in bronze._raw and '"amount":"500"' in bronze._raw  # bronze keeps what arrived
    assert (bronze.currency, bronze.unit_amount, bronze._reasons) == ("jpy", 500, [])  # ... and how it was read
    ledger = tables.read(spark, run.cfg, tables.GOLD_RUNS).where("stage = 'land_internal'").collect()
    assert [(r.status, r.counts["rows_in"], r.counts["landed"], r.counts["quarantined"],
             r.counts["prices.rows_in"]) for r in ledger] == [("ok", 6, 6, 0, 4)]


def test_parquet_with_map_metadata_and_missing_optional_columns(spark, make_cfg, tmp_path):
    prod = spark.createDataFrame(
        [("p1", "Basic", True, {"a": "1"}, TS, "extra")],
        "product_id string, name string, active boolean, metadata map<string,string>, updated_at timestamp, "
        "unknown_col string",
    )
    price = spark.createDataFrame(
        [("pr1", "p1", "eur", Decimal("9.50"), 3), ("pr2", "p1", "bif", Decimal("1200.00"), None)],
        "price_id string, product_id string, currency string, amount decimal(10,2), interval_count bigint",
    )
    prod.write.parquet(str(tmp_path / "in" / "products"))
    price.write.parquet(str(tmp_path / "in" / "prices"))
    run, out = land(spark, make_cfg, "sources.internal.format=parquet",
                    f"sources.internal.products={tmp_path / 'in' / 'products'}",
                    f"sources.internal.prices={tmp_path / 'in' / 'prices'}")
    assert silver(run, tables.SILVER_INTERNAL_PRODUCTS) == [
        Row(product_id="p1", name="Basic", description=None, active=True, deleted_at=None, tax_code=None,
            metadata={"a": "1"}, updated_at=TS)]
    assert silver(run, tables.SILVER_INTERNAL_PRICES) == [
        Row(price_id="pr1", product_id="p1", currency="eur", amount=Decimal("9.500000"), unit_amount=950,
            interval=None, interval_count=3, active=None, nickname=None, updated_at=None),
        Row(price_id="pr2", product_id="p1", currency="bif", amount=Decimal("1200.000000"), unit_amount=1200,
            interval=None, interval_count=None, active=None, nickname=None, updated_at=None)]
    raw = tables.read(spark, run.cfg, tables.BRONZE_INTERNAL_PRODUCTS).first()._raw
    assert '"unknown_col":"extra"' in raw  # unknown input columns are kept in bronze
    # The missing columns are recorded with the silver commit (detect leaves their attributes out) and said.
    assert silver_mod.absent_columns(tables.commit_metadata(spark, run.cfg, tables.SILVER_INTERNAL_PRODUCTS)) == [
        "deleted_at", "description", "tax_code"]
    assert silver_mod.absent_columns(tables.commit_metadata(spark, run.cfg, tables.SILVER_INTERNAL_PRICES)) == [
        "active", "interval", "nickname", "updated_at"]
    message = tables.read(spark, run.cfg, tables.GOLD_RUNS).where("stage = 'land_internal'").first().message
    assert message == ("format=parquet; not in the input (landed as null): products.description, products.deleted_at, "
                       "products.tax_code, prices.interval, prices.active, prices.nickname, prices.updated_at")


def test_delta_input(spark, make_cfg, tmp_path):
    products, prices = good_csv(tmp_path)
    for name, path in (("products", products), ("prices", prices)):
        spark.read.options(header=True, escape='"').csv(path).write.format("delta").save(str(tmp_path / "dl" / name))
    run, out = land(spark, make_cfg, "sources.internal.format=delta",
                    f"sources.internal.products={tmp_path / 'dl' / 'products'}",
                    f"sources.internal.prices={tmp_path / 'dl' / 'prices'}")
    assert silver(run, tables.SILVER_INTERNAL_PRODUCTS) == EXPECTED_PRODUCTS
    assert silver(run, tables.SILVER_INTERNAL_PRICES) == EXPECTED_PRICES


def test_every_bad_row_is_quarantined_with_its_reasons(spark, make_cfg, tmp_path):
    products = write_csv(tmp_path / "in" / "products.csv", PRODUCT_HEADER, [
        ["p_ok", "Fine", None, "true", None, None, None, None],
        [None, "No key", None, None, None, None, None, None],
        ["p_dup", "First", None, None, None, None, None, None],
        ["p_dup", "Second", None, None, None, None, None, None],
        ["p_types", "Types", None, "maybe", "yesterday", None, "[1, 2]", "2026-13-45"],
    ])
    prices = write_csv(tmp_path / "in" / "prices.csv", PRICE_HEADER, [
        ["ok", "p_ok", "usd", "1.00", None, None, None, None, None],
        ["usd_space", "p_ok", "usd ", "1.00", None, None, None, None, None],
        ["xyz", "p_ok", "xyz", "1.00", None, None, None, None, None],
        ["no_cur", "p_ok", None, "1.00", None, None, None, None, None],
        ["usd_3dp", "p_ok", "usd", "1.234", None, None, None, None, None],
        ["jpy_frac", "p_ok", "jpy", "1.5", None, None, None, None, None],
        ["kwd_4dp", "p_ok", "kwd", "1.2345", None, None, None, None, None],
        ["kwd_last", "p_ok", "kwd", "1.234", None, None, None, None, None],
        ["abc", "p_ok", "usd", "abc", None, None, None, None, None],
        ["no_amt", "p_ok", "usd", None, None, None, None, None, None],
        ["neg", "p_ok", "usd", "-1.00", None, None, None, None, None],
        ["huge", "p_ok", "usd", "999999999999999999", None, None, None, None, None],
        ["types", "p_ok", "usd", "2.00", "fortnight", "two", "maybe", None, "not a time"],
        [None, "p_ok", "usd", "1.00", None, None, None, None, None],
        ["dup", "p_ok", "usd", "1.00", None, None, None, None, None],
        ["dup", "p_ok", "usd", "2.00", None, None, None, None, None],
    ])
    run, out = land(spark, make_cfg, *csv_overrides(products, prices))
    assert quarantined(run) == [
        ("price", None, ["null_key"]),
        ("price", "abc", ["wrong_type:amount"]),
        ("price", "dup", ["duplicate_key"]),
        ("price", "dup", ["duplicate_key"]),
        ("price", "huge", ["amount_out_of_range"]),
        ("price", "jpy_frac", ["amount_not_representable"]),
        ("price", "kwd_4dp", ["amount_not_representable"]),
        ("price", "kwd_last", ["amount_not_representable"]),
        ("price", "neg", ["negative_amount"]),
        ("price", "no_amt", ["missing_amount"]),
        ("price", "no_cur", ["unknown_currency"]),
        ("price", "types", ["invalid_interval", "wrong_type:active", "wrong_type:interval_count",
                            "wrong_type:updated_at"]),
        ("price", "usd_3dp", ["amount_not_representable"]),
        ("price", "usd_space", ["unknown_currency"]),
        ("price", "xyz", ["unknown_currency"]),
        ("product", None, ["null_key"]),
        ("product", "p_dup", ["duplicate_key"]),
        ("product", "p_dup", ["duplicate_key"]),
        ("product", "p_types", ["wrong_type:active", "wrong_type:deleted_at", "wrong_type:metadata",
                                "wrong_type:updated_at"]),
    ]
    assert [r.product_id for r in silver(run, tables.SILVER_INTERNAL_PRODUCTS)] == ["p_ok"]
    assert [r.price_id for r in silver(run, tables.SILVER_INTERNAL_PRICES)] == ["ok"]
    assert out["products"] == {"rows_in": 5, "landed": 1, "quarantined": 4, "silver_rows": 1, "suite_quarantined": 0}
    assert out["prices"] == {"rows_in": 16, "landed": 1, "quarantined": 15, "silver_rows": 1, "suite_quarantined": 0}
    # the quarantined record is the row as it arrived, with its source file
    rec = tables.read(spark, run.cfg, tables.GOLD_QUARANTINE).where("key = 'usd_space'").first()
    assert '"currency":"usd "' in rec.record and rec.source_file.endswith("prices.csv") and rec.stage == "land"


def test_thousand_row_csv_with_five_bad_rows(spark, make_cfg, tmp_path):
    bad = {100: ("usd", "1.234"), 200: ("xyz", "1.00"), 300: ("jpy", "1.5"), 400: ("usd", "abc"),
           500: ("kwd", "1.2345")}
    rows = []
    for i in range(1000):
        cur, amt = bad.get(i, ("usd", f"{i}.{i % 100:02d}"))
        rows.append([f"pr{i:04d}", "p1", cur, amt, "month", "1", "true", None, None])
    prices = write_csv(tmp_path / "in" / "prices.csv", PRICE_HEADER, rows)
    products = write_csv(tmp_path / "in" / "products.csv", PRODUCT_HEADER, [["p1", "One", *[None] * 6]])
    run, out = land(spark, make_cfg, *csv_overrides(products, prices))
    assert out["prices"] == {"rows_in": 1000, "landed": 995, "quarantined": 5, "silver_rows": 995, "suite_quarantined": 0}
    assert quarantined(run) == [
        ("price", "pr0100", ["amount_not_representable"]),
        ("price", "pr0200", ["unknown_currency"]),
        ("price", "pr0300", ["amount_not_representable"]),
        ("price", "pr0400", ["wrong_type:amount"]),
        ("price", "pr0500", ["amount_not_representable"]),
    ]
    df = tables.read(spark, run.cfg, tables.SILVER_INTERNAL_PRICES)
    assert df.count() == 995
    assert df.where("price_id = 'pr0123'").first().unit_amount == 12323


def test_relanding_is_idempotent(spark, make_cfg, tmp_path):
    products, prices = good_csv(tmp_path)
    ov = csv_overrides(products, prices)
    run1, out1 = land(spark, make_cfg, *ov)
    first = (silver(run1, tables.SILVER_INTERNAL_PRODUCTS), silver(run1, tables.SILVER_INTERNAL_PRICES))
    versions = {n: tables.version(spark, run1.cfg, n) for n in (tables.SILVER_INTERNAL_PRODUCTS, tables.SILVER_INTERNAL_PRICES)}
    land(spark, make_cfg, *ov, run_id=run1.run_id)  # the same run twice: no duplicate bronze rows
    assert tables.read(spark, run1.cfg, tables.BRONZE_INTERNAL_PRICES).count() == 4
    # a new run of the same input: nothing is written again (not silver, not bronze), same counts
    run2, out2 = land(spark, make_cfg, *ov)
    assert out2["unchanged_since"] == run1.run_id
    assert {k: out2[k] for k in ("products", "prices")} == {k: out1[k] for k in ("products", "prices")}
    assert {n: tables.version(spark, run2.cfg, n) for n in versions} == versions  # no commit
    assert (silver(run2, tables.SILVER_INTERNAL_PRODUCTS), silver(run2, tables.SILVER_INTERNAL_PRICES)) == first
    assert tables.read(spark, run2.cfg, tables.BRONZE_INTERNAL_PRICES).count() == 4  # no copy per run
    manifests = tables.read(spark, run2.cfg, tables.BRONZE_MANIFESTS).where(f"run_id = '{run2.run_id}'").collect()
    assert sorted((m.entity, m.records, m.bronze_rows, m.unchanged_since) for m in manifests) == [
        ("prices", 4, 0, run1.run_id), ("products", 2, 0, run1.run_id)]


@pytest.mark.parametrize("memory_max_rows", [200_000, 0], ids=["in_memory", "scratch_table"])
def test_relanding_a_changed_input_writes_only_the_changes(spark, make_cfg, tmp_path, monkeypatch, memory_max_rows):
    products, prices = good_csv(tmp_path)
    run1, _ = land(spark, make_cfg, *csv_overrides(products, prices))
    merged_from_memory = []
    real_merge = tables.merge_snapshot
    monkeypatch.setattr(tables, "merge_snapshot", lambda spark_, cfg_, name, source, *a, **kw: (
        merged_from_memory.append(source.is_cached), real_merge(spark_, cfg_, name, source, *a, **kw))[1])
    # one price changed, one gone, one new; products unchanged
    prices2 = write_csv(tmp_path / "in2" / "prices.csv", PRICE_HEADER, [
        ["pr_usd", "p1", "usd", "24.99", "month", "1", "true", "Monthly", "2026-01-02 03:04:05"],
        ["pr_jpy", "p1", "JPY", "500", None, None, None, None, None],
        ["pr_kwd", "p2", "kwd", "1.230", "year", "2", "false", "Yearly", None],
        ["pr_new", "p2", "eur", "5.00", None, None, None, None, None],
    ])
    run2, out2 = land(spark, make_cfg, *csv_overrides(products, prices2), f"land.memory_max_rows={memory_max_rows}")
    assert "unchanged_since" not in out2
    assert merged_from_memory == [memory_max_rows > 0] * 2  # products and prices, the same way
    got = {r.price_id: (r.unit_amount, r._run_id) for r in
           tables.read(spark, run2.cfg, tables.SILVER_INTERNAL_PRICES).collect()}
    assert got == {"pr_usd": (2499, run2.run_id), "pr_jpy": (500, run1.run_id), "pr_kwd": (1230, run1.run_id),
                   "pr_new": (500, run2.run_id)}
    # bronze gained the new and the changed record only
    b = tables.read(spark, run2.cfg, tables.BRONZE_INTERNAL_PRICES).where(f"_run_id = '{run2.run_id}'")
    assert sorted(r.price_id for r in b.collect()) == ["pr_new", "pr_usd"]
    # the change feed of that landing holds exactly the changes
    v = tables.version(spark, run2.cfg, tables.SILVER_INTERNAL_PRICES)
    feed = (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", v)
            .load(tables.table_path(run2.cfg, tables.SILVER_INTERNAL_PRICES)))
    assert sorted((r.price_id, r._change_type) for r in feed.collect()) == [
        ("pr_cheap", "delete"), ("pr_new", "insert"), ("pr_usd", "update_postimage"), ("pr_usd", "update_preimage")]


def test_relanding_same_run_does_not_duplicate_quarantine(spark, make_cfg, tmp_path):
    products = write_csv(tmp_path / "in" / "products.csv", PRODUCT_HEADER, [["p1", *[None] * 7]])
    prices = write_csv(tmp_path / "in" / "prices.csv", PRICE_HEADER, [["x", "p1", "zzz", "1", *[None] * 5]])
    run, _ = land(spark, make_cfg, *csv_overrides(products, prices))
    land(spark, make_cfg, *csv_overrides(products, prices), run_id=run.run_id)
    assert quarantined(run) == [("price", "x", ["unknown_currency"])]


def test_missing_path_names_the_path(spark, make_cfg, tmp_path):
    products, _ = good_csv(tmp_path)
    missing = str(tmp_path / "nope" / "prices.csv")
    with pytest.raises(InputError, match=f"internal prices path {missing} does not exist"):
        land(spark, make_cfg, *csv_overrides(products, missing))
    ledger = tables.read(spark, make_cfg(), tables.GOLD_RUNS).collect()
    assert [(r.stage, r.status, missing in r.message) for r in ledger] == [("land_internal", "failed", True)]


def test_missing_required_column_is_a_clear_error(spark, make_cfg, tmp_path):
    products, _ = good_csv(tmp_path)
    prices = write_csv(tmp_path / "in" / "p2.csv", ["price_id", "product_id", "amount"], [["a", "p1", "1"]])
    with pytest.raises(InputError, match=r"has no column\(s\) currency"):
        land(spark, make_cfg, *csv_overrides(products, prices))


def test_empty_input_is_an_error_unless_allowed(spark, make_cfg, tmp_path):
    products = write_csv(tmp_path / "in" / "products.csv", PRODUCT_HEADER, [])
    prices = write_csv(tmp_path / "in" / "prices.csv", PRICE_HEADER, [])
    with pytest.raises(InputError, match="internal products input .* is empty.*--allow-empty"):
        land(spark, make_cfg, *csv_overrides(products, prices))
    run, out = land(spark, make_cfg, *csv_overrides(products, prices, "sources.internal.allow_empty=true"))
    assert out["rows_in"] == 0 and silver(run, tables.SILVER_INTERNAL_PRICES) == []


def test_csv_lines_with_too_many_or_too_few_fields_are_quarantined_not_cut(spark, make_cfg, tmp_path):
    products = write_csv(tmp_path / "in" / "products.csv", PRODUCT_HEADER, [["p1", *[None] * 7]])
    prices = tmp_path / "in" / "prices.csv"
    prices.write_text(
        ",".join(PRICE_HEADER) + "\n"
        "ok,p1,usd,1.00,,,,,\n"
        "long,p1,usd,1.00,,,,,,EXTRA\n"
        "short,p1\n"
    )
    run, out = land(spark, make_cfg, *csv_overrides(products, str(prices)))
    assert quarantined(run) == [
        ("price", "long", ["malformed_row: line 3"]),
        ("price", "short", ["malformed_row: line 4", "missing_amount", "unknown_currency"]),
    ]
    records = tables.read(spark, run.cfg, tables.GOLD_QUARANTINE).where("key = 'long'").first().record
    assert records == "long,p1,usd,1.00,,,,,,EXTRA"  # the line as it arrived
    assert out["prices"] == {"rows_in": 3, "landed": 1, "quarantined": 2, "silver_rows": 1, "suite_quarantined": 0}


def test_values_stripe_would_refuse_are_quarantined_at_landing_with_the_limit(spark, make_cfg, tmp_path):
    """Every limit of a modelled field (stripe_limits.py): a value just at it lands, one over it is
    quarantined with the limit in its reason. The numbers are Stripe's, written out here."""
    def meta(n: int) -> str:
        return json.dumps({f"k{i}": "v" for i in range(n)})

    def row(pid: str, name: str = "N", description: str | None = None, metadata: str | None = None) -> list:
        return [pid, name, description, None, None, None, metadata, None]

    def price(pid: str, nickname: str | None = None) -> list:
        return [pid, "name250", "usd", "1.00", None, None, None, nickname, None]

    products = write_csv(tmp_path / "in" / "products.csv", PRODUCT_HEADER, [
        row("name250", name="n" * 250), row("name251", name="n" * 251),
        row("desc40000", description="d" * 40000), row("desc40001", description="d" * 40001),
        row("i" * 500), row("i" * 501),  # sent as metadata.internal_id: a metadata value
        row("meta49", metadata=meta(49)), row("meta50", metadata=meta(50)),  # + internal_id on create
        row("emptykey", metadata='{"": "v"}'),
    ])
    prices = write_csv(tmp_path / "in" / "prices.csv", PRICE_HEADER, [
        price("p" * 200), price("p" * 201),  # sent as lookup_key
        price("nick5000", nickname="n" * 5000), price("nick5001", nickname="n" * 5001),
    ])
    run, out = land(spark, make_cfg, *csv_overrides(products, prices))
    says = "Stripe accepts at most"
    assert quarantined(run) == sorted([
        ("price", "nick5001", [f"nickname_too_long: {says} 5000 characters in a price nickname"]),
        ("price", "p" * 201, [f"price_id_too_long: {says} 200 characters in a price lookup_key"]),
        ("product", "desc40001", [f"description_too_long: {says} 40000 characters in a product description"]),
        ("product", "emptykey", ["metadata_bad_key: Stripe accepts 1 to 40 characters in a metadata key, "
                                 "without [ or ]"]),
        ("product", "i" * 501, [f"product_id_too_long: {says} 500 characters in a metadata value"]),
        ("product", "meta50", [f"metadata_too_many_keys: {says} 50 keys in metadata"]),
        ("product", "name251", [f"name_too_long: {says} 250 characters in a product name"]),
    ], key=lambda t: (t[0], t[1], t[2]))
    assert [r.product_id for r in silver(run, tables.SILVER_INTERNAL_PRODUCTS)] == [
        "desc40000", "i" * 500, "meta49", "name250"]
    assert [r.price_id for r in silver(run, tables.SILVER_INTERNAL_PRICES)] == ["nick5000", "p" * 200]
    assert out["products"]["rows_in"] == 9 and out["products"]["suite_quarantined"] == 5
    assert out["prices"]["rows_in"] == 4 and out["prices"]["suite_quarantined"] == 2
