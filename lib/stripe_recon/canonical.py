"""Bronze -> silver normalisation of both sides, as Spark SQL expressions only (no UDFs, no collect).

Every function here is pure: a bronze frame in, a *flagged* frame out. The flagged frame holds the
silver columns of ``tables.py`` plus ``_reasons`` (array of broken rule names, see quarantine.py) and
``_record`` (the row as it arrived, for ``gold.quarantine``). The land stage splits it into silver
rows and quarantined rows, so ``input rows = landed + quarantined`` by construction.

Example::

    flagged = internal_prices(bronze_prices)          # bronze: every input column as a string
    valid, rejected = quarantine.split(flagged)
    silver = valid.select(*silver_columns(tables.SILVER_INTERNAL_PRICES_SCHEMA))

Reason names (gold.quarantine.reasons): ``malformed_row`` (a CSV line with more or fewer fields
than the header; the record is the line), ``null_key``, ``duplicate_key`` (every row of a key that
occurs more than once internally), ``malformed_json``, ``not_airbyte_record``, ``unknown_object``,
``unknown_currency`` (the code lower-cased, NOT trimmed, must be in currencies.EXPONENTS),
``missing_amount``, ``negative_amount``, ``amount_not_representable`` (not a whole number of minor
units, or a three-decimal currency whose last minor digit is not 0, which Stripe rejects),
``amount_out_of_range`` (minor units do not fit a long), ``invalid_interval`` and
``wrong_type:<column>`` (a value that does not parse as the column's type; blank counts as null).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import currencies, quarantine
from .quarantine import Rule

LINEAGE_COLS = ["_run_id", "_source", "_source_file", "_ingested_at"]
RECORD = "_record"

INTERNAL_PRODUCT_COLUMNS = ["product_id", "name", "description", "active", "deleted_at", "tax_code", "metadata", "updated_at"]
INTERNAL_PRICE_COLUMNS = [
    "price_id", "product_id", "currency", "amount", "interval", "interval_count", "active", "nickname", "updated_at",
]
# Columns an internal input must have; every other canonical column may be absent (-> null).
INTERNAL_REQUIRED = {"product": ["product_id"], "price": ["price_id", "product_id", "currency", "amount"]}
INTERVALS = ("day", "week", "month", "year")
# Internal major-unit amounts are parsed at this width first, so sub-minor digits are seen, not rounded.
_WIDE_AMOUNT = "DECIMAL(30,12)"
# Bronze columns of the Stripe side (one table per object type).
STRIPE_BRONZE_COLUMNS = ["id", "object", "raw", "is_deleted", "_airbyte_raw_id", "_airbyte_extracted_at", *LINEAGE_COLS]


def silver_columns(schema: T.StructType) -> list[Column]:
    """Select list that casts a flagged frame to a silver schema, in the schema's column order."""
    return [F.col(f"`{f.name}`").cast(f.dataType).alias(f.name) for f in schema.fields]


def _blank(col: str) -> str:
    return f"({col} IS NULL OR trim({col}) = '')"


def _try(col: str, sql_type: str) -> str:
    """try_cast of a string column, blank -> null (Spark 4 ANSI and Spark 3.5 behave the same)."""
    return f"try_cast(nullif(trim({col}), '') AS {sql_type})"


def _wrong_type(raw_col: str, parsed_col: str) -> str:
    return f"(NOT {_blank(raw_col)} AND {parsed_col} IS NULL)"


def _flag(df: DataFrame, rules: list[Rule]) -> DataFrame:
    return quarantine.flag(df, rules)


# -- internal side ------------------------------------------------------------------------------


def internal_products(bronze: DataFrame) -> DataFrame:
    """Flag and type bronze internal products (every canonical column a string, plus ``_raw``)."""
    typed = bronze.select(
        F.col("product_id"),
        F.col("name"),
        F.col("description"),
        F.expr(_try("active", "BOOLEAN")).alias("active"),
        F.expr(_try("deleted_at", "TIMESTAMP")).alias("deleted_at"),
        F.col("tax_code"),
        F.expr("from_json(metadata, 'map<string,string>')").alias("metadata"),
        F.expr(_try("updated_at", "TIMESTAMP")).alias("updated_at"),
        *LINEAGE_COLS,
        F.col("_raw").alias(RECORD),
        F.coalesce(F.col("_malformed"), F.lit(False)).alias("_malformed"),
        F.col("active").alias("_in_active"),
        F.col("deleted_at").alias("_in_deleted_at"),
        F.col("metadata").alias("_in_metadata"),
        F.col("updated_at").alias("_in_updated_at"),
        F.expr("count(1) OVER (PARTITION BY product_id)").alias("_key_count"),
    )
    rules = [
        Rule("malformed_row", "_malformed"),
        Rule("null_key", "NOT _malformed AND " + _blank("product_id")),
        Rule("duplicate_key", "product_id IS NOT NULL AND _key_count > 1"),
        Rule("wrong_type:active", _wrong_type("_in_active", "active")),
        Rule("wrong_type:deleted_at", _wrong_type("_in_deleted_at", "deleted_at")),
        Rule("wrong_type:updated_at", _wrong_type("_in_updated_at", "updated_at")),
        Rule("wrong_type:metadata", _wrong_type("_in_metadata", "metadata")),
    ]
    return _flag(typed, rules)


def internal_prices(bronze: DataFrame) -> DataFrame:
    """Flag and type bronze internal prices; ``unit_amount`` = amount in the currency's minor units."""
    cur = "lower(currency)"  # not trimmed on purpose: "usd " is not a currency code
    wide = _try("amount", _WIDE_AMOUNT)
    minor = currencies.to_minor_units_expr("_amount_wide", "_currency")
    typed = bronze.select(
        F.col("price_id"),
        F.col("product_id"),
        F.expr(cur).alias("_currency"),
        F.expr(wide).alias("_amount_wide"),
        F.col("interval"),
        F.expr(_try("interval_count", "INT")).alias("interval_count"),
        F.expr(_try("active", "BOOLEAN")).alias("active"),
        F.col("nickname"),
        F.expr(_try("updated_at", "TIMESTAMP")).alias("updated_at"),
        *LINEAGE_COLS,
        F.col("_raw").alias(RECORD),
        F.coalesce(F.col("_malformed"), F.lit(False)).alias("_malformed"),
        F.col("amount").alias("_in_amount"),
        F.col("interval_count").alias("_in_interval_count"),
        F.col("active").alias("_in_active"),
        F.col("updated_at").alias("_in_updated_at"),
        F.expr("count(1) OVER (PARTITION BY price_id)").alias("_key_count"),
    ).select(
        "*",
        F.col("_currency").alias("currency"),
        F.expr("try_cast(_amount_wide AS DECIMAL(24,6))").alias("amount"),
        F.expr(currencies.exponent_expr("_currency")).alias("_exponent"),
        F.expr(minor).alias("_minor"),
    ).withColumns({"unit_amount": F.expr("CASE WHEN _minor = floor(_minor) THEN try_cast(_minor AS BIGINT) END")})
    rules = [
        Rule("malformed_row", "_malformed"),
        Rule("null_key", "NOT _malformed AND " + _blank("price_id")),
        Rule("duplicate_key", "price_id IS NOT NULL AND _key_count > 1"),
        Rule("unknown_currency", "_exponent IS NULL"),
        Rule("missing_amount", _blank("_in_amount")),
        Rule("wrong_type:amount", _wrong_type("_in_amount", "_amount_wide")),
        Rule("negative_amount", "_amount_wide < 0"),
        Rule("amount_not_representable", "_minor <> floor(_minor) OR (_exponent = 3 AND pmod(_minor, 10) <> 0)"),
        Rule("amount_out_of_range", "_minor = floor(_minor) AND unit_amount IS NULL"),
        Rule("invalid_interval", f"NOT {_blank('interval')} AND lower(trim(interval)) NOT IN {INTERVALS!r}"),
        Rule("wrong_type:interval_count", _wrong_type("_in_interval_count", "interval_count")),
        Rule("wrong_type:active", _wrong_type("_in_active", "active")),
        Rule("wrong_type:updated_at", _wrong_type("_in_updated_at", "updated_at")),
    ]
    return _flag(typed, rules)


# -- Stripe side --------------------------------------------------------------------------------

_LINE_SCHEMA = (
    "id string, object string, _airbyte_data string, _airbyte_raw_id string, _airbyte_extracted_at string, "
    "_airbyte_emitted_at string, is_deleted string, _corrupt_record string"
)
_OBJECT_SCHEMA = "id string, object string, is_deleted string, _corrupt_record string"


def _from_json(col: str, schema: str) -> Column:
    return F.expr(f"from_json({col}, '{schema}', map('columnNameOfCorruptRecord', '_corrupt_record'))")


def _bool_strict(col: str) -> str:
    """A JSON boolean (as text) -> boolean; anything else -> null."""
    return f"CASE lower({col}) WHEN 'true' THEN true WHEN 'false' THEN false END"


def _ref_id(col: str) -> str:
    """A Stripe reference that may be an id string or an expanded object -> the id."""
    return f"CASE WHEN ltrim({col}) LIKE '{{%' THEN get_json_object({col}, '$.id') ELSE {col} END"


def parse_stripe_lines(lines: DataFrame, fmt: str = "auto") -> DataFrame:
    """Text lines (``value``, ``_source_file``, lineage) -> one row per line with the object's JSON.

    Each line is an API object (``{"object": "product", ...}``) or an Airbyte raw record whose
    ``_airbyte_data`` holds the object (as nested JSON or as a JSON string); ``fmt`` is auto, jsonl
    or airbyte. Out: ``id``, ``object``, ``raw`` (the object's JSON, or the line itself when it is
    not JSON), ``is_deleted`` (Airbyte's flag, top level or inside the data), the Airbyte ids,
    lineage (``_source`` gets ``:jsonl`` or ``:airbyte`` appended), ``_record`` (the line) and
    ``_reasons`` (malformed_json, not_airbyte_record, unknown_object). Objects without an id pass:
    bronze keeps them and the entity step quarantines them as null_key. Blank lines are dropped
    before this function (they hold no record).
    """
    line = lines.select("*", _from_json("value", _LINE_SCHEMA).alias("_l"))
    is_airbyte = {"auto": "_l._airbyte_data IS NOT NULL", "airbyte": "true", "jsonl": "false"}[fmt]
    obj = line.select(
        "*",
        F.expr(f"CASE WHEN {is_airbyte} THEN _l._airbyte_data ELSE value END").alias("raw"),
        F.expr(f"{is_airbyte}").alias("_is_airbyte"),
    ).select("*", _from_json("raw", _OBJECT_SCHEMA).alias("_o"))
    out = obj.select(
        F.col("_o.id").alias("id"),
        F.col("_o.object").alias("object"),
        F.col("raw"),
        F.expr(
            f"coalesce({_bool_strict('_l.is_deleted')}, {_bool_strict('_o.is_deleted')}, "
            "CASE WHEN _is_airbyte THEN false END)"
        ).alias("is_deleted"),
        F.col("_l._airbyte_raw_id").alias("_airbyte_raw_id"),
        F.expr("coalesce(_l._airbyte_extracted_at, _l._airbyte_emitted_at)").alias("_airbyte_extracted_at"),
        F.col("_run_id"),
        F.expr("concat(_source, CASE WHEN _is_airbyte THEN ':airbyte' ELSE ':jsonl' END)").alias("_source"),
        F.col("_source_file"),
        F.col("_ingested_at"),
        F.col("value").alias(RECORD),
        F.col("_l._corrupt_record").alias("_line_bad"),
        F.col("_is_airbyte"),
        F.col("_o._corrupt_record").alias("_obj_bad"),
    )
    rules = [
        Rule("malformed_json", "_line_bad IS NOT NULL OR (_is_airbyte AND raw IS NOT NULL AND _obj_bad IS NOT NULL)"),
        Rule("not_airbyte_record", "_line_bad IS NULL AND _is_airbyte AND raw IS NULL"),
        Rule("unknown_object", "_line_bad IS NULL AND _obj_bad IS NULL AND raw IS NOT NULL "
                               "AND (object IS NULL OR object NOT IN ('product', 'price'))"),
    ]
    return _flag(out, rules).drop("_line_bad", "_obj_bad", "_is_airbyte")


_PRODUCT_SCHEMA = (
    "id string, name string, description string, active string, tax_code string, metadata string, "
    "default_price string, livemode string, created string, updated string, deleted string"
)
_PRICE_SCHEMA = (
    "id string, product string, lookup_key string, currency string, unit_amount string, type string, "
    "recurring string, active string, nickname string, metadata string, livemode string, created string, "
    "deleted string"
)


def _seconds(col: str) -> str:
    """Unix seconds (as text) -> timestamp; null when not an integer or beyond year 9999, so an absurd
    value is a wrong type instead of an ANSI overflow error that would fail the whole job."""
    return (f"CASE WHEN {_try(col, 'BIGINT')} BETWEEN -62135596800 AND 253402300799 "
            f"THEN timestamp_seconds({_try(col, 'BIGINT')}) END")


def _stripe_common(o: str) -> dict[str, Column]:
    return {
        "active": F.expr(_bool_strict(f"{o}.active")),
        "metadata": F.expr(f"from_json({o}.metadata, 'map<string,string>')"),
        "livemode": F.expr(_bool_strict(f"{o}.livemode")),
        "created": F.expr(_seconds(f"{o}.created")),
        "is_deleted": F.expr(f"coalesce(is_deleted, {_bool_strict(f'{o}.deleted')}, false)"),
    }


def _stripe_common_rules(o: str) -> list[Rule]:
    return [
        Rule("null_key", _blank("id")),
        Rule("wrong_type:active", _wrong_type(f"{o}.active", "active")),
        Rule("wrong_type:livemode", _wrong_type(f"{o}.livemode", "livemode")),
        Rule("wrong_type:created", _wrong_type(f"{o}.created", "created")),
        Rule("wrong_type:metadata", _wrong_type(f"{o}.metadata", "metadata")),
    ]


def stripe_products(bronze: DataFrame) -> DataFrame:
    """Flag and type bronze Stripe products (``raw`` = the object JSON); one row per input row."""
    o = bronze.select("*", F.expr(f"from_json(raw, '{_PRODUCT_SCHEMA}')").alias("_o"))
    typed = o.select(
        "id",
        F.col("_o.name").alias("name"),
        F.col("_o.description").alias("description"),
        F.expr(_ref_id("_o.tax_code")).alias("tax_code"),
        F.expr(_ref_id("_o.default_price")).alias("default_price"),
        F.expr(_seconds("_o.updated")).alias("updated"),
        *[c.alias(n) for n, c in _stripe_common("_o").items()],
        "raw",
        *LINEAGE_COLS,
        F.col("_airbyte_extracted_at"),
        F.col("raw").alias(RECORD),
        "_o",
    )
    rules = [*_stripe_common_rules("_o"), Rule("wrong_type:updated", _wrong_type("_o.updated", "updated"))]
    return _flag(typed, rules)


def stripe_prices(bronze: DataFrame) -> DataFrame:
    """Flag and type bronze Stripe prices: currency known, unit_amount a long of valid minor units."""
    o = bronze.select("*", F.expr(f"from_json(raw, '{_PRICE_SCHEMA}')").alias("_o"))
    typed = o.select(
        "id",
        F.expr(_ref_id("_o.product")).alias("product"),
        F.col("_o.lookup_key").alias("lookup_key"),
        F.expr("lower(_o.currency)").alias("currency"),
        F.expr(_try("_o.unit_amount", "BIGINT")).alias("unit_amount"),
        F.expr("coalesce(_o.type, CASE WHEN _o.recurring IS NULL THEN 'one_time' ELSE 'recurring' END)").alias("type"),
        F.expr("get_json_object(_o.recurring, '$.interval')").alias("interval"),
        F.expr(_try("get_json_object(_o.recurring, '$.interval_count')", "INT")).alias("interval_count"),
        F.col("_o.nickname").alias("nickname"),
        *[c.alias(n) for n, c in _stripe_common("_o").items()],
        "raw",
        *LINEAGE_COLS,
        F.col("_airbyte_extracted_at"),
        F.col("raw").alias(RECORD),
        F.expr(currencies.exponent_expr("lower(_o.currency)")).alias("_exponent"),
        "_o",
    )
    rules = [
        *_stripe_common_rules("_o"),
        Rule("unknown_currency", "_exponent IS NULL"),
        Rule("wrong_type:unit_amount", _wrong_type("_o.unit_amount", "unit_amount")),
        Rule("negative_amount", "unit_amount < 0"),
        Rule("amount_not_representable", "_exponent = 3 AND pmod(unit_amount, 10) <> 0"),
        Rule("wrong_type:interval_count",
             _wrong_type("get_json_object(_o.recurring, '$.interval_count')", "interval_count")),
    ]
    return _flag(typed, rules)


def latest_per_id(valid: DataFrame) -> DataFrame:
    """One row per Stripe ``id``: the latest version, chosen deterministically.

    Order: deleted first (a deleted Stripe object never comes back), then the newest ``updated``
    (products only; prices have none), ``created``, Airbyte ``_airbyte_extracted_at``, and finally
    the raw JSON itself, so ties of whole-second timestamps resolve the same way whatever the
    order of files or lines.
    """
    updated = "updated DESC NULLS LAST, " if "updated" in valid.columns else ""
    order = (
        f"is_deleted DESC, {updated}created DESC NULLS LAST, "
        "try_cast(_airbyte_extracted_at AS TIMESTAMP) DESC NULLS LAST, "
        "try_cast(_airbyte_extracted_at AS BIGINT) DESC NULLS LAST, raw DESC"
    )
    return (
        valid.withColumns({"_rank": F.expr(f"row_number() OVER (PARTITION BY id ORDER BY {order})")})
        .filter("_rank = 1")
        .drop("_rank")
    )
