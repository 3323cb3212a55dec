"""Debezium change events -> change rows (land/cdc_events.py): hand-written events of both envelopes
and all three decimal.handling.modes, exact expected rows, counts and quarantine reasons."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from stripe_recon import tables
from stripe_recon.land.cdc_events import decode_events

TABLES = {"products": "products", "prices": "prices"}
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


# -- building events the way Debezium's JsonConverter writes them --------------------------------

def f(name: str, type_: str, semantic: str | None = None, scale: int | None = None, optional: bool = True) -> dict:
    out = {"type": type_, "optional": optional, "field": name}
    if semantic:
        out["name"] = semantic
    if scale is not None:
        out["parameters"] = {"scale": str(scale), "connect.decimal.precision": "12"}
    return out


SOURCE_SCHEMA = {"type": "struct", "optional": False, "name": "io.debezium.connector.postgresql.Source",
                 "field": "source", "fields": [
                     f("version", "string", optional=False), f("connector", "string", optional=False),
                     f("name", "string", optional=False), f("ts_ms", "int64", optional=False),
                     f("db", "string", optional=False), f("schema", "string", optional=False),
                     f("table", "string", optional=False), f("txId", "int64"), f("lsn", "int64")]}

PRICE_FIELDS_PRECISE = [
    f("price_id", "string", optional=False), f("product_id", "string"), f("currency", "string"),
    f("amount", "bytes", "org.apache.kafka.connect.data.Decimal", scale=2), f("interval", "string"),
    f("interval_count", "int32"), f("active", "boolean"), f("nickname", "string"),
    f("updated_at", "int64", "io.debezium.time.MicroTimestamp"),
]
PRICE_FIELDS_STRING = [dict(x) for x in PRICE_FIELDS_PRECISE]
PRICE_FIELDS_STRING[3] = f("amount", "string")
PRICE_FIELDS_STRING[8] = f("updated_at", "int64", "io.debezium.time.Timestamp")
PRICE_FIELDS_VARIABLE = [dict(x) for x in PRICE_FIELDS_PRECISE]
PRICE_FIELDS_VARIABLE[3] = {"type": "struct", "optional": True, "field": "amount",
                            "name": "io.debezium.data.VariableScaleDecimal",
                            "fields": [f("scale", "int32", optional=False), f("value", "bytes", optional=False)]}
PRODUCT_FIELDS = [
    f("product_id", "string", optional=False), f("name", "string"), f("description", "string"),
    f("active", "boolean"), f("deleted_at", "string", "io.debezium.time.ZonedTimestamp"),
    f("tax_code", "string"), f("metadata", "string", "io.debezium.data.Json"),
    f("updated_at", "int64", "io.debezium.time.MicroTimestamp"),
]


def source(table: str, lsn: int | None, ts_ms: int) -> dict:
    out = {"version": "3.6.1.Final", "connector": "postgresql", "name": "recon", "ts_ms": ts_ms, "db": "recon",
           "schema": "public", "table": table, "txId": 700}
    if lsn is not None:
        out["lsn"] = lsn
    return out


def event(op: str, table: str, lsn: int | None, ts_ms: int, before: dict | None = None,
          after: dict | None = None) -> dict:
    return {"before": before, "after": after, "source": source(table, lsn, ts_ms), "op": op, "ts_ms": ts_ms + 5}


def enveloped(payload: dict, row_fields: list[dict], table: str) -> str:
    row = {"type": "struct", "optional": True, "name": f"recon.public.{table}.Value", "fields": row_fields}
    schema = {"type": "struct", "optional": False, "name": f"recon.public.{table}.Envelope", "fields": [
        {**row, "field": "before"}, {**row, "field": "after"}, SOURCE_SCHEMA,
        f("op", "string", optional=False), f("ts_ms", "int64")]}
    return json.dumps({"schema": schema, "payload": payload})


def b64(unscaled: int) -> str:
    """Kafka Connect's Decimal bytes: the unscaled value, big-endian two's complement, fewest bytes."""
    length = max(1, (unscaled + (unscaled < 0)).bit_length() // 8 + 1)
    return base64.b64encode(unscaled.to_bytes(length, "big", signed=True)).decode()


def plain(payload: dict) -> str:
    return json.dumps(payload)


def bronze(spark, lines: list[str | None], file: str = "/in/events.jsonl", kafka: bool = False):
    rows = []
    for i, line in enumerate(lines, 1):
        if kafka:
            rows.append((line, None, "recon.catalog", 0, i - 1, T0, None, None,
                         "r1", "internal:kafka", f"recon.catalog/0/{i - 1}", T0))
        else:
            rows.append((line, None, None, None, None, None, file, i, "r1", "internal:cdc_file", f"{file}:{i}", T0))
    return spark.createDataFrame(rows, tables.BRONZE_CDC_EVENTS_SCHEMA)


PRODUCT_COLS = ["product_id", "name", "description", "active", "deleted_at", "tax_code", "metadata", "updated_at",
                "_op", "_lsn", "_ts_ms", "_event_offset", "_unchanged"]
PRICE_COLS = ["price_id", "product_id", "currency", "amount", "interval", "interval_count", "active", "nickname",
              "updated_at", "_op", "_lsn", "_ts_ms", "_event_offset", "_unchanged"]


def rows(df, cols):
    return sorted(tuple(r) for r in df.select(*cols).collect())


# -- products: the plain envelope, ordering, deletes, skips -----------------------------------------

def product(pid: str, name: str, **kw) -> dict:
    row = {"product_id": pid, "name": name, "description": None, "active": True, "deleted_at": None,
           "tax_code": None, "metadata": None, "updated_at": None}
    row.update(kw)
    return row


P1_C = plain(event("c", "products", 100, 1704103200000,
                   after=product("p1", "Alpha", metadata='{"color": "red"}', updated_at="2024-01-01T10:00:00Z")))
P1_U = plain(event("u", "products", 200, 1704103260000, before=None,
                   after=product("p1", "Alpha 2", description="__debezium_unavailable_value", tax_code="txcd_1",
                                 metadata='{"color": "blue"}', updated_at="2024-01-01T10:01:00Z")))
P2_C = plain(event("c", "products", 150, 1704103210000, after=product("p2", "Beta", active=False)))
P2_D = plain(event("d", "products", 300, 1704106800000, before={"product_id": "p2", "name": None}))
P3_R = plain(event("r", "products", 50, 1704103000000, after=product("p3", "Gamma")))
P3_OLD = plain(event("u", "products", 40, 1704102000000, after=product("p3", "Gamma (old)")))
PRODUCT_LINES = [
    P1_C, P1_U, P2_C, P3_R, P2_D,
    None,                                    # the tombstone Kafka writes after a delete
    P1_U,                                    # a replay of an applied event
    P3_OLD,                                  # out of order: older than P3_R, arrives later
    "null",                                  # a tombstone as a file line
    plain({"before": None, "after": None, "source": source("products", 310, 1704106900000), "op": "t", "ts_ms": 1}),
    plain({"op": "m", "ts_ms": 1704106900000, "source": source("", 320, 1704106900000),
           "message": {"prefix": "x", "content": "eA=="}}),
    "not json at all",
    plain(event("c", "customers", 400, 1704107000000, after={"customer_id": "c1"})),
    plain(event("c", "products", 410, 1704107000000, after=product(None, "No key"))),
    plain(event("c", "products", 420, 1704107000000, after=product("p5", "Bad time", updated_at="yesterday"))),
    plain({"foo": 1}),
    plain(event("x", "products", 430, 1704107000000, after=product("p6", "Odd op"))),
    plain(event("d", "products", 440, 1704107000000, before=None)),
]


@pytest.fixture(scope="module")
def product_changes(spark):
    changes = decode_events(bronze(spark, PRODUCT_LINES), TABLES)
    changes.flagged.cache()
    yield changes
    changes.flagged.unpersist()


def test_products_one_row_per_key_last_in_source_order(product_changes):
    got = rows(product_changes.changes("products"), PRODUCT_COLS)
    f_ = "/in/events.jsonl"
    assert got == [
        # p1: the update wins over the create; its replay (line 7) changes nothing; the TOASTed
        # description is null and named in _unchanged.
        ("p1", "Alpha 2", None, "true", None, "txcd_1", '{"color": "blue"}', "2024-01-01T10:01:00Z",
         "upsert", 200, 1704103260000, f"{f_}:7", ["description"]),
        # p2: deleted at source.ts_ms; a delete changes nothing but deleted_at
        ("p2", None, None, None, "2024-01-01T11:00:00.000000Z", None, None, None,
         "delete", 300, 1704106800000, f"{f_}:5", ["name", "description", "active", "tax_code", "metadata", "updated_at"]),
        # p3: the snapshot read (lsn 50) beats the older event that arrived after it
        ("p3", "Gamma", None, "true", None, None, None, None, "upsert", 50, 1704103000000, f"{f_}:4", []),
    ]


def test_products_raw_event_is_kept(product_changes):
    got = {r["product_id"]: r["_event"] for r in product_changes.changes("products").collect()}
    assert got == {"p1": P1_U, "p2": P2_D, "p3": P3_R}


def test_counts_add_up(product_changes):
    counts = product_changes.counts()
    assert counts == {
        "events": 18, "changes": 7, "skipped": 4, "quarantined": 7,
        "skipped.tombstone": 2, "skipped.truncate": 1, "skipped.message": 1,
        "products.changes": 7, "products.rows": 3, "products.quarantined": 4,
        "prices.changes": 0, "prices.rows": 0, "prices.quarantined": 0,
    }
    assert counts["events"] == counts["changes"] + counts["skipped"] + counts["quarantined"]


def test_quarantine_names_the_problem_and_the_place(product_changes):
    q = product_changes.quarantine_rows("r1")
    assert q.columns == tables.QUARANTINE_SCHEMA.fieldNames()
    got = sorted((r["source_file"], r["entity"], r["key"], tuple(r["reasons"]), r["record"], r["stage"], r["source"])
                 for r in q.collect())
    f_ = "/in/events.jsonl"
    assert got == sorted([
        (f"{f_}:12", "unknown", None, ("malformed_json",), "not json at all", "land", "internal"),
        (f"{f_}:13", "unknown", None, ("unknown_table",), PRODUCT_LINES[12], "land", "internal"),
        (f"{f_}:14", "product", None, ("missing_key",), PRODUCT_LINES[13], "land", "internal"),
        (f"{f_}:15", "product", "p5", ("wrong_type:updated_at",), PRODUCT_LINES[14], "land", "internal"),
        (f"{f_}:16", "unknown", None, ("malformed_event",), '{"foo": 1}', "land", "internal"),
        (f"{f_}:17", "product", "p6", ("unknown_op",), PRODUCT_LINES[16], "land", "internal"),
        (f"{f_}:18", "product", None, ("missing_row",), PRODUCT_LINES[17], "land", "internal"),
    ])


# -- prices: the schema envelope and the three decimal.handling.modes --------------------------------

def price(pid: str, amount, **kw) -> dict:
    row = {"price_id": pid, "product_id": "p1", "currency": "usd", "amount": amount, "interval": "month",
           "interval_count": 1, "active": True, "nickname": None, "updated_at": None}
    row.update(kw)
    return row


BIG = 1234567890123456789012345678901234  # 34 digits: 14 bytes, scale 2
PRICE_LINES = [
    # precise, with the schema: base64 of the unscaled integer, scale 2 from the schema
    enveloped(event("c", "prices", 10, 1704103200000, after=price("pr1", b64(1999), updated_at=1704103200123456)),
              PRICE_FIELDS_PRECISE, "prices"),
    enveloped(event("c", "prices", 11, 1704103200000, after=price("pr2", b64(-5), interval=None, interval_count=None)),
              PRICE_FIELDS_PRECISE, "prices"),
    enveloped(event("c", "prices", 12, 1704103200000, after=price("pr3", b64(BIG))), PRICE_FIELDS_PRECISE, "prices"),
    enveloped(event("c", "prices", 13, 1704103200000, after=price("pr4", b64(0))), PRICE_FIELDS_PRECISE, "prices"),
    # precise NUMERIC without a declared scale: VariableScaleDecimal {scale, value}
    enveloped(event("c", "prices", 14, 1704103200000, after=price("pr5", {"scale": 3, "value": b64(12345)})),
              PRICE_FIELDS_VARIABLE, "prices"),
    # string mode (schema on), epoch millis timestamp
    enveloped(event("u", "prices", 15, 1704103200000, after=price("pr6", "19.99", updated_at=1704103200123)),
              PRICE_FIELDS_STRING, "prices"),
    # double mode, no schema: the JSON number's text; an ISO timestamp; a plain epoch is micros
    plain(event("c", "prices", 16, 1704103200000, after=price("pr7", 19.99, updated_at="2024-01-01T10:00:00.5Z"))),
    plain(event("c", "prices", 17, 1704103200000, after=price("pr8", 7, updated_at=1704103200000001))),
    # precise without the schema: the scale is unknown, so the value does not parse
    plain(event("c", "prices", 18, 1704103200000, after=price("pr9", b64(1999)))),
    # precise with bytes that are not base64
    enveloped(event("c", "prices", 19, 1704103200000, after=price("pr10", "!!")), PRICE_FIELDS_PRECISE, "prices"),
    # a delete in the schema envelope (REPLICA IDENTITY DEFAULT: before holds the key)
    enveloped(event("d", "prices", 20, 1704103300000, before=price("pr4", None, product_id=None, currency=None,
                                                                    interval=None, interval_count=None,
                                                                    active=None)),
              PRICE_FIELDS_PRECISE, "prices"),
    # a tombstone in the schema envelope
    json.dumps({"schema": None, "payload": None}),
    # a boolean that is not one
    plain(event("c", "prices", 21, 1704103200000, after=price("pr11", "1.00", active="maybe"))),
]


@pytest.fixture(scope="module")
def price_changes(spark):
    changes = decode_events(bronze(spark, PRICE_LINES, kafka=True), TABLES)
    changes.flagged.cache()
    yield changes
    changes.flagged.unpersist()


def test_prices_all_decimal_modes(price_changes):
    got = rows(price_changes.changes("prices"), PRICE_COLS)
    t = "recon.catalog/0/"
    assert got == [
        ("pr1", "p1", "usd", "19.99", "month", "1", "true", None, "2024-01-01T10:00:00.123456Z",
         "upsert", 10, 1704103200000, t + "0", []),
        ("pr2", "p1", "usd", "-0.05", None, None, "true", None, None, "upsert", 11, 1704103200000, t + "1", []),
        ("pr3", "p1", "usd", "12345678901234567890123456789012.34", "month", "1", "true", None, None,
         "upsert", 12, 1704103200000, t + "2", []),
        ("pr4", None, None, None, None, None, None, None, None, "delete", 20, 1704103300000, t + "10",
         ["product_id", "currency", "amount", "interval", "interval_count", "active", "nickname", "updated_at"]),
        ("pr5", "p1", "usd", "12.345", "month", "1", "true", None, None, "upsert", 14, 1704103200000, t + "4", []),
        ("pr6", "p1", "usd", "19.99", "month", "1", "true", None, "2024-01-01T10:00:00.123000Z",
         "upsert", 15, 1704103200000, t + "5", []),
        ("pr7", "p1", "usd", "19.99", "month", "1", "true", None, "2024-01-01T10:00:00.5Z",
         "upsert", 16, 1704103200000, t + "6", []),
        ("pr8", "p1", "usd", "7", "month", "1", "true", None, "2024-01-01T10:00:00.000001Z",
         "upsert", 17, 1704103200000, t + "7", []),
    ]


def test_prices_quarantine_and_counts(price_changes):
    got = sorted((r["source_file"], r["key"], tuple(r["reasons"])) for r in price_changes.quarantine_rows("r1").collect())
    t = "recon.catalog/0/"
    assert got == [(t + "12", "pr11", ("wrong_type:active",)), (t + "8", "pr9", ("wrong_type:amount",)),
                   (t + "9", "pr10", ("wrong_type:amount",))]
    assert price_changes.counts() == {
        "events": 13, "changes": 9, "skipped": 1, "quarantined": 3,
        "skipped.tombstone": 1, "skipped.truncate": 0, "skipped.message": 0,
        "products.changes": 0, "products.rows": 0, "products.quarantined": 0,
        "prices.changes": 9, "prices.rows": 8, "prices.quarantined": 3,
    }


def test_schema_qualified_table_names_and_unknown_entities(spark):
    line = plain(event("c", "products", 1, 1704103200000, after=product("p1", "A")))
    changes = decode_events(bronze(spark, [line]), {"products": "public.products"})
    changes.flagged.cache()
    assert [r["product_id"] for r in changes.changes("products").collect()] == ["p1"]
    with pytest.raises(ValueError, match="unknown entity"):
        decode_events(bronze(spark, [line]), {"customers": "customers"})
