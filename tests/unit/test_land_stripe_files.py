"""Landing Stripe export files: API-object JSON lines, Airbyte raw records, bad lines, s3a://."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pyspark.sql import types as T

from stripe_recon import tables
from stripe_recon.errors import InputError
from stripe_recon.land.stripe_files import land_stripe_files
from stripe_recon.ledger import Run

# conftest adds hadoop-aws to the shared session when a collected module sets this (s3a:// test).
NEEDS_HADOOP_AWS = True
REGION = "us-east-1"  # the moto_endpoint fixture (conftest) uses the same region

T0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC
D0 = dt.datetime(2026, 1, 1)


def ts(offset: int) -> dt.datetime:
    return D0 + dt.timedelta(seconds=offset)


def product(pid: str, **kw) -> dict:
    obj = {"id": pid, "object": "product", "name": f"Name {pid}", "description": None, "active": True,
           "tax_code": None, "metadata": {}, "default_price": None, "livemode": False, "created": T0,
           "updated": T0}
    obj.update(kw)
    return obj


def price(pid: str, **kw) -> dict:
    obj = {"id": pid, "object": "price", "product": "prod_1", "lookup_key": None, "currency": "usd",
           "unit_amount": 1000, "type": "one_time", "recurring": None, "active": True, "nickname": None,
           "metadata": {}, "livemode": False, "created": T0}
    obj.update(kw)
    return obj


def write_lines(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def land(spark, make_cfg, path, *overrides: str, run_id: str | None = None) -> tuple[Run, dict]:
    run = Run.new(spark, make_cfg(f"sources.stripe.path={path}", *overrides), run_id)
    return run, land_stripe_files(run)


def silver(run: Run, name: str, cols: list[str]) -> list[tuple]:
    return sorted(tuple(r) for r in tables.read(run.spark, run.cfg, name).select(*cols).collect())


def quarantined(run: Run) -> list[tuple]:
    rows = tables.read(run.spark, run.cfg, tables.GOLD_QUARANTINE).where(f"run_id = '{run.run_id}'").collect()
    return sorted(((r.entity, r.key, tuple(sorted(r.reasons))) for r in rows), key=lambda t: (t[0], t[1] or "", t[2]))


P_COLS = ["id", "name", "description", "active", "tax_code", "metadata", "default_price", "livemode", "created",
          "updated", "is_deleted"]
PR_COLS = ["id", "product", "lookup_key", "currency", "unit_amount", "type", "interval", "interval_count", "active",
           "nickname", "metadata", "created", "is_deleted"]


def test_mixed_jsonl_lands_products_and_prices(spark, make_cfg, tmp_path):
    f = write_lines(tmp_path / "export" / "all.jsonl", [
        product("prod_1", description="Desc", tax_code="txcd_10000000", metadata={"internal_id": "p1", "k": "v"},
                default_price={"id": "price_a", "object": "price"}, updated=T0 + 5, unknown_field={"x": 1}),
        price("price_a", lookup_key="pr1", unit_amount=1999, type="recurring",
              recurring={"interval": "month", "interval_count": 3, "usage_type": "licensed"}, nickname="Monthly"),
        product("prod_2", active=False, tax_code={"id": "txcd_2", "object": "tax_code"}),
        price("price_b", product={"id": "prod_2", "object": "product"}, currency="jpy", unit_amount=500,
              active=False, metadata={"a": "b"}, created=T0 + 1),
        price("price_c", currency="kwd", unit_amount=12340, type=None, recurring=None),
    ])
    run, out = land(spark, make_cfg, f)
    assert silver(run, tables.SILVER_STRIPE_PRODUCTS, P_COLS) == [
        ("prod_1", "Name prod_1", "Desc", True, "txcd_10000000", {"internal_id": "p1", "k": "v"}, "price_a",
         False, ts(0), ts(5), False),
        ("prod_2", "Name prod_2", None, False, "txcd_2", {}, None, False, ts(0), ts(0), False),
    ]
    assert silver(run, tables.SILVER_STRIPE_PRICES, PR_COLS) == [
        ("price_a", "prod_1", "pr1", "usd", 1999, "recurring", "month", 3, True, "Monthly", {}, ts(0), False),
        ("price_b", "prod_2", None, "jpy", 500, "one_time", None, None, False, None, {"a": "b"}, ts(1), False),
        ("price_c", "prod_1", None, "kwd", 12340, "one_time", None, None, True, None, {}, ts(0), False),
    ]
    assert out["products"] == {"rows_in": 2, "landed": 2, "quarantined": 0, "silver_rows": 2, "suite_quarantined": 0}
    assert out["prices"] == {"rows_in": 3, "landed": 3, "quarantined": 0, "silver_rows": 3, "suite_quarantined": 0}
    assert (out["rows_in"], out["landed"], out["quarantined"]) == (5, 5, 0)
    # bronze keeps the object's JSON as exported: unknown fields are not lost
    raw = tables.read(spark, run.cfg, tables.BRONZE_STRIPE_OBJECTS).where("id = 'prod_1'").first().raw
    assert json.loads(raw)["unknown_field"] == {"x": 1}
    b = tables.read(spark, run.cfg, tables.BRONZE_STRIPE_OBJECTS).where("_entity = 'price'").select(
        "id", "object", "_run_id", "_source", "_source_file").collect()
    assert sorted(r.id for r in b) == ["price_a", "price_b", "price_c"]
    assert {(r.object, r._run_id, r._source) for r in b} == {("price", run.run_id, "stripe:jsonl")}
    assert all(r._source_file.endswith("all.jsonl") for r in b)
    ledger = tables.read(spark, run.cfg, tables.GOLD_RUNS).where("stage = 'land_stripe'").first()
    assert (ledger.status, ledger.counts["rows_in"], ledger.counts["products.landed"]) == ("ok", 5, 2)


def test_separate_files_folder_and_glob(spark, make_cfg, tmp_path):
    write_lines(tmp_path / "ex" / "products" / "part-0.jsonl", [product("prod_1"), product("prod_2")])
    write_lines(tmp_path / "ex" / "prices" / "part-0.jsonl", [price("price_a")])
    run, out = land(spark, make_cfg, tmp_path / "ex")  # a folder, read recursively
    assert (out["products"]["silver_rows"], out["prices"]["silver_rows"]) == (2, 1)
    run, out = land(spark, make_cfg, f"{tmp_path}/ex/pr*/*.jsonl")  # a glob
    assert silver(run, tables.SILVER_STRIPE_PRODUCTS, ["id"]) == [("prod_1",), ("prod_2",)]
    assert silver(run, tables.SILVER_STRIPE_PRICES, ["id"]) == [("price_a",)]


def test_airbyte_raw_records_with_is_deleted(spark, make_cfg, tmp_path):
    def rec(raw_id: str, data: dict, extracted: str, nested: bool = True, **kw) -> dict:
        return {"_airbyte_raw_id": raw_id, "_airbyte_extracted_at": extracted,
                "_airbyte_data": data if nested else json.dumps(data), **kw}

    f = write_lines(tmp_path / "airbyte" / "products.jsonl", [
        rec("r1", product("prod_1", name="Old"), "2026-01-02T00:00:00Z", is_deleted=False),
        # same object, same `updated`: the later extraction wins (deterministic tie-break)
        rec("r2", product("prod_1", name="New"), "2026-01-03T00:00:00Z"),
        rec("r3", product("prod_2"), "2026-01-02T00:00:00Z", nested=False, is_deleted=True),
        rec("r4", {**product("prod_3"), "is_deleted": True}, "2026-01-02T00:00:00Z"),
        rec("r5", price("price_a", currency="eur"), "2026-01-02T00:00:00Z"),
    ])
    run, out = land(spark, make_cfg, f)
    assert silver(run, tables.SILVER_STRIPE_PRODUCTS, ["id", "name", "active", "is_deleted"]) == [
        ("prod_1", "New", True, False), ("prod_2", "Name prod_2", True, True), ("prod_3", "Name prod_3", True, True)]
    assert silver(run, tables.SILVER_STRIPE_PRICES, ["id", "currency", "unit_amount", "is_deleted"]) == [
        ("price_a", "eur", 1000, False)]
    assert out["products"] == {"rows_in": 4, "landed": 4, "quarantined": 0, "silver_rows": 3, "suite_quarantined": 0}
    bronze = tables.read(spark, run.cfg, tables.BRONZE_STRIPE_OBJECTS).where("_airbyte_raw_id = 'r3'").first()
    assert (bronze.id, bronze.is_deleted, bronze._source, json.loads(bronze.raw)["id"]) == (
        "prod_2", True, "stripe:airbyte", "prod_2")
    # forcing the wrong format quarantines instead of guessing
    # (every line rejected: no product and no price is left, which only --allow-empty accepts)
    run2, out2 = land(spark, make_cfg, f, "sources.stripe.format=jsonl", "sources.stripe.allow_empty=true")
    assert out2["unrecognised"] == {"rows_in": 5, "landed": 0, "quarantined": 5}
    assert {r[2] for r in quarantined(run2)} == {("unknown_object",)}


def test_duplicate_ids_keep_the_latest_deterministically(spark, make_cfg, tmp_path):
    write_lines(tmp_path / "ex" / "a.jsonl", [
        product("prod_1", name="v2", updated=T0 + 20),
        product("prod_2", name="tie-b", updated=T0 + 5),
        price("price_a", nickname="older", created=T0),
    ])
    write_lines(tmp_path / "ex" / "b.jsonl", [
        product("prod_1", name="v1", updated=T0 + 10),
        product("prod_2", name="tie-a", updated=T0 + 5),
        price("price_a", nickname="newer", created=T0 + 1),
    ])
    run, out = land(spark, make_cfg, tmp_path / "ex")
    # ties on whole-second `updated` resolve on the raw JSON: the same answer whatever the file order
    assert silver(run, tables.SILVER_STRIPE_PRODUCTS, ["id", "name"]) == [("prod_1", "v2"), ("prod_2", "tie-b")]
    assert silver(run, tables.SILVER_STRIPE_PRICES, ["id", "nickname"]) == [("price_a", "newer")]
    assert out["products"] == {"rows_in": 4, "landed": 4, "quarantined": 0, "silver_rows": 2, "suite_quarantined": 0}


def test_bad_lines_are_quarantined_with_reasons(spark, make_cfg, tmp_path):
    f = write_lines(tmp_path / "ex" / "bad.jsonl", [
        product("prod_ok"),
        '{"id": "prod_broken", "object": "product", ',
        "[1, 2, 3]",
        "",
        "   ",
        {"id": "cus_1", "object": "customer"},
        {"object": "product", "name": "no id"},
        product("prod_types", active="yes", created="yesterday", metadata=["not", "a", "map"]),
        product("prod_far", created=10**15),  # beyond year 9999: a wrong type, not an overflow error
        price("price_space", currency="usd "),
        price("price_upper", currency="USD"),
        price("price_kwd", currency="kwd", unit_amount=12345),
        price("price_frac", unit_amount=12.5),
        price("price_neg", unit_amount=-1),
        price("price_ic", recurring={"interval": "month", "interval_count": "often"}),
        {"_airbyte_raw_id": "r1", "_airbyte_data": "{not json"},
    ])
    run, out = land(spark, make_cfg, f)
    assert quarantined(run) == [
        ("price", "price_frac", ("wrong_type:unit_amount",)),
        ("price", "price_ic", ("wrong_type:interval_count",)),
        ("price", "price_kwd", ("amount_not_representable",)),
        ("price", "price_neg", ("negative_amount",)),
        ("price", "price_space", ("unknown_currency",)),
        ("product", None, ("null_key",)),
        ("product", "prod_far", ("wrong_type:created",)),
        ("product", "prod_types", ("wrong_type:active", "wrong_type:created", "wrong_type:metadata")),
        ("unknown", None, ("malformed_json",)),
        ("unknown", None, ("malformed_json",)),
        ("unknown", None, ("malformed_json",)),
        ("unknown", "cus_1", ("unknown_object",)),
    ]
    assert silver(run, tables.SILVER_STRIPE_PRODUCTS, ["id"]) == [("prod_ok",)]
    assert silver(run, tables.SILVER_STRIPE_PRICES, ["id", "currency"]) == [("price_upper", "usd")]
    # blank lines hold no record; every other line is landed or quarantined
    assert (out["rows_in"], out["landed"], out["quarantined"]) == (14, 2, 12)
    rec = tables.read(spark, run.cfg, tables.GOLD_QUARANTINE).where("array_contains(reasons, 'malformed_json')")
    assert sorted(r.record for r in rec.collect()) == [
        '[1, 2, 3]', '{"_airbyte_raw_id": "r1", "_airbyte_data": "{not json"}',
        '{"id": "prod_broken", "object": "product", ']


def test_relanding_the_same_export_is_idempotent(spark, make_cfg, tmp_path):
    f = write_lines(tmp_path / "ex" / "all.jsonl", [product("prod_1"), product("prod_1", updated=T0 + 1),
                                                    price("price_a"), "not json"])
    run1, out1 = land(spark, make_cfg, f)
    first = (silver(run1, tables.SILVER_STRIPE_PRODUCTS, P_COLS), silver(run1, tables.SILVER_STRIPE_PRICES, PR_COLS))
    land(spark, make_cfg, f, run_id=run1.run_id)  # the same run twice
    assert tables.read(spark, run1.cfg, tables.BRONZE_STRIPE_OBJECTS).count() == 4
    assert len(quarantined(run1)) == 1
    run2, out2 = land(spark, make_cfg, f)  # a new run of the same export: nothing written but the manifest
    assert out2["unchanged_since"] == run1.run_id
    assert (silver(run2, tables.SILVER_STRIPE_PRODUCTS, P_COLS), silver(run2, tables.SILVER_STRIPE_PRICES, PR_COLS)) \
        == first
    assert {k: out2[k] for k in ("products", "prices", "unrecognised")} == {
        k: out1[k] for k in ("products", "prices", "unrecognised")}
    assert tables.read(spark, run2.cfg, tables.SILVER_STRIPE_PRODUCTS).count() == 1
    assert tables.read(spark, run2.cfg, tables.BRONZE_STRIPE_OBJECTS).count() == 4
    assert len(quarantined(run2)) == 1  # the repeated landing still names its rejected line


@pytest.mark.parametrize("memory_max_rows", [200_000, 0], ids=["in_memory", "scratch_table"])
def test_relanding_a_changed_export_writes_only_the_changes(spark, make_cfg, tmp_path, monkeypatch, memory_max_rows):
    first = [product("prod_1"), product("prod_2"), product("prod_3"), price("price_a"), price("price_b"), "not json"]
    run1, _ = land(spark, make_cfg, write_lines(tmp_path / "ex1" / "all.jsonl", first))
    merged_from_memory = []
    real_merge = tables.merge_snapshot
    monkeypatch.setattr(tables, "merge_snapshot", lambda spark_, cfg_, name, source, *a, **kw: (
        merged_from_memory.append(source.is_cached), real_merge(spark_, cfg_, name, source, *a, **kw))[1])
    # prod_2 renamed (and exported twice: the newer version wins), prod_3 gone, prod_4 new; price_b re-priced
    second = [product("prod_1"), product("prod_2", name="Old", updated=T0 + 1), product("prod_2", name="New", updated=T0 + 2),
              product("prod_4"), price("price_a"), price("price_b", unit_amount=1500), "still not json"]
    run2, out2 = land(spark, make_cfg, write_lines(tmp_path / "ex2" / "all.jsonl", second),
                      f"land.memory_max_rows={memory_max_rows}")
    assert merged_from_memory == [memory_max_rows > 0] * 2
    assert (out2["rows_in"], out2["landed"], out2["quarantined"]) == (7, 6, 1)
    assert (out2["products"]["silver_rows"], out2["prices"]["silver_rows"]) == (3, 2)
    assert silver(run2, tables.SILVER_STRIPE_PRODUCTS, ["id", "name", "_run_id"]) == [
        ("prod_1", "Name prod_1", run1.run_id), ("prod_2", "New", run2.run_id), ("prod_4", "Name prod_4", run2.run_id)]
    assert silver(run2, tables.SILVER_STRIPE_PRICES, ["id", "unit_amount", "_run_id"]) == [
        ("price_a", 1000, run1.run_id), ("price_b", 1500, run2.run_id)]
    feed = {}
    for name in (tables.SILVER_STRIPE_PRODUCTS, tables.SILVER_STRIPE_PRICES):
        v = tables.version(spark, run2.cfg, name)
        feed[name] = sorted((r.id, r._change_type) for r in spark.read.format("delta").option("readChangeFeed", "true")
                            .option("startingVersion", v).load(tables.table_path(run2.cfg, name)).collect())
    assert feed == {
        tables.SILVER_STRIPE_PRODUCTS: [("prod_2", "update_postimage"), ("prod_2", "update_preimage"),
                                        ("prod_3", "delete"), ("prod_4", "insert")],
        tables.SILVER_STRIPE_PRICES: [("price_b", "update_postimage"), ("price_b", "update_preimage")],
    }
    assert quarantined(run2) == [("unknown", None, ("malformed_json",))]


def test_missing_path_names_it(spark, make_cfg, tmp_path):
    missing = tmp_path / "no" / "export.jsonl"
    with pytest.raises(InputError, match=f"Stripe export path {missing} does not exist"):
        land(spark, make_cfg, missing)
    ledger = tables.read(spark, make_cfg(), tables.GOLD_RUNS).collect()
    assert [(r.stage, r.status, str(missing) in r.message) for r in ledger] == [("land_stripe", "failed", True)]
    with pytest.raises(InputError, match="sources.stripe.path"):
        land_stripe_files(Run.new(spark, make_cfg("sources.stripe.path=null")))


def test_export_on_s3a(spark, make_cfg, moto_endpoint):
    import boto3

    bucket = "recon-land-stripe"
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket=bucket)
    body = "".join(json.dumps(o) + "\n" for o in (product("prod_1"), price("price_a"), price("price_b")))
    s3.put_object(Bucket=bucket, Key="export/2026-01-01/all.jsonl", Body=body.encode())
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in {
        "endpoint": moto_endpoint, "endpoint.region": REGION, "path.style.access": "true",
        "connection.ssl.enabled": "false", "access.key": "testing", "secret.key": "testing",
        "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
    }.items():
        hconf.set(f"fs.s3a.bucket.{bucket}.{key}", value)
    run, out = land(spark, make_cfg, f"s3a://{bucket}/export")
    assert silver(run, tables.SILVER_STRIPE_PRICES, ["id", "unit_amount"]) == [("price_a", 1000), ("price_b", 1000)]
    assert out["products"]["silver_rows"] == 1
    with pytest.raises(InputError, match=f"s3a://{bucket}/missing does not exist"):
        land(spark, make_cfg, f"s3a://{bucket}/missing")


def test_rows_match_silver_schema(spark, make_cfg, tmp_path):
    f = write_lines(tmp_path / "ex" / "one.jsonl", [product("prod_1"), price("price_a")])
    run, _ = land(spark, make_cfg, f)
    for name, schema in ((tables.SILVER_STRIPE_PRODUCTS, tables.SILVER_STRIPE_PRODUCTS_SCHEMA),
                         (tables.SILVER_STRIPE_PRICES, tables.SILVER_STRIPE_PRICES_SCHEMA)):
        got = tables.read(spark, run.cfg, name).schema
        # the silver columns, then the derived columns (silver.py)
        derived = [("_fp", T.LongType()), ("_key", T.StringType()), ("_primary", T.BooleanType()),
                   ("_active_ids", T.ArrayType(T.StringType()))]
        if name == tables.SILVER_STRIPE_PRICES:
            derived.append(("_product_key", T.StringType()))
        derived += [("_rh", T.LongType()), ("_hash", T.LongType())]
        assert [(f.name, f.dataType) for f in got.fields] == [(f.name, f.dataType) for f in schema.fields] + derived
