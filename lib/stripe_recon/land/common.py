"""What both landing sides share: input path checks, bronze writes, bronze -> silver + quarantine.

The flow of one entity (products or prices of one side)::

    input --to bronze--> bronze.<side>_<entity>   (replaceWhere _run_id = this run: re-landing the
                                                   same run never duplicates bronze rows)
    bronze rows of this run --canonical.*--> flagged (silver columns + _reasons)
        valid   -> silver.<side>_<entity>          (overwritten: silver is the latest snapshot; with detect's
                                                   fingerprint _fp and mapped key _key, see detect.py)
        invalid -> gold.quarantine                 (replaceWhere run_id/stage/source: idempotent too)

Counts come from one aggregation over the flagged frame, so ``rows_in = landed + quarantined``.

The flagged frame is computed once per entity and kept (memory, spilling to disk) until the stage's
quarantine write: the count, the silver write and the quarantine write read it instead of parsing and
checking bronze three times (JSON parsing and the duplicate-key window are most of land's cost). Only
what those three writes need is kept: the silver columns, ``_reasons`` and, for rejected rows only,
the record as it arrived.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .. import canonical, quarantine, tables
from ..detect import silver_with_fingerprint
from ..errors import InputError
from ..ledger import Run


@dataclass(frozen=True)
class EntitySpec:
    """How one entity of one side lands."""

    entity: str  # product | price (gold.quarantine.entity)
    key: str  # silver key column
    bronze: str  # bronze table name
    silver: str  # silver table name
    schema: T.StructType  # silver schema
    canonicalise: Callable[[DataFrame], DataFrame]  # bronze -> flagged
    dedup: Callable[[DataFrame], DataFrame] | None = None  # valid rows -> one row per key


class CacheScope:
    """Frames persisted for one landing stage, unpersisted when the ``with`` block ends (error or not)."""

    def __init__(self) -> None:
        self.frames: list[DataFrame] = []

    def keep(self, df: DataFrame) -> DataFrame:
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        self.frames.append(df)
        return df

    def __enter__(self) -> CacheScope:
        return self

    def __exit__(self, *exc: object) -> None:
        for df in self.frames:
            df.unpersist()
        self.frames.clear()


def sql_str(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_path(spark: SparkSession, path: str, what: str) -> None:
    """Raise InputError naming ``path`` when nothing exists there (file, folder, glob, Hadoop URI).

    Uses the Hadoop FileSystem of the driver (metadata only). Where no JVM is reachable (Spark
    Connect) the check is skipped and the reader's own error is translated by :func:`read_input`.
    """
    jvm = getattr(spark, "_jvm", None)
    if jvm is None:
        return
    try:
        hpath = jvm.org.apache.hadoop.fs.Path(path)
        fs = hpath.getFileSystem(spark._jsc.hadoopConfiguration())
        found = fs.globStatus(hpath)
    except Exception as exc:  # bad URI scheme, missing credentials: say which path
        raise InputError(f"{what} path {path} cannot be opened: {_first_line(exc)}") from None
    if found is None or len(found) == 0:
        raise InputError(f"{what} path {path} does not exist: check the path (or the config key that sets it)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:500] if text else type(exc).__name__


def read_input(what: str, path: str, read: Callable[[], DataFrame]) -> DataFrame:
    """Run a reader; turn 'path does not exist' style failures into an InputError naming the path."""
    try:
        return read()
    except InputError:
        raise
    except Exception as exc:
        msg = str(exc)
        if "PATH_NOT_FOUND" in msg or "does not exist" in msg or "is not a Delta table" in msg:
            raise InputError(f"{what} path {path} does not exist or is not readable: {_first_line(exc)}") from None
        raise


def lineage(run: Run, source: str, source_file: F.Column) -> list[F.Column]:
    return [
        F.lit(run.run_id).alias("_run_id"),
        F.lit(source).alias("_source"),
        source_file.cast("string").alias("_source_file"),
        F.current_timestamp().alias("_ingested_at"),
    ]


def write_bronze(run: Run, name: str, df: DataFrame) -> None:
    """Append this run's rows; a second landing of the same run replaces them instead of doubling."""
    tables.replace_where(run.spark, run.cfg, name, df, f"_run_id = {sql_str(run.run_id)}")


def read_bronze(run: Run, name: str) -> DataFrame:
    return tables.read(run.spark, run.cfg, name).where(F.col("_run_id") == run.run_id)


def _slim(flagged: DataFrame, spec: EntitySpec) -> DataFrame:
    """What the silver and quarantine writes read: silver columns (not yet cast), the reasons, the
    columns de-duplication orders by, and the arriving record of rejected rows only."""
    keep = [f.name for f in spec.schema.fields] + [c for c in ("_airbyte_extracted_at",) if c in flagged.columns]
    rejected = F.size(quarantine.REASONS) > 0
    return flagged.select(
        *[F.col(f"`{c}`") for c in keep], F.col(quarantine.REASONS),
        F.when(rejected, F.col(canonical.RECORD)).alias(canonical.RECORD),
    )


def bronze_and_count(run: Run, spec: EntitySpec, bronze_df: DataFrame,
                     cache: CacheScope) -> tuple[dict[str, int], DataFrame]:
    """Write this run's bronze rows, flag them, count them. Returns (counts, flagged frame).

    counts: rows_in, landed (valid rows), quarantined, silver_rows (after de-duplication by key;
    differs from landed only for Stripe objects exported more than once). One aggregation job, which
    also fills the cache of the flagged frame (kept by ``cache`` for :func:`publish` and the
    quarantine write).
    """
    write_bronze(run, spec.bronze, bronze_df)
    flagged = cache.keep(_slim(spec.canonicalise(read_bronze(run, spec.bronze)), spec))
    row = flagged.agg(
        F.count(F.lit(1)).alias("rows_in"),
        F.expr(f"count_if(size({quarantine.REASONS}) = 0)").alias("landed"),
        F.expr(f"count_if(size({quarantine.REASONS}) > 0)").alias("quarantined"),
        F.expr(f"count(DISTINCT CASE WHEN size({quarantine.REASONS}) = 0 THEN {spec.key} END)").alias("silver_rows"),
    ).first()
    return {k: int(row[k] or 0) for k in ("rows_in", "landed", "quarantined", "silver_rows")}, flagged


def publish(run: Run, spec: EntitySpec, flagged: DataFrame, source: str) -> DataFrame:
    """Replace the silver table with the valid rows; return the rejected rows as quarantine rows."""
    valid, rejected = quarantine.split(flagged)
    if spec.dedup is not None:
        valid = spec.dedup(valid)
    silver, metadata = silver_with_fingerprint(run.spark, run.cfg, spec.silver, valid.select(*canonical.silver_columns(spec.schema)))
    # The key is unique by construction (repeated keys quarantined, or de-duplicated): say so with the
    # commit, so the input gate need not shuffle the table to check it again (validate._vouch_unique).
    tables.overwrite(run.spark, run.cfg, spec.silver, silver, {**metadata, "unique": [spec.key]})
    return quarantine.to_quarantine_rows(
        run.run_id, rejected, stage="land", source=source, entity=spec.entity, key_col=spec.key,
        record_col=canonical.RECORD, source_file_col="_source_file",
    )


def land_entity(run: Run, spec: EntitySpec, bronze_df: DataFrame, source: str,
                cache: CacheScope) -> tuple[dict[str, int], DataFrame]:
    """:func:`bronze_and_count` then :func:`publish`. Returns (counts, quarantine rows to write)."""
    counts, flagged = bronze_and_count(run, spec, bronze_df, cache)
    return counts, publish(run, spec, flagged, source)


def write_quarantine(run: Run, source: str, frames: list[DataFrame]) -> None:
    """Write this run's landing rejects of one side; landing the same run again replaces them."""
    rows = frames[0]
    for f in frames[1:]:
        rows = rows.unionByName(f)
    rows = rows.select(*tables.QUARANTINE_SCHEMA.fieldNames())
    cond = f"run_id = {sql_str(run.run_id)} AND stage = 'land' AND source = {sql_str(source)}"
    tables.replace_where(run.spark, run.cfg, tables.GOLD_QUARANTINE, rows, cond)


def ledger_counts(per_entity: dict[str, dict[str, int]]) -> dict[str, int]:
    """Flatten {"products": {"rows_in": 3}} to {"products.rows_in": 3} plus side totals."""
    flat: dict[str, int] = {}
    for entity, counts in per_entity.items():
        for k, v in counts.items():
            flat[f"{entity}.{k}"] = v
    for k in ("rows_in", "landed", "quarantined"):
        flat[k] = sum(c.get(k, 0) for c in per_entity.values())
    return flat
