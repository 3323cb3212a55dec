"""Arrived records -> typed, flagged rows, as Spark SQL expressions only (no UDFs, no collect).

Every function here is pure: a frame of records as they arrived in, a *flagged* frame out. The
flagged frame holds the silver columns of ``tables.py`` (typed), ``_reasons`` (array of the names of
the row rules a record breaks, see quarantine.py) and ``_record`` (the record as it arrived, for
``gold.quarantine``). Rules that need more than one row (a repeated key, the latest version of a
Stripe id) are not here: land decides them with narrow aggregations (land/common.py), so no
whole-row window or shuffle is ever needed to flag a record.

Example::

    flagged = internal_prices(arrived_prices)         # arrived: every input column as a string
    valid, rejected = quarantine.split(flagged)

Reason names (gold.quarantine.reasons): ``malformed_row`` (a CSV line with more or fewer fields
than the header; the record is the line), ``null_key``, ``duplicate_key`` (every row of a key that
occurs more than once internally; land), ``malformed_json``, ``not_airbyte_record``, ``unknown_object``,
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
# The entity a Stripe line holds ('product', 'price', or 'unknown' for lines that are neither).
ENTITY = "_entity"

INTERNAL_PRODUCT_COLUMNS = ["product_id", "name", "description", "active", "deleted_at", "tax_code", "metadata", "updated_at"]
INTERNAL_PRICE_COLUMNS = [
    "price_id", "product_id", "currency", "amount", "interval", "interval_count", "active", "nickname", "updated_at",
]
# Columns an internal input must have; every other canonical column may be absent (-> null).
INTERNAL_REQUIRED = {"product": ["product_id"], "price": ["price_id", "product_id", "currency", "amount"]}
INTERVALS = ("day", "week", "month", "year")
# Internal major-unit amounts are parsed at this width first, so sub-minor digits are seen, not rounded.
_WIDE_AMOUNT = "DECIMAL(30,12)"


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


# -- internal side ------------------------------------------------------------------------------


def internal_products(arrived: DataFrame, keep: tuple[str, ...] = ()) -> DataFrame:
    """Type and flag arrived internal products (every canonical column a string, plus ``_raw``);
    ``keep``: columns of ``arrived`` carried through as they are."""
    typed = arrived.select(
        *keep,
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
    )
    rules = [
        Rule("malformed_row", "_malformed"),
        Rule("null_key", "NOT _malformed AND " + _blank("product_id")),
        Rule("wrong_type:active", _wrong_type("_in_active", "active")),
        Rule("wrong_type:deleted_at", _wrong_type("_in_deleted_at", "deleted_at")),
        Rule("wrong_type:updated_at", _wrong_type("_in_updated_at", "updated_at")),
        Rule("wrong_type:metadata", _wrong_type("_in_metadata", "metadata")),
    ]
    return quarantine.flag(typed, rules).drop("_malformed", "_in_active", "_in_deleted_at", "_in_metadata",
                                              "_in_updated_at")


def internal_prices(arrived: DataFrame, keep: tuple[str, ...] = ()) -> DataFrame:
    """Type and flag arrived internal prices; ``unit_amount`` = amount in the currency's minor units;
    ``keep``: columns of ``arrived`` carried through as they are."""
    cur = "lower(currency)"  # not trimmed on purpose: "usd " is not a currency code
    wide = _try("amount", _WIDE_AMOUNT)
    minor = currencies.to_minor_units_expr("_amount_wide", "_currency")
    typed = arrived.select(
        *keep,
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
    return quarantine.flag(typed, rules).drop(
        "_currency", "_amount_wide", "_malformed", "_in_amount", "_in_interval_count", "_in_active",
        "_in_updated_at", "_exponent", "_minor")


# -- Stripe side --------------------------------------------------------------------------------

# The fields read from a Stripe object, products' and prices' together: every line is parsed ONCE,
# whatever it holds. Strings throughout: a field holding another JSON type arrives as its JSON text,
# so a wrong type is seen (and quarantined) instead of nulling the whole record.
_OBJECT_FIELDS = (
    "id", "object", "name", "description", "active", "tax_code", "metadata", "default_price", "livemode",
    "created", "updated", "deleted", "product", "lookup_key", "currency", "unit_amount", "type", "recurring",
    "nickname", "is_deleted",
)
_OBJECT_SCHEMA = ", ".join(f"{f} string" for f in _OBJECT_FIELDS) + ", _corrupt_record string"
_LINE_SCHEMA = (
    ", ".join(f"{f} string" for f in _OBJECT_FIELDS)
    + ", _airbyte_data string, _airbyte_raw_id string, _airbyte_extracted_at string, _airbyte_emitted_at string,"
    " _corrupt_record string"
)
# Typed columns of a parsed Stripe line, both entities (silver columns of either table).
STRIPE_PRODUCT_ONLY = ("name", "description", "tax_code", "default_price", "updated")
STRIPE_PRICE_ONLY = ("product", "lookup_key", "currency", "unit_amount", "type", "interval", "interval_count",
                     "nickname")


def _from_json(col: str, schema: str) -> Column:
    return F.expr(f"from_json({col}, '{schema}', map('columnNameOfCorruptRecord', '_corrupt_record'))")


def _bool_strict(col: str) -> str:
    """A JSON boolean (as text) -> boolean; anything else -> null."""
    return f"CASE lower({col}) WHEN 'true' THEN true WHEN 'false' THEN false END"


def _ref_id(col: str) -> str:
    """A Stripe reference that may be an id string or an expanded object -> the id."""
    return f"CASE WHEN ltrim({col}) LIKE '{{%' THEN get_json_object({col}, '$.id') ELSE {col} END"


def _seconds(col: str) -> str:
    """Unix seconds (as text) -> timestamp; null when not an integer or beyond year 9999, so an absurd
    value is a wrong type instead of an ANSI overflow error that would fail the whole job."""
    return (f"CASE WHEN {_try(col, 'BIGINT')} BETWEEN -62135596800 AND 253402300799 "
            f"THEN timestamp_seconds({_try(col, 'BIGINT')}) END")


def _for(entity: str, rules: list[Rule]) -> list[Rule]:
    """The rules of one entity, applied only to lines holding that entity."""
    return [Rule(r.name, f"{ENTITY} = '{entity}' AND ({r.fails})", r.severity) for r in rules]


def parse_stripe_lines(lines: DataFrame, fmt: str = "auto", keep: tuple[str, ...] = ()) -> DataFrame:
    """Text lines (``value``, lineage) -> one typed, flagged row per line, each line parsed once.

    Each line is an API object (``{"object": "product", ...}``) or an Airbyte raw record whose
    ``_airbyte_data`` holds the object (as nested JSON or as a JSON string); ``fmt`` is auto, jsonl
    or airbyte. Out: ``_entity`` (product, price or unknown), ``id``, ``object``, the typed silver
    columns of both entities (null where they do not apply), ``is_deleted`` (Airbyte's flag, top
    level or inside the data, or the object's ``deleted``), ``raw`` (the object's JSON, or the line
    itself when it holds no object), the Airbyte ids, lineage (``_source`` gets ``:jsonl`` or
    ``:airbyte`` appended), ``_record`` (the line) and ``_reasons``. Objects without an id pass the
    line rules and are flagged ``null_key`` by their entity's rules. Blank lines are dropped before
    this function (they hold no record). ``keep``: columns of ``lines`` carried through as they are.
    """
    is_airbyte = {"auto": "_l._airbyte_data IS NOT NULL", "airbyte": "true", "jsonl": "false"}[fmt]
    plain = "named_struct(" + ", ".join(f"'{f}', _l.{f}" for f in _OBJECT_FIELDS) + ", '_corrupt_record', _l._corrupt_record)"
    line = lines.select("*", _from_json("value", _LINE_SCHEMA).alias("_l"))
    obj = line.select(
        "*",
        F.expr(f"{is_airbyte}").alias("_is_airbyte"),
        F.expr(f"CASE WHEN {is_airbyte} THEN _l._airbyte_data ELSE value END").alias("raw"),
    ).select(
        "*",
        # Airbyte lines parse their object a second time (it may be a JSON string); plain lines reuse _l.
        F.expr(f"CASE WHEN _is_airbyte THEN from_json(raw, '{_OBJECT_SCHEMA}', "
               f"map('columnNameOfCorruptRecord', '_corrupt_record')) ELSE {plain} END").alias("_o"),
    )
    line_bad = ("_l._corrupt_record IS NOT NULL OR (_is_airbyte AND (raw IS NULL OR _o._corrupt_record IS NOT NULL))"
                " OR _o.object IS NULL OR _o.object NOT IN ('product', 'price')")
    o = "_o"
    typed = obj.select(
        *keep,
        F.expr(f"CASE WHEN {line_bad} THEN 'unknown' ELSE _o.object END").alias(ENTITY),
        F.col("_o.id").alias("id"),
        F.col("_o.object").alias("object"),
        # products
        F.col("_o.name").alias("name"),
        F.col("_o.description").alias("description"),
        F.expr(_ref_id("_o.tax_code")).alias("tax_code"),
        F.expr(_ref_id("_o.default_price")).alias("default_price"),
        F.expr(_seconds("_o.updated")).alias("updated"),
        # prices
        F.expr(_ref_id("_o.product")).alias("product"),
        F.col("_o.lookup_key").alias("lookup_key"),
        F.expr("lower(_o.currency)").alias("currency"),
        F.expr(_try("_o.unit_amount", "BIGINT")).alias("unit_amount"),
        F.expr("coalesce(_o.type, CASE WHEN _o.recurring IS NULL THEN 'one_time' ELSE 'recurring' END)").alias("type"),
        F.expr("get_json_object(_o.recurring, '$.interval')").alias("interval"),
        F.expr(_try("get_json_object(_o.recurring, '$.interval_count')", "INT")).alias("interval_count"),
        F.col("_o.nickname").alias("nickname"),
        # both
        F.expr(_bool_strict(f"{o}.active")).alias("active"),
        F.expr(f"from_json({o}.metadata, 'map<string,string>')").alias("metadata"),
        F.expr(_bool_strict(f"{o}.livemode")).alias("livemode"),
        F.expr(_seconds(f"{o}.created")).alias("created"),
        F.expr(
            f"coalesce({_bool_strict('_l.is_deleted')}, {_bool_strict('_o.is_deleted')}, "
            f"{_bool_strict('_o.deleted')}, false)"
        ).alias("is_deleted"),
        F.col("raw"),
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
        F.expr(currencies.exponent_expr("lower(_o.currency)")).alias("_exponent"),
        F.col("_o.active").alias("_in_active"),
        F.col("_o.livemode").alias("_in_livemode"),
        F.col("_o.created").alias("_in_created"),
        F.col("_o.metadata").alias("_in_metadata"),
        F.col("_o.updated").alias("_in_updated"),
        F.col("_o.unit_amount").alias("_in_unit_amount"),
        F.expr("get_json_object(_o.recurring, '$.interval_count')").alias("_in_interval_count"),
    )
    common = [
        Rule("null_key", _blank("id")),
        Rule("wrong_type:active", _wrong_type("_in_active", "active")),
        Rule("wrong_type:livemode", _wrong_type("_in_livemode", "livemode")),
        Rule("wrong_type:created", _wrong_type("_in_created", "created")),
        Rule("wrong_type:metadata", _wrong_type("_in_metadata", "metadata")),
    ]
    rules = [
        Rule("malformed_json", "_line_bad IS NOT NULL OR (_is_airbyte AND raw IS NOT NULL AND _obj_bad IS NOT NULL)"),
        Rule("not_airbyte_record", "_line_bad IS NULL AND _is_airbyte AND raw IS NULL"),
        Rule("unknown_object", "_line_bad IS NULL AND _obj_bad IS NULL AND raw IS NOT NULL "
                               "AND (object IS NULL OR object NOT IN ('product', 'price'))"),
        *_for("product", [*common, Rule("wrong_type:updated", _wrong_type("_in_updated", "updated"))]),
        *_for("price", [
            *common,
            Rule("unknown_currency", "_exponent IS NULL"),
            Rule("wrong_type:unit_amount", _wrong_type("_in_unit_amount", "unit_amount")),
            Rule("negative_amount", "unit_amount < 0"),
            Rule("amount_not_representable", "_exponent = 3 AND pmod(unit_amount, 10) <> 0"),
            Rule("wrong_type:interval_count", _wrong_type("_in_interval_count", "interval_count")),
        ]),
    ]
    return quarantine.flag(typed, rules).drop(
        "_line_bad", "_is_airbyte", "_obj_bad", "_exponent", "_in_active", "_in_livemode", "_in_created",
        "_in_metadata", "_in_updated", "_in_unit_amount", "_in_interval_count")


LINE = "_line"  # bronze.stripe_objects: the line as it arrived, where it is not ``raw`` (Airbyte records)


def bronze_line(df: DataFrame) -> DataFrame:
    """A flagged frame as bronze keeps it: the arriving line only where it differs from ``raw``."""
    line = F.when(~F.col(RECORD).eqNullSafe(F.col("raw")), F.col(RECORD))
    return df.withColumn(LINE, line).drop(RECORD)


def from_bronze_line(df: DataFrame) -> DataFrame:
    """Bronze rows with ``_record`` (the arriving line) restored."""
    return df.withColumn(RECORD, F.coalesce(F.col(LINE), F.col("raw"))).drop(LINE)


def latest_version_order() -> Column:
    """Which version of a Stripe id exported more than once is kept: the greatest of this struct.

    Deleted first (a deleted Stripe object never comes back), then the newest ``updated`` (products;
    prices have none), ``created``, Airbyte ``_airbyte_extracted_at`` (as a timestamp, then as epoch
    seconds), and finally the raw JSON itself, so ties of whole-second timestamps resolve the same
    way whatever the order of files or lines. A null sorts below any value (NULLS LAST)."""
    return F.struct(
        F.col("is_deleted").alias("d"), F.col("updated").alias("u"), F.col("created").alias("c"),
        F.expr("try_cast(_airbyte_extracted_at AS TIMESTAMP)").alias("xt"),
        F.expr("try_cast(_airbyte_extracted_at AS BIGINT)").alias("xs"),
        F.col("raw").alias("r"),
    )
