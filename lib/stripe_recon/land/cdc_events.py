"""Debezium change events -> change rows per internal entity, in Spark SQL only (no UDF, no collect).

Input: bronze CDC events (``tables.BRONZE_CDC_EVENTS_SCHEMA``: the event JSON as text in ``value``,
null for a Kafka tombstone, and where it came from). Each event is Debezium's JSON, with the schema
envelope (``{"schema": ..., "payload": {...}}``, JsonConverter ``schemas.enable=true``) or without it
(the payload alone). ``payload.source.table`` (or ``schema.table``) names the entity through
``sources.internal.cdc.tables`` (``{products: products, prices: prices}`` by default).

Per event (one row of :attr:`CdcChanges.flagged`):

- ``op`` c / u / r: an upsert of the ``after`` row; ``d``: a delete of the key in ``before``, whose
  ``deleted_at`` is the event's ``source.ts_ms`` (prices have no ``deleted_at``: the time is ``_ts_ms``);
- a tombstone (null value, the line ``null``, or ``{"schema": null, "payload": null}``), ``t``
  (truncate) and ``m`` (logical decoding message) are skipped and counted;
- anything else is quarantined with its reason (see ``REASONS``), so one bad event never stops the
  others: ``events = changes + skipped + quarantined``.

Row values are decoded as Debezium sends them, into the canonical internal columns as strings
(``canonical.INTERNAL_PRODUCT_COLUMNS`` / ``INTERNAL_PRICE_COLUMNS``), the same shape bronze rows have:

- NUMERIC with ``decimal.handling.mode`` ``string`` (text) or ``double`` (a JSON number, kept as its
  text), or ``precise``: base64 of the unscaled big-endian two's-complement integer, the scale in the
  schema envelope (``org.apache.kafka.connect.data.Decimal``, ``parameters.scale``), or an object
  ``{"scale": s, "value": base64}`` (``io.debezium.data.VariableScaleDecimal``) -> ``"19.99"``;
  without the envelope a precise value cannot be decoded and is quarantined (``wrong_type:<column>``);
- timestamps: ISO strings as they come (``io.debezium.time.ZonedTimestamp``), epoch numbers per the
  schema's semantic type (``io.debezium.time.Timestamp`` / ``MicroTimestamp`` / ``NanoTimestamp``,
  ``org.apache.kafka.connect.data.Timestamp``, ``io.debezium.time.Date``) or, without the envelope,
  in ``epoch_unit`` (Debezium's default for a PostgreSQL ``timestamp`` is micros) ->
  ``2024-01-01T10:00:00.123456Z`` (rendered in the session time zone, which spark.py pins to UTC);
- jsonb (``io.debezium.data.Json``) is JSON text already; a nested object or array is kept as its
  JSON text; booleans and numbers as their JSON text;
- ``__debezium_unavailable_value`` (an unchanged TOASTed value) never overwrites: the column is null
  here and named in the row's ``_unchanged`` array (a delete names every column but the key and
  ``deleted_at``: a soft delete changes nothing else).

A decoded value must parse as its silver column's type (``tables.SILVER_INTERNAL_*_SCHEMA``: boolean,
integer, decimal, timestamp, map/array as JSON), else the event is quarantined as ``wrong_type:<col>``
(canonical.py's reason name) instead of failing or nulling the column.

Order and reduction: :meth:`CdcChanges.changes` keeps one row per key, the last event in source
order: ``source.lsn``, then ``source.ts_ms``, then the position in the input (Kafka topic, partition,
offset; file, line). Missing lsn/ts_ms sort first. Replays and out-of-order duplicates within one
batch therefore change nothing.

Example::

    changes = decode_events(bronze_events, cfg.sources.internal.cdc.tables)
    products = changes.changes("products")     # product_id, name, ..., _op, _lsn, _ts_ms, _event_offset, _event, _unchanged
    rejects = changes.quarantine_rows(run.run_id)
    changes.counts()  # {'events': 9, 'changes': 6, 'skipped': 2, 'quarantined': 1, 'products.rows': 3, ...}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .. import canonical, quarantine, tables
from ..quarantine import REASONS, Rule

UNAVAILABLE = "__debezium_unavailable_value"
UPSERT_OPS = ("c", "u", "r")
SKIPPED_OPS = {"t": "truncate", "m": "message"}
EPOCH_UNITS = ("micros", "millis", "seconds")

# Reason names (gold.quarantine.reasons) besides canonical's ``wrong_type:<column>``.
REASONS_DOC = {
    "malformed_json": "the event is not a JSON object",
    "malformed_event": "JSON, but no Debezium change event (no op)",
    "unknown_op": "op is not one of c, u, r, d, t, m",
    "unknown_table": "source.table is not in sources.internal.cdc.tables",
    "missing_row": "c/u/r without an after row, or d without a before row",
    "missing_key": "the row has no value for the entity's key column",
}

_ISO = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"
_DEC = "DECIMAL(38,0)"
_NUMBER = r"^\s*-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?\s*$"
_INTEGER = r"^-?[0-9]+$"


@dataclass(frozen=True)
class CdcEntity:
    """One internal entity as CDC sees it: its columns, key and the silver type of each column."""

    plural: str  # products | prices: the key in sources.internal.cdc.tables and in counts
    entity: str  # product | price: gold.quarantine.entity
    key: str
    columns: tuple[str, ...]
    schema: T.StructType  # the silver schema: the type each decoded value must parse as

    def type_of(self, column: str) -> T.DataType:
        fields = {f.name: f.dataType for f in self.schema.fields}
        return fields.get(column, T.StringType())


ENTITIES = (
    CdcEntity("products", "product", "product_id", tuple(canonical.INTERNAL_PRODUCT_COLUMNS),
              tables.SILVER_INTERNAL_PRODUCTS_SCHEMA),
    CdcEntity("prices", "price", "price_id", tuple(canonical.INTERNAL_PRICE_COLUMNS),
              tables.SILVER_INTERNAL_PRICES_SCHEMA),
)
# Bookkeeping columns of a change row, after the canonical columns.
CHANGE_COLUMNS = ["_op", "_lsn", "_ts_ms", "_event_offset", "_event", "_unchanged"]
# What CdcChanges.flagged keeps of each event besides the decoded values (``_v_<column>``).
KEPT_COLUMNS = ["_class", "_plural", "_key", REASONS, "_op", "_lsn", "_ts_ms", "_pos", "_unchanged", "value",
                "_run_id", "_source", "_source_file", "_ingested_at"]


def _all_columns() -> list[str]:
    seen: list[str] = []
    for ent in ENTITIES:
        seen += [c for c in ent.columns if c not in seen]
    return seen


def _q(name: str) -> str:
    return f"`{name}`"


def _lit(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# -- value decoding (SQL text builders) ---------------------------------------------------------
# Which decoding a column gets follows its silver type: numbers may be precise decimals, timestamps
# may be epoch numbers; anything else is its JSON text. ``let`` binds an intermediate value once
# (Spark does not inline lambda variables), so no sub-expression is written, or evaluated, twice.


def _let(value: str, body: str) -> str:
    """``body`` with ``v`` bound to ``value``: ``element_at(transform(array(value), v -> body), 1)``."""
    return f"element_at(transform(array({value}), v -> {body}), 1)"


def _decimal_text(b64: str, scale: str) -> str:
    """Base64 of a big-endian two's-complement integer (Kafka Connect's Decimal) and a scale -> the
    decimal as exact text (``B88=``, 2 -> ``19.99``); null when the base64 is invalid or the value
    does not fit 38 digits. A negative number is summed over its inverted bytes (magnitude - 1), so
    the sum never overflows for a value that fits."""
    byte = "CAST(conv(substr(v.h, i * 2 + 1, 2), 16, 10) AS INT)"
    magnitude = (f"aggregate(sequence(0, length(v.h) DIV 2 - 1), CAST(0 AS {_DEC}), (acc, i) -> "
                 f"CAST(try_add(try_multiply(acc, 256), CASE WHEN v.neg THEN 255 - {byte} ELSE {byte} END) "
                 f"AS {_DEC}))")
    digits = f"CAST(CASE WHEN v.neg THEN try_add({magnitude}, 1) ELSE {magnitude} END AS STRING)"
    hexed = f"hex(try_to_binary({b64}, 'base64'))"
    parts = (f"named_struct('h', {hexed}, 's', {scale}, "
             f"'neg', CAST(conv(substr({hexed}, 1, 2), 16, 10) AS INT) >= 128)")
    unscaled = (f"CASE WHEN length(v.h) > 0 AND v.s IS NOT NULL THEN "
                f"named_struct('d', {digits}, 'neg', v.neg, 's', v.s) END")
    return _let(_let(parts, unscaled), _point("v.d", "v.neg", "v.s"))


def _point(digits: str, neg: str, scale: str) -> str:
    """Unsigned digits, a sign and a scale -> ``[-]int.frac`` (a negative scale appends zeros)."""
    padded = f"lpad({digits}, greatest(length({digits}), {scale} + 1), '0')"
    sign = f"CASE WHEN {neg} THEN '-' ELSE '' END"
    return (f"CASE WHEN {digits} IS NULL THEN NULL "
            f"WHEN {scale} > 0 THEN concat({sign}, substr({padded}, 1, length({padded}) - {scale}), '.', "
            f"substr({padded}, length({padded}) - {scale} + 1)) "
            f"WHEN {scale} = 0 THEN concat({sign}, {digits}) "
            f"ELSE concat({sign}, {digits}, repeat('0', -{scale})) END")


def _epoch_to_iso(number: str, unit: str) -> str:
    n = f"try_cast({number} AS BIGINT)"
    ts = {"micros": f"timestamp_micros({n})", "millis": f"timestamp_millis({n})",
          "seconds": f"timestamp_seconds({n})", "nanos": f"timestamp_micros({n} DIV 1000)"}[unit]
    # Beyond year 9999 the conversion would overflow (an ANSI error): such a value does not parse.
    limit = {"micros": 253402300799999999, "millis": 253402300799999, "seconds": 253402300799,
             "nanos": 9223372036854775807}[unit]
    return (f"CASE WHEN {number} RLIKE {_lit(_INTEGER)} AND abs({n}) <= {limit} "
            f"THEN date_format({ts}, {_lit(_ISO)}) END")


_TIME_NAMES = {
    "io.debezium.time.Timestamp": "millis",
    "org.apache.kafka.connect.data.Timestamp": "millis",
    "io.debezium.time.MicroTimestamp": "micros",
    "io.debezium.time.NanoTimestamp": "nanos",
}
_DATE_NAMES = ("io.debezium.time.Date", "org.apache.kafka.connect.data.Date")
_NUMERIC = (T.DecimalType, T.DoubleType, T.FloatType)
_TEMPORAL = (T.TimestampType, T.TimestampNTZType, T.DateType)


def _decode(raw: str, field: str, target: T.DataType, epoch_unit: str) -> str:
    """SQL for one column's canonical text from its JSON text ``raw`` and its field schema ``field``
    (``{field, type, name, parameters.scale}`` from the envelope; null without one)."""
    name = f"{field}.name"
    cases = [f"WHEN {raw} IS NULL OR {raw} = {_lit(UNAVAILABLE)} THEN NULL"]
    if isinstance(target, _NUMERIC):
        variable = (f"{name} = 'io.debezium.data.VariableScaleDecimal' OR ({name} IS NULL AND "
                    f"ltrim({raw}) LIKE '{{%' AND get_json_object({raw}, '$.scale') IS NOT NULL)")
        fixed_scale = f"try_cast({field}.parameters.scale AS INT)"
        var_b64 = f"get_json_object({raw}, '$.value')"
        var_scale = f"try_cast(get_json_object({raw}, '$.scale') AS INT)"
        cases += [
            f"WHEN {name} = 'org.apache.kafka.connect.data.Decimal' THEN {_decimal_text(raw, fixed_scale)}",
            f"WHEN {variable} THEN {_decimal_text(var_b64, var_scale)}",
        ]
    if isinstance(target, _TEMPORAL):
        cases += [f"WHEN {name} = {_lit(n)} THEN {_epoch_to_iso(raw, u)}" for n, u in _TIME_NAMES.items()]
        dates = ", ".join(_lit(n) for n in _DATE_NAMES)
        cases.append(f"WHEN {name} IN ({dates}) THEN CASE WHEN {raw} RLIKE {_lit(_INTEGER)} "
                     f"THEN CAST(date_add(DATE'1970-01-01', try_cast({raw} AS INT)) AS STRING) END")
        cases.append(f"WHEN {name} IS NULL AND {raw} RLIKE {_lit(_INTEGER)} THEN {_epoch_to_iso(raw, epoch_unit)}")
    return "CASE " + " ".join(cases) + f" ELSE {raw} END"


def _parses(value: str, target: T.DataType) -> str:
    """SQL: TRUE when the decoded (non-null) text parses as ``target``."""
    if isinstance(target, T.BooleanType):
        return f"try_cast({value} AS BOOLEAN) IS NOT NULL"
    if isinstance(target, (T.IntegerType, T.LongType, T.ShortType)):
        return f"try_cast({value} AS {target.simpleString().upper()}) IS NOT NULL"
    if isinstance(target, (T.DecimalType, T.DoubleType, T.FloatType)):
        return f"{value} RLIKE {_lit(_NUMBER)}"
    if isinstance(target, (T.TimestampType, T.TimestampNTZType)):
        return f"try_cast({value} AS TIMESTAMP) IS NOT NULL"
    if isinstance(target, T.DateType):
        return f"try_cast({value} AS DATE) IS NOT NULL"
    if isinstance(target, (T.MapType, T.StructType)):
        return f"from_json({value}, 'map<string,string>') IS NOT NULL"
    if isinstance(target, T.ArrayType):
        return f"from_json({value}, 'array<string>') IS NOT NULL"
    return "true"


# -- the event frame ----------------------------------------------------------------------------

# One JSON parse per event: the envelope's schema, the payload and the plain event's fields are all
# declared here (rows as structs of strings: a nested object or number keeps its JSON text).
_SOURCE = "struct<table: string, schema: string, db: string, lsn: string, ts_ms: string>"
_SCHEMA = ("struct<fields: array<struct<field: string, fields: array<struct<field: string, type: string, "
           "name: string, parameters: struct<scale: string>>>>>>")


def _event_fields() -> str:
    row = f"struct<{_row_schema()}>"
    return f"op: string, before: {row}, after: {row}, source: {_SOURCE}, ts_ms: string"


def _top_schema() -> str:
    event = _event_fields()
    return (f"schema {_SCHEMA}, payload struct<{event}>, "
            + ", ".join(f.replace(":", "", 1) for f in _split_top(event)) + ", _corrupt_record string")


def _split_top(fields: str) -> list[str]:
    """Split ``a: t, b: struct<x: u, y: v>`` at its top-level commas."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(fields):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            out.append(fields[start:i].strip())
            start = i + 1
    out.append(fields[start:].strip())
    return out


def _row_schema() -> str:
    return ", ".join(f"{_q(c)} string" for c in _all_columns())


def _table_entity(tables_map: Mapping[str, str]) -> str:
    """SQL: the entity plural for ``source.table`` (or ``schema.table``), null when not configured."""
    known = {ent.plural for ent in ENTITIES}
    unknown = set(tables_map) - known
    if unknown:
        raise ValueError(f"sources.internal.cdc.tables: unknown entity {sorted(unknown)}; known: {sorted(known)}")
    whens = []
    for plural, table in tables_map.items():
        whens.append(f"WHEN _src.table = {_lit(table)} OR concat_ws('.', _src.schema, _src.table) = {_lit(table)} "
                     f"THEN {_lit(plural)}")
    return "CASE " + " ".join(whens) + " END" if whens else "CAST(NULL AS STRING)"


def _parse(events: DataFrame, tables_map: Mapping[str, str]) -> DataFrame:
    """Envelope, op, source and rows of each event (no decoding yet)."""
    opts = "map('columnNameOfCorruptRecord', '_corrupt_record')"
    tomb_env = "value RLIKE " + _lit(r'^\s*\{\s*"schema"\s*:\s*null\s*,\s*"payload"\s*:\s*null\s*\}\s*$')
    top = events.select(
        "*",
        F.expr(f"value IS NULL OR trim(value) = 'null' OR {tomb_env}").alias("_tombstone"),
        F.expr(f"from_json(value, '{_top_schema()}', {opts})").alias("_t"),
    )
    plain = ", ".join(f"'{n}', _t.{n}" for n in ("op", "before", "after", "source", "ts_ms"))
    ev = top.select(
        "*",
        F.expr(f"CASE WHEN _t.payload IS NOT NULL THEN _t.payload ELSE named_struct({plain}) END").alias("_e"),
    ).select(
        "*",
        F.col("_e.source").alias("_src"),
        # The row's field schemas: Debezium declares the same struct for before and after.
        F.expr("coalesce(try_element_at(filter(_t.schema.fields, f -> f.field = 'after'), 1).fields, "
               "try_element_at(filter(_t.schema.fields, f -> f.field = 'before'), 1).fields)").alias("_fields"),
    )
    return ev.select(
        "*",
        F.expr(_table_entity(tables_map)).alias("_plural"),
        F.expr(f"CASE WHEN _e.op IN ({', '.join(map(_lit, UPSERT_OPS))}) THEN 'upsert' "
               "WHEN _e.op = 'd' THEN 'delete' END").alias("_op"),
        F.expr("CASE WHEN _e.op = 'd' THEN _e.before ELSE _e.after END").alias("_row"),
    )


def _entity_case(sql_for: dict[str, str], default: str = "CAST(NULL AS STRING)") -> str:
    """CASE over ``_plural`` (one SQL expression per entity plural)."""
    return "CASE " + " ".join(f"WHEN _plural = {_lit(p)} THEN {s}" for p, s in sql_for.items()) + f" ELSE {default} END"


def _decode_columns(parsed: DataFrame, epoch_unit: str) -> DataFrame:
    """Add the decoded canonical columns (``_v_<c>``), ``_key``, ``_unchanged``, ``_lsn``, ``_ts_ms``
    and the columns whose value does not parse as its silver type (``_bad``)."""
    columns = _all_columns()
    raw = {c: f"_row.{_q(c)}" for c in columns}
    decoded: dict[str, str] = {}
    bad: list[str] = []
    for c in columns:
        field = f"try_element_at(filter(_fields, f -> f.field = {_lit(c)}), 1)"
        per_entity = {e.plural: _decode(raw[c], field, e.type_of(c), epoch_unit) for e in ENTITIES if c in e.columns}
        # One expression when every entity decodes the column alike (the usual case).
        same = len(set(per_entity.values())) == 1 and len(per_entity) == len(ENTITIES)
        decoded[c] = next(iter(per_entity.values())) if same else _entity_case(per_entity)
        fails = {e.plural: f"(_v_{c} IS NULL OR NOT ({_parses(f'_v_{c}', e.type_of(c))}))"
                 for e in ENTITIES if c in e.columns}
        present = f"({raw[c]} IS NOT NULL AND {raw[c]} <> {_lit(UNAVAILABLE)})"
        bad.append(f"CASE WHEN _op = 'upsert' AND {present} AND {_entity_case(fails, 'false')} THEN {_lit(c)} END")
    key = _entity_case({e.plural: f"nullif(trim(_row.{_q(e.key)}), '')" for e in ENTITIES})
    unchanged = {}
    for ent in ENTITIES:
        placeholders = ", ".join(f"CASE WHEN _row.{_q(c)} = {_lit(UNAVAILABLE)} THEN {_lit(c)} END"
                                 for c in ent.columns if c != ent.key)
        untouched = ", ".join(_lit(c) for c in ent.columns if c not in (ent.key, "deleted_at"))
        unchanged[ent.plural] = (f"CASE WHEN _op = 'delete' THEN array({untouched}) "
                                 f"ELSE filter(array({placeholders}), x -> x IS NOT NULL) END")
    values = parsed.select(
        "*",
        *[F.expr(decoded[c]).alias(f"_v_{c}") for c in columns],
        F.expr(key).alias("_key"),
        F.expr(_entity_case(unchanged, "CAST(array() AS ARRAY<STRING>)")).alias("_unchanged"),
        F.expr("try_cast(_src.lsn AS BIGINT)").alias("_lsn"),
        F.expr("coalesce(try_cast(_src.ts_ms AS BIGINT), try_cast(_e.ts_ms AS BIGINT))").alias("_ts_ms"),
    )
    return values.select("*", F.expr(f"filter(array({', '.join(bad)}), x -> x IS NOT NULL)").alias("_bad"))


def _rules() -> list[Rule]:
    """The structural rules, in REASONS_DOC's order; each is guarded by the ones before it, so an event
    gets the one reason that explains it."""
    json_ok = "NOT _tombstone AND _t._corrupt_record IS NULL"
    event_ok = f"{json_ok} AND _e.op IS NOT NULL"
    change = f"{event_ok} AND _op IS NOT NULL"
    known = f"{change} AND _plural IS NOT NULL"
    fails = {
        "malformed_json": "NOT _tombstone AND _t._corrupt_record IS NOT NULL",
        "malformed_event": f"{json_ok} AND _e.op IS NULL",
        "unknown_op": f"{event_ok} AND _op IS NULL AND _e.op NOT IN ({', '.join(map(_lit, SKIPPED_OPS))})",
        "unknown_table": f"{change} AND _plural IS NULL",
        "missing_row": f"{known} AND _row IS NULL",
        "missing_key": f"{known} AND _row IS NOT NULL AND _key IS NULL",
    }
    assert list(fails) == list(REASONS_DOC), "every reason is documented in REASONS_DOC"
    return [Rule(name, sql) for name, sql in fails.items()]


@dataclass(frozen=True)
class CdcChanges:
    """Every event classified and decoded (``flagged``), and what the land stage needs from it.

    ``flagged`` has one row per input event: ``_class`` (change | skip:tombstone | skip:truncate |
    skip:message | quarantined), ``_plural``, ``_key``, ``_reasons``, the decoded canonical columns
    (``_v_<column>``) and the bookkeeping columns. Persist it before calling the methods below (they
    check): each reads it, and the JSON parsing and decoding should run once.
    """

    flagged: DataFrame

    def _persisted(self) -> DataFrame:
        """``flagged``, which must be persisted: a filter on ``_class`` over the unpersisted plan would
        be pushed down into the decoding, repeating every column's decoding in the predicate."""
        level = self.flagged.storageLevel
        if not (level.useMemory or level.useDisk):
            raise ValueError("persist CdcChanges.flagged first (e.g. CacheScope.keep(changes.flagged)): "
                             "every method reads it and filters it by class")
        return self.flagged

    def changes(self, plural: str) -> DataFrame:
        """One row per key of entity ``plural`` (products | prices): the canonical columns as strings,
        then ``_op`` (upsert | delete), ``_lsn``, ``_ts_ms``, ``_event_offset``, ``_event``,
        ``_unchanged`` (columns the row must not overwrite); the last event in source order."""
        ent = _entity(plural)
        rows = self._persisted().filter((F.col("_class") == "change") & (F.col("_plural") == plural))
        payload = [F.col(f"_v_{c}").alias(c) for c in ent.columns]
        deleted_at = f"date_format(timestamp_millis(_ts_ms), {_lit(_ISO)})"
        if "deleted_at" in ent.columns:
            payload[ent.columns.index("deleted_at")] = F.expr(
                f"CASE WHEN _op = 'delete' THEN {deleted_at} ELSE _v_deleted_at END").alias("deleted_at")
        payload[ent.columns.index(ent.key)] = F.col("_key").alias(ent.key)
        for c in ent.columns:  # a delete carries only its key and deleted_at
            if c not in (ent.key, "deleted_at"):
                payload[ent.columns.index(c)] = F.when(F.col("_op") == "upsert", F.col(f"_v_{c}")).alias(c)
        row = F.struct(*payload, F.col("_op"), F.col("_lsn"), F.col("_ts_ms"),
                       F.col("_source_file").alias("_event_offset"), F.col("value").alias("_event"),
                       F.col("_unchanged"))
        order = F.struct(F.col("_lsn"), F.col("_ts_ms"), F.col("_pos"))
        last = rows.groupBy("_key").agg(F.max(F.struct(order.alias("o"), row.alias("r"))).alias("_last"))
        return last.select("_last.r.*").select(*ent.columns, *CHANGE_COLUMNS)

    def quarantine_rows(self, run_id: str) -> DataFrame:
        """The quarantined events as ``gold.quarantine`` rows (stage land, source internal; the record is
        the event as it arrived, ``source_file`` its Kafka offset or file:line)."""
        rejected = self._persisted().filter(F.col("_class") == "quarantined")
        entity = _entity_case({e.plural: _lit(e.entity) for e in ENTITIES}, "'unknown'")
        return quarantine.to_quarantine_rows(
            run_id, rejected.withColumn("_q_entity", F.expr(entity)), stage="land", source="internal",
            entity=F.col("_q_entity"), key_col="_key", record_col="value", source_file_col="_source_file",
        ).select(*tables.QUARANTINE_SCHEMA.fieldNames())

    def counts(self) -> dict[str, int]:
        """One aggregation: ``events = changes + skipped + quarantined``; per entity ``<plural>.changes``
        (events before the reduction), ``<plural>.rows`` (keys after it), ``<plural>.quarantined``;
        ``skipped.tombstone|truncate|message``."""
        aggs = [
            F.count(F.lit(1)).alias("events"),
            F.expr("count_if(_class = 'change')").alias("changes"),
            F.expr("count_if(_class LIKE 'skip:%')").alias("skipped"),
            F.expr("count_if(_class = 'quarantined')").alias("quarantined"),
        ]
        for kind in ("tombstone", *SKIPPED_OPS.values()):
            aggs.append(F.expr(f"count_if(_class = 'skip:{kind}')").alias(f"skipped.{kind}"))
        for ent in ENTITIES:
            p = _lit(ent.plural)
            aggs += [
                F.expr(f"count_if(_class = 'change' AND _plural = {p})").alias(f"{ent.plural}.changes"),
                F.expr(f"count(DISTINCT CASE WHEN _class = 'change' AND _plural = {p} THEN _key END)")
                .alias(f"{ent.plural}.rows"),
                F.expr(f"count_if(_class = 'quarantined' AND _plural = {p})").alias(f"{ent.plural}.quarantined"),
            ]
        row = self._persisted().agg(*aggs).first()
        return {k: int(row[k] or 0) for k in row.asDict()}


def _entity(plural: str) -> CdcEntity:
    for ent in ENTITIES:
        if ent.plural == plural:
            return ent
    raise ValueError(f"unknown CDC entity {plural!r}; known: {[e.plural for e in ENTITIES]}")


def event_position(events: DataFrame) -> Column:
    """The event's place in its input, comparable within one input: (topic or file, partition, offset
    or line)."""
    return F.struct(
        F.coalesce(F.col("topic"), F.col("file")).alias("origin"),
        F.coalesce(F.col("partition"), F.lit(0)).alias("part"),
        F.coalesce(F.col("offset"), F.col("line")).alias("seq"),
    )


def decode_events(events: DataFrame, tables_map: Mapping[str, str], epoch_unit: str = "micros") -> CdcChanges:
    """Classify and decode bronze CDC events (``tables.BRONZE_CDC_EVENTS_SCHEMA`` columns); pure.

    ``tables_map``: entity plural -> Debezium ``source.table`` (``table`` or ``schema.table``).
    ``epoch_unit``: how to read an integer timestamp that has no schema envelope to say its unit.
    """
    if epoch_unit not in EPOCH_UNITS:
        raise ValueError(f"epoch_unit must be one of {EPOCH_UNITS}, got {epoch_unit!r}")
    framed = events.select("*", event_position(events).alias("_pos"))
    decoded = _decode_columns(_parse(framed, tables_map), epoch_unit)
    flagged = quarantine.flag(decoded, _rules())
    wrong = F.transform(F.col("_bad"), lambda c: F.concat(F.lit("wrong_type:"), c))
    skip = " ".join(f"WHEN _e.op = {_lit(op)} THEN 'skip:{kind}'" for op, kind in SKIPPED_OPS.items())
    flagged = flagged.withColumn(REASONS, F.when(F.size(REASONS) > 0, F.col(REASONS)).otherwise(wrong))
    classed = flagged.withColumn("_class", F.expr(
        f"CASE WHEN size({REASONS}) > 0 THEN 'quarantined' WHEN _tombstone THEN 'skip:tombstone' {skip} "
        "ELSE 'change' END"))
    keep = [*KEPT_COLUMNS, *[f"_v_{c}" for c in _all_columns()]]
    return CdcChanges(classed.select(*keep))
