"""Land the internal catalog (products, prices) into bronze and silver Delta tables.

Formats (``sources.internal.format``): parquet, csv (header row; ``metadata`` a JSON string),
delta, jdbc (PostgreSQL; a partitioned read when ``jdbc.partition_column`` and its bounds are set;
the password comes from the environment variable named by ``jdbc.password_env``).

Bronze keeps what arrived: every canonical column as a string (maps/structs as JSON), ``_raw``
(the whole input row as JSON, unknown columns included) and the lineage columns. Silver is typed
per ``tables.SILVER_INTERNAL_*_SCHEMA``, one row per key; bad rows go to ``gold.quarantine``.

Example::

    counts = land_internal(Run.new(spark, cfg))
    counts["prices"]  # {'rows_in': 1000, 'landed': 995, 'quarantined': 5, 'silver_rows': 995}
"""

from __future__ import annotations

import os
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .. import canonical, tables
from ..config import InternalSource
from ..errors import ConfigError, InputError
from ..ledger import Run
from . import formats
from .common import (
    CacheScope,
    EntitySpec,
    bronze_and_count,
    ledger_counts,
    lineage,
    publish,
    read_input,
    write_quarantine,
)

PRODUCTS = EntitySpec(
    entity="product", key="product_id", bronze=tables.BRONZE_INTERNAL_PRODUCTS,
    silver=tables.SILVER_INTERNAL_PRODUCTS, schema=tables.SILVER_INTERNAL_PRODUCTS_SCHEMA,
    canonicalise=canonical.internal_products,
)
PRICES = EntitySpec(
    entity="price", key="price_id", bronze=tables.BRONZE_INTERNAL_PRICES,
    silver=tables.SILVER_INTERNAL_PRICES, schema=tables.SILVER_INTERNAL_PRICES_SCHEMA,
    canonicalise=canonical.internal_prices,
)
CORRUPT = "_corrupt_record"
_COLUMNS = {"product": canonical.INTERNAL_PRODUCT_COLUMNS, "price": canonical.INTERNAL_PRICE_COLUMNS}


def land_internal(run: Run) -> dict[str, Any]:
    """Land products and prices; returns per-entity counts and the paths (or tables) read.

    Raises InputError for a missing path/table, a missing required column, or an empty input
    (unless ``sources.internal.allow_empty``).
    """
    src = run.cfg.sources.internal
    with run.stage("land_internal") as st:
        inputs: dict[str, tuple[DataFrame, str]] = {}
        for entity, plural in (("product", "products"), ("price", "prices")):
            df, where = _read(run, src, plural)
            _check_columns(df, entity, where)
            inputs[plural] = (df, where)
        result: dict[str, Any] = {}
        flagged = {}
        with CacheScope() as cache:
            for plural, spec in (("products", PRODUCTS), ("prices", PRICES)):
                result[plural], flagged[plural] = bronze_and_count(
                    run, spec, _to_bronze(inputs[plural][0], spec.entity), cache)
            for plural in ("products", "prices"):  # checked before silver is touched
                if result[plural]["rows_in"] == 0 and not src.allow_empty:
                    raise InputError(
                        f"internal {plural} input {inputs[plural][1]} is empty: an empty catalog would look like "
                        "'delete everything'. Fix the input, or pass --allow-empty "
                        "(sources.internal.allow_empty=true) if it really is empty."
                    )
            frames = [publish(run, spec, flagged[p], "internal") for p, spec in (("products", PRODUCTS), ("prices", PRICES))]
            write_quarantine(run, "internal", frames)
        st.counts.update(ledger_counts({k: result[k] for k in ("products", "prices")}))
        st.message = f"format={src.format}"
        result["paths"] = {plural: where for plural, (_, where) in inputs.items()}
        result.update({k: st.counts[k] for k in ("rows_in", "landed", "quarantined")})
    return result


def _read(run: Run, src: InternalSource, plural: str) -> tuple[DataFrame, str]:
    """(input frame with lineage columns appended, a description of where it came from)."""
    spark = run.spark
    if src.format == "jdbc":
        return _read_jdbc(run, src, plural)
    path = getattr(src, plural)
    if not path:
        raise InputError(
            f"no internal {plural} path: set sources.internal.{plural} (or pass --{plural} PATH to `recon land internal`)"
        )
    what = f"internal {plural}"
    listing = formats.hadoop_listing(spark, path, what)  # the format follows the path unless given (formats.py)
    fmt = formats.resolve_format(path, src.format, listing, what)
    formats.check_not_empty(path, fmt, listing, what)
    df = read_input(what, path, lambda: formats.read(spark, path, fmt, what, csv=lambda: _read_csv(run, path)))
    file_col = F.lit(path) if fmt == "delta" else F.col("_metadata.file_path")
    return df.select("*", *lineage(run, f"internal:{fmt}", file_col)), path


def _read_csv(run: Run, path: str) -> DataFrame:
    """CSV with a header, every column a string (types are checked per row later), RFC 4180 quoting.

    The header names the columns; a line with more or fewer fields than the header keeps its text
    in ``_corrupt_record`` and is quarantined as ``malformed_row`` instead of being cut or padded.
    """
    opts = {"header": "true", "escape": '"'}
    header = run.spark.read.options(**opts).csv(path).columns
    schema = T.StructType([T.StructField(c, T.StringType()) for c in header]
                          + [T.StructField(CORRUPT, T.StringType())])
    return run.spark.read.options(**opts, mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT).schema(schema).csv(path)


def _read_jdbc(run: Run, src: InternalSource, plural: str) -> tuple[DataFrame, str]:
    j = src.jdbc
    if not j.url:
        raise InputError("sources.internal.format is jdbc but sources.internal.jdbc.url is not set (or pass --jdbc-url)")
    table = j.products_table if plural == "products" else j.prices_table
    url_shown = j.url.split("?", 1)[0]  # never echo query-string credentials
    where = f"{url_shown} table {table}"
    opts = {"url": j.url, "dbtable": table, "driver": j.driver, "fetchsize": str(j.fetch_size)}
    if j.user:
        opts["user"] = j.user
    password = os.environ.get(j.password_env)
    if password:
        opts["password"] = password
    if j.partition_column:
        if j.lower_bound is None or j.upper_bound is None or j.num_partitions is None:
            raise ConfigError(
                "sources.internal.jdbc.partition_column needs lower_bound, upper_bound and num_partitions too"
            )
        opts.update(
            partitionColumn=j.partition_column, lowerBound=str(j.lower_bound),
            upperBound=str(j.upper_bound), numPartitions=str(j.num_partitions),
        )
    try:
        df = run.spark.read.format("jdbc").options(**opts).load()
    except Exception as exc:
        text = str(exc)
        hint = ""
        if "password" in text.lower() or "authentication" in text.lower():
            hint = f" (the password is read from the environment variable {j.password_env})"
        first = next((ln for ln in text.splitlines() if "PSQLException" in ln or "Exception" in ln), text[:300])
        if password:
            first = first.replace(password, "***")
        raise InputError(f"cannot read internal {plural} from {where}: {first.strip(' :')[:500]}{hint}") from None
    return df.select("*", *lineage(run, "internal:jdbc", F.lit(f"{url_shown}/{table}"))), where


def _lower_names(df: DataFrame) -> dict[str, str]:
    """Input columns by lower-cased name (matching is case-insensitive), lineage columns excluded."""
    return {c.lower(): c for c in df.columns if c not in canonical.LINEAGE_COLS and c != CORRUPT}


def _check_columns(df: DataFrame, entity: str, where: str) -> None:
    present = _lower_names(df)
    missing = [c for c in canonical.INTERNAL_REQUIRED[entity] if c not in present]
    if missing:
        raise InputError(
            f"internal {entity} input {where} has no column(s) {', '.join(missing)}; required: "
            f"{', '.join(canonical.INTERNAL_REQUIRED[entity])}; found: {', '.join(sorted(present.values()))}"
        )


def _to_bronze(df: DataFrame, entity: str) -> DataFrame:
    """Every canonical column as a string (absent -> null), ``_raw`` = the input row as JSON, lineage."""
    by_lower = _lower_names(df)
    types = {f.name: f.dataType for f in df.schema.fields}
    cols = []
    for name in _COLUMNS[entity]:
        actual = by_lower.get(name)
        if actual is None:
            cols.append(F.lit(None).cast("string").alias(name))
        elif isinstance(types[actual], (T.MapType, T.StructType, T.ArrayType)):
            cols.append(F.to_json(F.col(f"`{actual}`")).alias(name))
        else:
            cols.append(F.col(f"`{actual}`").cast("string").alias(name))
    raw = F.to_json(F.struct(*[F.col(f"`{c}`") for c in by_lower.values()]))
    if CORRUPT in df.columns:  # a malformed CSV line: keep the line itself as the record
        raw = F.coalesce(F.col(CORRUPT), raw)
    bad = F.col(CORRUPT) if CORRUPT in df.columns else F.lit(None).cast("string")
    return df.select(*cols, raw.alias("_raw"), bad.isNotNull().alias("_malformed"),
                     "_run_id", "_source", "_source_file", "_ingested_at")
