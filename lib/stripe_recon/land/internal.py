"""Land the internal catalog (products, prices) into bronze and silver Delta tables.

Formats (``sources.internal.format``): parquet, csv (header row; ``metadata`` a JSON string),
delta, jdbc (PostgreSQL; a partitioned read when ``jdbc.partition_column`` and its bounds are set;
the password comes from the environment variable named by ``jdbc.password_env``).

Per entity, one lean pass (land/common.py): the input's records are typed and flagged once (land's
rules and the GX suite's row rules), appended to bronze (typed columns, ``_raw`` = the whole input
row as JSON, unknown columns included, ``_reasons``, ``_suite_reasons``, ``_rh``, lineage; on a
re-landing only new or changed records), then published to silver (one row per key, typed per
``tables.SILVER_INTERNAL_*_SCHEMA``; a re-landing MERGEs only what changed); bad rows go to
``gold.quarantine``. An input identical to the last landing's is not written again.

Example::

    counts = land_internal(Run.new(spark, cfg))
    counts["prices"]  # {'rows_in': 1000, 'landed': 995, 'quarantined': 5, 'silver_rows': 995, ...}
"""

from __future__ import annotations

import os
from typing import Any

from pyspark.sql import DataFrame, Observation
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .. import canonical, records, silver, tables
from ..config import InternalSource
from ..errors import ConfigError, InputError
from ..ledger import Run
from . import csv_lines, formats
from .common import (
    EntitySpec,
    hash_sums,
    held_in_memory,
    landing_spec,
    ledger_counts,
    lineage,
    manifest_of,
    manifest_row,
    new_or_changed,
    publish,
    read_input,
    repeat_landing,
    suite_rules,
    unchanged_since,
    with_suite_reasons,
    write_bronze,
    write_manifest,
    write_quarantine,
)

_PRODUCT_RULES = ("malformed_row", "null_key", "duplicate_key", "wrong_type:active", "wrong_type:deleted_at",
                  "wrong_type:updated_at", "wrong_type:metadata")
_PRICE_RULES = ("malformed_row", "null_key", "duplicate_key", "unknown_currency", "missing_amount", "wrong_type:amount",
                "negative_amount", "amount_not_representable", "amount_out_of_range", "invalid_interval",
                "wrong_type:interval_count", "wrong_type:active", "wrong_type:updated_at")
PRODUCTS = EntitySpec(
    entity="product", side="internal", key="product_id", silver=tables.SILVER_INTERNAL_PRODUCTS,
    schema=tables.SILVER_INTERNAL_PRODUCTS_SCHEMA, suite="internal_products", land_rules=_PRODUCT_RULES,
)
PRICES = EntitySpec(
    entity="price", side="internal", key="price_id", silver=tables.SILVER_INTERNAL_PRICES,
    schema=tables.SILVER_INTERNAL_PRICES_SCHEMA, suite="internal_prices", land_rules=_PRICE_RULES,
)
SPECS = {"products": PRODUCTS, "prices": PRICES}
BRONZE = {"products": tables.BRONZE_INTERNAL_PRODUCTS, "prices": tables.BRONZE_INTERNAL_PRICES}
CANONICALISE = {"products": canonical.internal_products, "prices": canonical.internal_prices}
CORRUPT = "_corrupt_record"
#: Spark's CSV reader options for RFC 4180 (docs/internals.md, "CSV").
CSV_OPTIONS = {"header": "true", "multiLine": "true", "quote": '"', "escape": '"'}
_COLUMNS = {"product": canonical.INTERNAL_PRODUCT_COLUMNS, "price": canonical.INTERNAL_PRICE_COLUMNS}


def land_internal(run: Run) -> dict[str, Any]:
    """Land products and prices; returns per-entity counts and the paths (or tables) read.

    Raises InputError for a missing path/table, a missing required column, or an empty input
    (unless ``sources.internal.allow_empty``).
    """
    src = run.cfg.sources.internal
    spark = run.spark
    with run.stage("land_internal") as st:
        inputs: dict[str, tuple[DataFrame, str]] = {}
        absent: dict[str, list[str]] = {}
        for entity, plural in (("product", "products"), ("price", "prices")):
            df, where = _read(run, src, plural)
            _check_columns(df, entity, where)
            inputs[plural] = (df, where)
            absent[plural] = absent_columns(df, entity)
        # Recorded with the silver commit: detect leaves their attributes uncompared (silver.absent_columns).
        missing = [f"{p}.{c}" for p, cols in absent.items() for c in cols]
        without = f"; not in the input (landed as null): {', '.join(missing)}" if missing else ""
        arrived = {p: _arrived(df, SPECS[p].entity) for p, (df, _) in inputs.items()}
        files = {p: _files(df, where) for p, (df, where) in inputs.items()}
        spec_id = landing_spec(run, list(SPECS.values()), {"side": "internal"})
        commits = {s.silver: tables.last_commit(spark, run.cfg, s.silver)[1] for s in SPECS.values()}

        # 1. unchanged? (only when there is a silver to compare with)
        manifests: dict[str, dict] = {}
        if all(commits.values()):
            manifests = {p: manifest_of(arrived[p], F.col(silver.RAW_HASH)) for p in SPECS}
            same = [unchanged_since(run, [s], manifests[p], spec_id, commits) for p, s in SPECS.items()]
            if all(same) and same[0].run_id == same[1].run_id:
                _check_not_empty(src, inputs, manifests)
                result = repeat_landing(run, "internal", same[0].run_id, manifests, files)
                st.counts.update(ledger_counts(result))
                st.message = f"format={src.format}{without}; unchanged since run {same[0].run_id}: nothing written"
                return {**result, "paths": {p: w for p, (_, w) in inputs.items()}, "unchanged_since": same[0].run_id,
                        **{k: st.counts[k] for k in ("rows_in", "landed", "quarantined")}}

        # 2. bronze: typed, flagged, new or changed records only
        flagged: dict[str, DataFrame] = {}
        in_memory = held_in_memory(run, list(SPECS.values()))  # a small re-landing: see common.py
        full_bronze: dict[str, bool] = {}
        bronze_rows: dict[str, int] = {}
        for plural, spec in SPECS.items():
            flagged[plural] = _flagged(run, plural, arrived[plural])
            if in_memory:
                flagged[plural] = st.hold(flagged[plural])
            seen = Observation()
            observed = flagged[plural].observe(seen, F.count(F.lit(1)).alias("rows"), *hash_sums(F.col(silver.RAW_HASH)))
            fresh = new_or_changed(run, observed, [spec.silver])
            full_bronze[plural] = fresh is observed
            appended = Observation()
            write_bronze(run, BRONZE[plural], _bronze_columns(fresh.observe(appended, F.count(F.lit(1)).alias("n"))))
            got = seen.get
            manifests.setdefault(plural, {"rows": int(got["rows"]), "h_lo": int(got["h_lo"] or 0),
                                          "h_hi": int(got["h_hi"] or 0)})
            bronze_rows[plural] = int(appended.get.get("n") or 0)
        _check_not_empty(src, inputs, manifests)  # before silver is touched

        # 3. silver, 4. quarantine
        result: dict[str, Any] = {}
        rejected: list[DataFrame] = []
        manifest_rows: list[dict[str, Any]] = []
        frames = records.SmallFrames()
        try:
            for plural, spec in SPECS.items():
                source = _bronze_of_run(run, plural) if full_bronze[plural] else flagged[plural]
                landing = silver.Landing(spec=spec_id, run_id=run.run_id, input=manifests[plural],
                                         absent_columns=tuple(absent[plural]))
                pub = publish(run, spec, source, [r.name for r in suite_rules(run, spec)], frames, landing=landing,
                              in_memory=in_memory)
                result[plural] = pub.counts
                if pub.rejected is not None:
                    malformed = pub.details["land_failed"].get(csv_lines.REASON)
                    rejected.append(csv_lines.with_line_numbers(run.spark, pub.rejected) if malformed else pub.rejected)
                manifest_rows.append(manifest_row(run, "internal", plural, files[plural], manifests[plural],
                                                  bronze_rows[plural], pub.counts, pub.details))
        finally:
            frames.release()
        write_quarantine(run, "internal", rejected)
        write_manifest(run, "internal", manifest_rows)
        st.counts.update(ledger_counts({k: result[k] for k in ("products", "prices")}))
        st.message = f"format={src.format}{without}"
        result["paths"] = {plural: where for plural, (_, where) in inputs.items()}
        result.update({k: st.counts[k] for k in ("rows_in", "landed", "quarantined")})
    return result


def _check_not_empty(src: InternalSource, inputs: dict[str, tuple[DataFrame, str]], manifests: dict[str, dict]) -> None:
    for plural in SPECS:
        if manifests[plural]["rows"] == 0 and not src.allow_empty:
            raise InputError(
                f"internal {plural} input {inputs[plural][1]} is empty: an empty catalog would look like "
                "'delete everything'. Fix the input, or pass --allow-empty "
                "(sources.internal.allow_empty=true) if it really is empty."
            )


def _files(df: DataFrame, where: str) -> list[str]:
    """The input's files (metadata from the scan, no row data), or where a table was read from."""
    try:
        return sorted(df.inputFiles())[:10_000]
    except Exception:  # a JDBC relation has no files
        return [where]


def _flagged(run: Run, plural: str, arrived: DataFrame) -> DataFrame:
    """Typed records flagged by land's rules and the suite's row rules, with their raw hash."""
    flagged = CANONICALISE[plural](arrived, keep=(silver.RAW_HASH,))
    return with_suite_reasons(flagged, {SPECS[plural].entity: suite_rules(run, SPECS[plural])})


def _bronze_columns(flagged: DataFrame) -> DataFrame:
    """What bronze keeps of a flagged record: typed columns, the input row as JSON, the verdicts."""
    keep = [c for c in flagged.columns if c not in (canonical.RECORD,)]
    return flagged.select(*[F.col(f"`{c}`") for c in keep], F.col(canonical.RECORD).alias("_raw"))


def _bronze_of_run(run: Run, plural: str) -> DataFrame:
    """This run's bronze records, shaped as the flagged frame :func:`common.publish` reads."""
    b = tables.read(run.spark, run.cfg, BRONZE[plural]).where(F.col("_run_id") == run.run_id)
    return b.withColumnRenamed("_raw", canonical.RECORD)


def _arrived(df: DataFrame, entity: str) -> DataFrame:
    """Every canonical column as it arrived, under its canonical name (absent -> a null string; a
    struct or array -> its JSON text), ``_raw`` = the input row as JSON, ``_malformed``, ``_rh``
    (hash of every input value), lineage. Typed inputs keep their types: canonical types them without
    a round trip through text."""
    by_lower = _lower_names(df)
    types = {f.name: f.dataType for f in df.schema.fields}
    cols = []
    for name in _COLUMNS[entity]:
        actual = by_lower.get(name)
        if actual is None:
            cols.append(F.lit(None).cast("string").alias(name))
        elif isinstance(types[actual], (T.StructType, T.ArrayType)) or (
                isinstance(types[actual], T.MapType) and name != "metadata"):
            cols.append(F.to_json(F.col(f"`{actual}`")).alias(name))
        else:
            cols.append(F.col(f"`{actual}`").alias(name))
    inputs = list(by_lower.values()) + ([CORRUPT] if CORRUPT in df.columns else [])
    raw = F.to_json(F.struct(*[F.col(f"`{c}`") for c in by_lower.values()]))
    if CORRUPT in df.columns:  # a malformed CSV line: keep the line itself as the record
        raw = F.coalesce(F.col(CORRUPT), raw)
    bad = F.col(CORRUPT) if CORRUPT in df.columns else F.lit(None).cast("string")
    rh = silver.row_hash([silver.hashable(df, c) for c in inputs])
    return df.select(*cols, raw.alias("_raw"), bad.isNotNull().alias("_malformed"), rh.alias(silver.RAW_HASH),
                     "_run_id", "_source", "_source_file", "_ingested_at")


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
    """CSV per RFC 4180 with a header, every column a string (types are checked per row later).

    ``multiLine``: a quoted value may hold commas, doubled quotes and line breaks (a line break inside
    a quoted value arrives as ``\\n``, CRLF included), so a record is a row, not a physical line; a
    file is then read by one task (Spark cannot split it; at 1M records it was no slower than the
    line reader's four tasks, docs/internals.md). A UTF-8 byte-order mark and CRLF line ends are read as such. A record with more or fewer fields
    than the header (an unterminated quote swallows what follows it into one such record) keeps its
    text in ``_corrupt_record`` and is quarantined as ``malformed_row`` instead of being cut or padded
    (land/csv_lines.py then adds the line the record starts on to its reason).
    """
    header = run.spark.read.options(**CSV_OPTIONS).csv(path).columns
    schema = T.StructType([T.StructField(c, T.StringType()) for c in header]
                          + [T.StructField(CORRUPT, T.StringType())])
    return run.spark.read.options(**CSV_OPTIONS, mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT).schema(schema).csv(path)


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


def absent_columns(df: DataFrame, entity: str) -> list[str]:
    """The canonical columns of ``entity`` the input does not have (each optional one lands as null)."""
    present = _lower_names(df)
    return [c for c in _COLUMNS[entity] if c not in present]


def _check_columns(df: DataFrame, entity: str, where: str) -> None:
    present = _lower_names(df)
    missing = [c for c in canonical.INTERNAL_REQUIRED[entity] if c not in present]
    if missing:
        raise InputError(
            f"internal {entity} input {where} has no column(s) {', '.join(missing)}; required: "
            f"{', '.join(canonical.INTERNAL_REQUIRED[entity])}; found: {', '.join(sorted(present.values()))}"
        )


