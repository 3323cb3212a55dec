"""Input gates (validate_inputs): row rules quarantine, table-level expectations decide the gate.

Every test writes small silver tables by hand, runs the gate, and compares the quarantined keys and
reasons, the remaining silver rows, the gate decision and the ledger counts with values written
here, independently of the suites; ``rows_in == valid + quarantined`` is checked every time.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stripe_recon import tables
from stripe_recon.errors import HeldError
from stripe_recon.ledger import Run
from stripe_recon.stripe_limits import LIMITS
from stripe_recon.unknown import QUARANTINE_RUNS, quarantined_keys
from stripe_recon.validate import INPUT_SUITES, validate_inputs

TS = dt.datetime(2026, 1, 1, 12, 0, 0)
SUITES = {
    "internal_products": tables.SILVER_INTERNAL_PRODUCTS,
    "internal_prices": tables.SILVER_INTERNAL_PRICES,
    "stripe_products": tables.SILVER_STRIPE_PRODUCTS,
    "stripe_prices": tables.SILVER_STRIPE_PRICES,
}


@pytest.fixture
def cfg(make_cfg):
    """Data Docs off (HTML rendering is the slowest part on a busy machine); docs tests turn them on."""
    return make_cfg("validation.data_docs=false")


def product(pid, **kw):
    row = dict(product_id=pid, name=f"Product {pid}", description=None, active=True, deleted_at=None,
               tax_code="txcd_10000000", metadata={"color": "red"}, updated_at=TS)
    return {**row, **kw}


def price(pid, currency="usd", amount="19.99", unit_amount=1999, **kw):
    row = dict(price_id=pid, product_id="P1", currency=currency,
               amount=None if amount is None else Decimal(amount), unit_amount=unit_amount,
               interval="month", interval_count=1, active=True, nickname=None, updated_at=TS)
    return {**row, **kw}


def sproduct(sid, **kw):
    row = dict(id=sid, name="Product", description=None, active=True, tax_code=None,
               metadata={"internal_id": "P1"}, default_price=None, livemode=False, created=TS, updated=TS,
               is_deleted=False, raw="{}")
    return {**row, **kw}


def sprice(sid, **kw):
    row = dict(id=sid, product="prod_1", lookup_key="PR1", currency="usd", unit_amount=1999, type="recurring",
               interval="month", interval_count=1, active=True, nickname=None, metadata={}, livemode=False,
               created=TS, is_deleted=False, raw="{}")
    return {**row, **kw}


def frame(spark, schema, rows):
    lineage = {"_run_id": "land-1", "_source": "test", "_source_file": "file:///in.parquet", "_ingested_at": TS}
    rows = [{**lineage, **r} for r in rows]
    # nullable copy: the gate must catch null keys even if an upstream writer let them through
    schema = T.StructType([T.StructField(f.name, f.dataType, True) for f in schema.fields])
    return spark.createDataFrame([tuple(r.get(f.name) for f in schema.fields) for r in rows], schema)


def seed(spark, cfg, products=None, prices=None, sproducts=None, sprices=None):
    data = {
        tables.SILVER_INTERNAL_PRODUCTS: (tables.SILVER_INTERNAL_PRODUCTS_SCHEMA, products or [product("P1")]),
        tables.SILVER_INTERNAL_PRICES: (tables.SILVER_INTERNAL_PRICES_SCHEMA, prices or [price("PR1")]),
        tables.SILVER_STRIPE_PRODUCTS: (tables.SILVER_STRIPE_PRODUCTS_SCHEMA, sproducts or [sproduct("prod_1")]),
        tables.SILVER_STRIPE_PRICES: (tables.SILVER_STRIPE_PRICES_SCHEMA, sprices or [sprice("price_1")]),
    }
    for name, (schema, rows) in data.items():
        tables.overwrite(spark, cfg, name, frame(spark, schema, rows))


def keys(spark, cfg, name, key):
    return sorted(r[0] for r in tables.read(spark, cfg, name).select(key).collect())


def quarantined(spark, cfg, run_id):
    """{key: sorted reasons} of this run's validate-stage quarantine rows (key None kept)."""
    if not tables.exists(spark, cfg, tables.GOLD_QUARANTINE):
        return {}
    rows = (tables.read(spark, cfg, tables.GOLD_QUARANTINE)
            .filter((F.col("run_id") == run_id) & (F.col("stage") == "validate"))
            .select("source", "entity", "key", "reasons").collect())
    return {(r["source"], r["entity"], r["key"]): sorted(r["reasons"]) for r in rows}


def ledger(spark, cfg, run_id, stage="validate_inputs"):
    rows = tables.read(spark, cfg, tables.GOLD_RUNS).filter(
        (F.col("run_id") == run_id) & (F.col("stage") == stage)).collect()
    assert len(rows) == 1
    return rows[0]


def assert_balanced(summary):
    assert summary["rows_in"] == summary["valid"] + summary["quarantined"]
    for t in summary["tables"].values():
        assert t["rows_in"] == t["valid"] + t["quarantined"]


def test_clean_inputs_pass_and_data_docs_list_every_validation(spark, make_cfg):
    cfg = make_cfg("validation.data_docs=true")
    run = Run.new(spark, cfg)
    seed(spark, cfg)
    out = validate_inputs(run)
    assert out["status"] == "ok"
    assert (out["rows_in"], out["valid"], out["quarantined"]) == (4, 4, 0)
    assert out["expectations_failed"] == {"error": 0, "warn": 0}
    assert_balanced(out)
    assert quarantined(spark, cfg, run.run_id) == {}
    row = ledger(spark, cfg, run.run_id)
    assert row["status"] == "ok"
    assert row["counts"]["internal_prices.valid"] == 1 and row["counts"]["quarantined"] == 0
    # the four tables are read in threads: each one's version is still recorded
    assert row["versions_read"] == {table: tables.version(spark, cfg, table) for _, table in INPUT_SUITES}
    index = Path(out["data_docs"])
    assert index == Path(cfg.storage.root).resolve() / "runs" / run.run_id / "data_docs" / "index.html"
    html = index.read_text()
    # the index lists validation results as rows of a JS table: 'validations/<suite>/<run>/<time>/<batch>.html'
    links = set(re.findall(r"validations/[a-z_]+/[^/'\"]+/[^/'\"]+/[^/'\"]+\.html", html))
    assert {link.split("/")[1] for link in links} == set(SUITES)
    assert all(f"/{run.run_id}/" in link for link in links)
    assert all((index.parent / link).exists() for link in links)


def test_negative_amount_and_padded_currency_are_quarantined_rest_validates(spark, cfg, run):
    seed(spark, cfg, prices=[price("PR1"), price("PR2", amount="-5.00", unit_amount=-500),
                              price("PR3", currency="usd "), price("PR4", currency="jpy", amount="500", unit_amount=500)])
    out = validate_inputs(run)
    assert out["status"] == "ok"
    t = out["tables"]["internal_prices"]
    assert (t["rows_in"], t["valid"], t["quarantined"]) == (4, 2, 2)
    assert t["reasons"] == {"negative_amount": 1, "unknown_currency": 1}
    assert_balanced(out)
    assert quarantined(spark, cfg, run.run_id) == {
        ("internal", "price", "PR2"): ["negative_amount"],
        ("internal", "price", "PR3"): ["unknown_currency"],
    }
    assert keys(spark, cfg, tables.SILVER_INTERNAL_PRICES, "price_id") == ["PR1", "PR4"]
    q = tables.read(spark, cfg, tables.GOLD_QUARANTINE).filter(F.col("key") == "PR3").first()
    assert '"currency":"usd "' in q["record"] and q["source_file"] == "file:///in.parquet"
    row = ledger(spark, cfg, run.run_id)
    assert (row["counts"]["internal_prices.rows_in"], row["counts"]["internal_prices.quarantined"]) == (4, 2)
    # the rewritten table names this run, so detect treats PR2 and PR3 as unknown, not absent
    meta = tables.commit_metadata(spark, cfg, tables.SILVER_INTERNAL_PRICES)
    assert meta[QUARANTINE_RUNS] == [run.run_id]
    got = quarantined_keys(spark, cfg, {tables.SILVER_INTERNAL_PRICES: meta})
    assert sorted((r.entity, r.side, r.key, list(r.reasons)) for r in got.collect()) == [
        ("price", "internal", "PR2", ["negative_amount"]), ("price", "internal", "PR3", ["unknown_currency"])]


PRICE_CASES = [
    # (row, expected reasons); PR_OK rows must stay.
    (price(None), ["null_key"]),
    (price("DUP"), ["duplicate_key"]),
    (price("DUP", amount="29.99", unit_amount=2999), ["duplicate_key"]),
    (price("NOPROD", product_id=None), ["missing_product_id"]),
    (price("NOCUR", currency=None, unit_amount=None), ["missing_currency"]),
    (price("XYZ", currency="xyz"), ["unknown_currency"]),
    (price("UPPER", currency="USD"), ["unknown_currency"]),
    (price("NOAMT", amount=None, unit_amount=None), ["missing_amount"]),
    (price("NEG", amount="-0.01", unit_amount=-1), ["negative_amount"]),
    (price("SUBCENT", amount="19.999", unit_amount=None), ["amount_not_representable"]),
    (price("JPYFRAC", currency="jpy", amount="10.5", unit_amount=None), ["amount_not_representable"]),
    (price("KWD5", currency="kwd", amount="1.235", unit_amount=1235), ["amount_not_representable"]),
    (price("MISMATCH", unit_amount=1990), ["unit_amount_mismatch"]),
    (price("FORTNIGHT", interval="fortnight"), ["invalid_interval"]),
    (price("ZERO", interval_count=0), ["invalid_interval_count"]),
    (price("TOOLONG", interval_count=37), ["interval_count_too_large"]),
    (price("TWO", amount="-1.001", unit_amount=None, interval="hour"),
     ["amount_not_representable", "invalid_interval", "negative_amount"]),
]
PRICE_OK = [
    price("PR_OK"),
    price("PR_KWD", currency="kwd", amount="1.230", unit_amount=1230),
    price("PR_ONE_TIME", interval=None, interval_count=None),
    price("PR_FREE", amount="0", unit_amount=0),
    price("PR_YEARS", interval="year", interval_count=3),
]


def test_each_internal_price_row_rule_quarantines_with_its_reason(spark, cfg, run):
    seed(spark, cfg, prices=[r for r, _ in PRICE_CASES] + PRICE_OK)
    out = validate_inputs(run)
    assert out["status"] == "ok"  # internal suites quarantine and pass on the remaining rows
    t = out["tables"]["internal_prices"]
    assert (t["rows_in"], t["valid"], t["quarantined"]) == (len(PRICE_CASES) + 5, 5, len(PRICE_CASES))
    assert_balanced(out)
    got = quarantined(spark, cfg, run.run_id)
    assert got[("internal", "price", "DUP")] == ["duplicate_key"]
    dups = tables.read(spark, cfg, tables.GOLD_QUARANTINE).filter(F.col("key") == "DUP").select("record").collect()
    assert sorted('"amount":' + a in r["record"] for r in dups for a in ["19.99", "29.99"]).count(True) == 2
    expected = {("internal", "price", r["price_id"]): reasons for r, reasons in PRICE_CASES if r["price_id"] != "DUP"}
    assert {k: v for k, v in got.items() if k[2] != "DUP"} == expected
    assert keys(spark, cfg, tables.SILVER_INTERNAL_PRICES, "price_id") == sorted(r["price_id"] for r in PRICE_OK)


def reason(rule: str, limit: str) -> str:
    """A quarantine reason of a Stripe limit rule, written out (the numbers are Stripe's, not read from code)."""
    return f"{rule}: Stripe accepts {limit}"


def test_internal_product_rules_metadata_limits_and_warnings(spark, cfg, run):
    assert LIMITS["metadata_keys"].max == 50 and LIMITS["metadata_key"].max == 40  # what the rows below assume
    products = [
        product("OK"),
        # a create sends internal_id too (mapping.product_key metadata.internal_id): 49 + 1 keys
        product("OK_49", metadata={f"k{i}": "v" for i in range(49)}),
        product("KEYS50", metadata={f"k{i}": "v" for i in range(50)}),
        product("LONGKEY", metadata={"k" * 41: "v"}),
        product("KEY40", metadata={"k" * 40: "v" * 500}),
        product("BRACKET", metadata={"a[b]": "v"}),
        product("LONGVAL", metadata={"k": "v" * 501}, tax_code="tax-2"),  # rejected: its warn is not counted
        product(None),
        product("DUP", name=None), product("DUP"),                     # rejected: nor is this one's
        product("NONAME", name=None),            # warn: kept, reported
        product("BADTAX", tax_code="tax-1"),      # warn: kept, reported
    ]
    seed(spark, cfg, products=products)
    out = validate_inputs(run)
    assert out["status"] == "ok"
    t = out["tables"]["internal_products"]
    assert (t["rows_in"], t["valid"], t["quarantined"]) == (12, 5, 7)
    assert_balanced(out)
    got = quarantined(spark, cfg, run.run_id)
    bad_key = reason("metadata_bad_key", "1 to 40 characters in a metadata key, without [ or ]")
    assert got == {
        ("internal", "product", "KEYS50"): [reason("metadata_too_many_keys", "at most 50 keys in metadata")],
        ("internal", "product", "LONGKEY"): [bad_key],
        ("internal", "product", "BRACKET"): [bad_key],
        ("internal", "product", "LONGVAL"): [reason("metadata_value_too_long", "at most 500 characters in a metadata value")],
        ("internal", "product", None): ["null_key"],
        ("internal", "product", "DUP"): ["duplicate_key"],  # two rows, same key and reasons
    }
    n_dup = tables.read(spark, cfg, tables.GOLD_QUARANTINE).filter(F.col("key") == "DUP").count()
    assert n_dup == 2
    assert keys(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS, "product_id") == ["BADTAX", "KEY40", "NONAME", "OK", "OK_49"]
    warned = sorted((f["expectation"], f["kwargs"]["column"]) for f in t["failed"])
    assert warned == [("expect_column_values_to_match_regex", "tax_code"), ("expect_column_values_to_not_be_null", "name")]
    # warn rules are counted over the rows that stay valid, as GX would on the valid frame
    assert sorted((f["kwargs"]["column"], f["observed"]) for f in t["failed"]) == [("name", 1), ("tax_code", 1)]
    assert out["expectations_failed"] == {"error": 0, "warn": 2}
    row = ledger(spark, cfg, run.run_id)
    assert row["counts"]["expectations_failed_warn"] == 2 and "tax_code" in row["message"]


def test_wrong_column_type_holds_and_leaves_silver_alone(spark, cfg, run):
    seed(spark, cfg)
    # amount arrives as a double and unit_amount is gone (e.g. a canonical stage out of date)
    fields = [T.StructField(f.name, T.DoubleType() if f.name == "amount" else f.dataType)
              for f in tables.SILVER_INTERNAL_PRICES_SCHEMA.fields if f.name != "unit_amount"]
    row = {**price("PR1", amount=None), "amount": -1.0}
    tables.overwrite(spark, cfg, tables.SILVER_INTERNAL_PRICES, frame(spark, T.StructType(fields), [row]))
    with pytest.raises(HeldError) as exc:
        validate_inputs(run)
    msg = str(exc.value)
    assert "internal_prices" in msg and "amount is DoubleType, expected DecimalType" in msg
    assert "column unit_amount is missing" in msg and "recon validate" in msg
    row = ledger(spark, cfg, run.run_id)
    assert row["status"] == "held"
    assert (row["counts"]["internal_prices.rows_in"], row["counts"]["internal_prices.valid"]) == (1, 1)
    assert row["counts"]["internal_prices.expectations_failed_error"] == 2  # amount type, unit_amount missing
    assert keys(spark, cfg, tables.SILVER_INTERNAL_PRICES, "price_id") == ["PR1"]


def test_row_count_band_against_previous_ok_run(spark, make_cfg):
    cfg = make_cfg("validation.row_count_band=0.5", "validation.data_docs=false")
    seed(spark, cfg, products=[product(f"P{i}") for i in range(10)])
    first = Run.new(spark, cfg, "20260101T000000000Z-aaaaaa")
    assert validate_inputs(first)["status"] == "ok"
    # 4 rows < 10 * (1 - 0.5): held, and the held run does not become the next baseline
    seed(spark, cfg, products=[product(f"P{i}") for i in range(4)])
    second = Run.new(spark, cfg, "20260101T000000000Z-bbbbbb")
    with pytest.raises(HeldError) as exc:
        validate_inputs(second)
    assert "internal_products" in str(exc.value) and "expect_table_row_count_to_be_between" in str(exc.value)
    assert "expected 5..15" in str(exc.value)
    row = ledger(spark, cfg, second.run_id)
    assert row["status"] == "held" and row["counts"]["expectations_failed_error"] == 1
    # 5 rows is inside the band of the last ok run (10), prices/stripe unchanged
    seed(spark, cfg, products=[product(f"P{i}") for i in range(5)])
    third = Run.new(spark, cfg, "20260101T000000000Z-cccccc")
    assert validate_inputs(third)["status"] == "ok"


def test_stripe_row_failures_quarantine_and_hold(spark, cfg, run):
    seed(spark, cfg,
         sproducts=[sproduct("prod_1"), sproduct("prod_1", name="copy"), sproduct("prod_2", metadata={"x" * 41: "v"})],
         sprices=[sprice("price_1"), sprice("price_2", currency="usd "), sprice("price_3", unit_amount=-1),
                  sprice("price_4", interval="fortnight"), sprice("price_5", interval_count=0),
                  sprice("price_6", type="one_time", interval=None, interval_count=None)])
    with pytest.raises(HeldError) as exc:
        validate_inputs(run)
    msg = str(exc.value)
    assert "stripe_products" in msg and "stripe_prices" in msg and "internal_products" not in msg
    assert quarantined(spark, cfg, run.run_id) == {
        ("stripe", "product", "prod_1"): ["duplicate_key"],
        ("stripe", "product", "prod_2"): [reason("metadata_bad_key", "1 to 40 characters in a metadata key, without [ or ]")],
        ("stripe", "price", "price_2"): ["unknown_currency"],
        ("stripe", "price", "price_3"): ["negative_amount"],
        ("stripe", "price", "price_4"): ["invalid_interval"],
        ("stripe", "price", "price_5"): ["invalid_interval_count"],
    }
    row = ledger(spark, cfg, run.run_id)
    assert row["status"] == "held"
    c = row["counts"]
    assert (c["stripe_products.rows_in"], c["stripe_products.valid"], c["stripe_products.quarantined"]) == (3, 0, 3)
    assert (c["stripe_prices.rows_in"], c["stripe_prices.valid"], c["stripe_prices.quarantined"]) == (6, 2, 4)
    # held tables are left as they were: a re-run holds again until the export is fixed
    assert keys(spark, cfg, tables.SILVER_STRIPE_PRICES, "id") == [f"price_{i}" for i in range(1, 7)]


def test_disabled_validation_is_recorded_and_skipped(spark, make_cfg):
    cfg = make_cfg("validation.enabled=false", "validation.data_docs=false")
    r = Run.new(spark, cfg)
    assert validate_inputs(r) == {"status": "skipped", "message": "skipped: validation.enabled is false"}
    assert ledger(spark, cfg, r.run_id)["message"] == "skipped: validation.enabled is false"


def test_missing_silver_table_is_a_clear_error(spark, cfg, run):
    from stripe_recon.errors import InputError

    with pytest.raises(InputError, match="recon land internal"):
        validate_inputs(run)


# -- suite loading errors (no Spark) -------------------------------------------------------------

def _suite_file(tmp_path, expectations, meta=None):
    import json

    (tmp_path / "s.json").write_text(json.dumps({"name": "s", "meta": meta or {}, "expectations": expectations}))
    return tmp_path


@pytest.mark.parametrize(
    "expectations, meta, message",
    [
        ([{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}, "meta": {"rule": "r"}},
          {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "b"}, "meta": {"rule": "r"}}],
         None, "row rule name 'r' is used twice"),
        ([{"type": "unexpected_rows_expectation",
           "kwargs": {"unexpected_rows_query": "SELECT * FROM {batch} WHERE ${nope:a}"}, "meta": {"rule": "r"}}],
         None, "unknown macro ${nope}"),
        ([{"expectation_type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}}],
         None, "needs a 'type'"),
        ([{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}, "meta": {"severity": "fatal"}}],
         None, "meta.severity must be one of"),
        ([], {"row_failures": "drop"}, "meta.row_failures must be one of"),
        ([{"type": "expect_column_value_lengths_to_be_between", "kwargs": {"column": "name", "max_value": 250},
           "meta": {"rule": "r", "stripe_limit": "product_nam"}}],
         None, "meta.stripe_limit 'product_nam' is not a Stripe limit; known: product_name,"),
        ([{"type": "expect_column_value_lengths_to_be_between", "kwargs": {"column": "name", "max_value": 250},
           "meta": {"rule": "r", "stripe_limit": "product_name"}}],
         None, 'must use that limit: {"$PARAMETER": "stripe_limit_product_name"} or ${stripe_limit:product_name}'),
        ([{"type": "expect_column_value_lengths_to_be_between",
           "kwargs": {"column": "name", "max_value": {"$PARAMETER": "stripe_limit_product_name"}},
           "meta": {"stripe_limit": "product_name"}}],
         None, "meta.stripe_limit 'product_name' needs meta.rule"),
        ([{"type": "unexpected_rows_expectation",
           "kwargs": {"unexpected_rows_query": "SELECT * FROM {batch} WHERE length(a) > ${stripe_limit:nope}"},
           "meta": {"rule": "r"}}],
         None, "unknown Stripe limit 'nope'"),
    ],
)
def test_bad_suites_are_config_errors(tmp_path, cfg, expectations, meta, message):
    from stripe_recon import gx_suites
    from stripe_recon.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        gx_suites.load_suite("s", cfg, _suite_file(tmp_path, expectations, meta))
    assert message in str(exc.value)


@pytest.mark.parametrize(
    "expectation, message",
    [
        ({"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}, "cannot be a row rule"),
        ({"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "a", "value_set": {"$PARAMETER": "x"}}},
         "suite parameter 'x' has no value"),
        ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a", "mostly": 0.9}}, "'mostly'"),
        ({"type": "unexpected_rows_expectation", "kwargs": {"unexpected_rows_query": "SELECT id FROM {batch}"}},
         "must start with"),
        ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a; DROP"}}, "plain column name"),
    ],
)
def test_expectations_that_cannot_be_row_rules(tmp_path, cfg, expectation, message):
    from stripe_recon import gx_suites
    from stripe_recon.errors import ConfigError

    suite = gx_suites.load_suite("s", cfg, _suite_file(tmp_path, [{**expectation, "meta": {"rule": "r"}}]))
    with pytest.raises(ConfigError) as exc:
        gx_suites.row_rules(suite, gx_suites.parameters(cfg))
    assert message in str(exc.value)


def test_grouped_rule_counts_equal_row_by_row_counts(spark, cfg):
    """_rule_counts (one aggregation grouped by the key) must count exactly what flagging every row
    does, including a duplicated key whose rows also break other rules and several null keys."""
    from stripe_recon import gx_suites, quarantine
    from stripe_recon.validate import _duplicate_markers, _rule_counts

    rows = [
        price("PR1"),
        price("PR2", amount="-1", unit_amount=-100),             # negative_amount
        price("PR3"), price("PR3", currency="usd "),             # duplicate key, one row also unknown_currency
        price("PR4"), price("PR4"), price("PR4", amount="-2", unit_amount=-200),
        price(None), price(None, currency=None),                 # null keys: not duplicates of each other
        price("PR5", interval="fortnight"),                      # invalid_interval
    ]
    df = frame(spark, tables.SILVER_INTERNAL_PRICES_SCHEMA, rows)
    suite = gx_suites.load_suite("internal_prices", cfg)
    params = {**gx_suites.parameters(cfg), "row_count_min": 0, "row_count_max": None}
    rules = gx_suites.row_rules(suite, params)
    error_rules = list(dict.fromkeys(r.name for r in rules if r.severity == "error"))

    rows_in, rejected, reasons, warned = _rule_counts(df, suite, rules, error_rules)

    marked, flag_rules, markers = _duplicate_markers(df, suite, rules)
    flagged = quarantine.flag(marked, flag_rules).drop(*markers)
    per_row = flagged.select(quarantine.REASONS).collect()  # 10 test rows
    expected_reasons: dict[str, int] = {}
    for r in per_row:
        for name in set(r[0]):
            expected_reasons[name] = expected_reasons.get(name, 0) + 1
    assert rows_in == 10
    assert rejected == sum(1 for r in per_row if r[0]) == 9
    assert reasons == expected_reasons
    assert reasons["duplicate_key"] == 5
    assert reasons["null_key"] == 2
    assert reasons["negative_amount"] == 2
    assert reasons["unknown_currency"] == 1
    assert reasons["missing_currency"] == 1
    assert reasons["invalid_interval"] == 1
    assert warned == {}  # internal prices have no warn row rule


def test_uniqueness_vouched_by_the_landing_commit_until_another_writer_commits(spark, cfg):
    """Land records ``{"unique": [key]}`` with the silver commit (repeated keys were quarantined in the
    job that wrote it), so the gate does not shuffle the table to check the key again; a later write by
    any other tool carries no such metadata and the rule is evaluated again."""
    from stripe_recon import gx_suites
    from stripe_recon.validate import _vouch_unique

    seed(spark, cfg, products=[product("P1"), product("P2")])
    landed = tables.read(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS)
    tables.overwrite(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS, landed, {"unique": ["product_id"]})
    suite = _vouch_unique(gx_suites.load_suite("internal_products", cfg),
                          tables.commit_metadata(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS), "silver.internal_products")
    vouched = [e for e in suite["expectations"] if e["meta"].get("vouched_by")]
    assert [(e["type"], e["kwargs"]["column"]) for e in vouched] == [("expect_column_values_to_be_unique", "product_id")]
    assert [r.fails for r in gx_suites.row_rules(suite, gx_suites.parameters(cfg)) if r.name == "duplicate_key"] == ["false"]

    run = Run.new(spark, cfg)
    summary = validate_inputs(run)
    assert summary["tables"]["internal_products"]["quarantined"] == 0
    assert_balanced(summary)

    # another writer appends a second P1 row: no metadata on that commit, the rule is checked again
    landed.filter(F.col("product_id") == "P1").write.format("delta").mode("append").save(
        tables.table_path(cfg, tables.SILVER_INTERNAL_PRODUCTS))
    assert tables.commit_metadata(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS) == {}
    run2 = Run.new(spark, cfg)
    summary = validate_inputs(run2)
    assert quarantined(spark, cfg, run2.run_id) == {("internal", "product", "P1"): ["duplicate_key"]}
    assert summary["tables"]["internal_products"]["quarantined"] == 2
    assert_balanced(summary)
    assert keys(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS, "product_id") == ["P2"]


def test_row_rules_are_vouched_for_by_the_landing_that_wrote_silver(spark, make_cfg, tmp_path):
    """After land (which evaluates the suites' row rules in its own pass), validate reads land's
    recorded counts instead of counting again: each suite without warn row rules names the landing
    run, the ledger counts equal land's, and a write by another tool ends the vouching."""
    from stripe_recon import gx_suites
    from stripe_recon.generate import generate
    from stripe_recon.land.internal import land_internal
    from stripe_recon.pipeline import land_stripe
    from stripe_recon.validate import _read_and_count

    gen = tmp_path / "gen"
    generate(spark, str(gen), products=24, seed=3, rate=0.04)
    cfg = make_cfg("sources.internal.format=parquet", f"sources.internal.products={gen}/internal/products.parquet",
                   f"sources.internal.prices={gen}/internal/prices.parquet", "sources.stripe.mode=files",
                   f"sources.stripe.path={gen}/stripe")
    landing = Run.new(spark, cfg)
    landed = {"internal": land_internal(landing), "stripe": land_stripe(landing)}
    run = Run.new(spark, cfg)

    def vouched() -> dict[str, str | None]:
        with run.stage("probe") as st:
            return {name: _read_and_count(run, st, name, table).landed_by for name, table in INPUT_SUITES}

    warned = {name for name, _ in INPUT_SUITES
              if any(e["meta"].get("rule") and e["meta"]["severity"] == "warn"
                     for e in gx_suites.load_suite(name, cfg)["expectations"])}
    assert vouched() == {name: None if name in warned else landing.run_id for name, _ in INPUT_SUITES}
    assert set(warned) != {name for name, _ in INPUT_SUITES}  # some suite is vouched for: the path is tested
    out = validate_inputs(run)
    side = {"internal_products": ("internal", "products"), "internal_prices": ("internal", "prices"),
            "stripe_products": ("stripe", "products"), "stripe_prices": ("stripe", "prices")}
    for name, (s, plural) in side.items():
        assert out["tables"][name]["valid"] == landed[s][plural]["silver_rows"]
    tables.append(spark, cfg, tables.SILVER_STRIPE_PRODUCTS,
                  tables.read(spark, cfg, tables.SILVER_STRIPE_PRODUCTS).limit(1))
    assert vouched()["stripe_products"] is None
