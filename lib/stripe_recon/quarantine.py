"""Row-level rules as data, compiled into one projection; failing rows go to ``gold.quarantine``.

A rule is a name and a Spark SQL expression that is TRUE when a row breaks it (null counts as not
broken). All rules of a frame become one ``_reasons`` array column in a single projection (no
per-rule pass, no UDF), so quarantine works at any size and ``input = valid + quarantined`` holds.

Example::

    rules = [Rule("null_key", "price_id IS NULL"), Rule("negative_amount", "amount < 0")]
    flagged = flag(df, rules)                 # adds _reasons: array<string>
    valid, rejected = split(flagged)
    append_quarantine(run, rejected, stage="land", source="internal", entity="price", key_col="price_id")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from . import tables

REASONS = "_reasons"


@dataclass(frozen=True)
class Rule:
    name: str
    fails: str  # Spark SQL, TRUE when the row breaks the rule
    severity: str = "error"  # error: the row is quarantined; warn: reported, row kept


def reasons_column(rules: Sequence[Rule]) -> Column:
    """array<string> of the names of the error rules a row breaks (empty when none)."""
    checks = [F.when(F.coalesce(F.expr(r.fails), F.lit(False)), F.lit(r.name)) for r in rules if r.severity == "error"]
    if not checks:
        return F.array().cast("array<string>")
    return F.filter(F.array(*checks), lambda x: x.isNotNull())


def flag(df: DataFrame, rules: Sequence[Rule], existing: str | None = None) -> DataFrame:
    """Add ``_reasons``; with ``existing`` (an array column already on df) the lists are concatenated."""
    col = reasons_column(rules)
    if existing is not None:
        col = F.concat(F.coalesce(F.col(existing), F.array().cast("array<string>")), col)
    return df.withColumn(REASONS, col)


def split(flagged: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(valid rows without ``_reasons``, rejected rows with it). Cache ``flagged`` first if it is costly."""
    valid = flagged.filter(F.size(REASONS) == 0).drop(REASONS)
    rejected = flagged.filter(F.size(REASONS) > 0)
    return valid, rejected


def to_quarantine_rows(
    run_id: str,
    rejected: DataFrame,
    stage: str,
    source: str,
    entity: str | Column,
    key_col: str | None,
    record_col: str | None = None,
    source_file_col: str | None = None,
) -> DataFrame:
    """Shape rejected rows as ``gold.quarantine`` rows: the whole original row kept as JSON."""
    payload_cols = [c for c in rejected.columns if c != REASONS]
    record = F.col(record_col) if record_col else F.to_json(F.struct(*[F.col(f"`{c}`") for c in payload_cols]))
    return rejected.select(
        F.lit(run_id).alias("run_id"),
        F.lit(stage).alias("stage"),
        F.lit(source).alias("source"),
        (entity if isinstance(entity, Column) else F.lit(entity)).alias("entity"),
        (F.col(key_col).cast("string") if key_col else F.lit(None).cast("string")).alias("key"),
        F.col(REASONS).alias("reasons"),
        record.cast("string").alias("record"),
        (F.col(source_file_col) if source_file_col else F.lit(None)).cast("string").alias("source_file"),
        F.current_timestamp().alias("quarantined_at"),
    )


def append_quarantine(run, rows: DataFrame) -> None:
    """Append ``to_quarantine_rows`` output for ``run`` (a ledger.Run)."""
    tables.append(run.spark, run.cfg, tables.GOLD_QUARANTINE, rows.select(*tables.QUARANTINE_SCHEMA.fieldNames()))
