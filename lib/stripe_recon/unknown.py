"""Keys quarantined by the landings whose silver versions detect reads: "unknown", not "absent".

A record rejected at landing (or by the input gate) is not in silver, so without this its key would
look absent: a duplicated internal key would make the valid Stripe product ``missing_in_internal``
(``archive`` under ``detect.missing_in_internal_action: archive``), a rejected Stripe object would make
its internal record ``missing_in_stripe`` (``create``). Detect therefore leaves out every candidate
pair of an unknown key, on both sides, and the report lists the unknown keys with their reasons
(docs/internals.md, "Quarantined keys are unknown").

Which quarantine rows count: those of the runs that produced the silver versions read, named in each
silver commit's metadata (the landing's ``landing.run_id`` and, when the input gate removed rows from
the table, its ``quarantine_runs``), with the table's side (``source``) and entity. The key:

- internal rows: ``gold.quarantine.key`` (the internal key; a row without one makes nothing unknown);
- Stripe rows: the key the rejected record maps to (records.stripe_key on the record parsed again by
  canonical.parse_stripe_lines; null when it cannot be read), and ``stripe_id`` = the object's id.

Quarantined rows are few: the frame is small (materialised once, broadcast), nothing is collected.

Example::

    unknown = quarantined_keys(spark, cfg, {name: commit_metadata_of_the_version_read, ...})
    unknown.columns   # ['entity', 'side', 'key', 'stripe_id', 'reasons', 'run_id']
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from . import canonical, records, silver, tables
from .config import Config

QUARANTINE_RUNS = silver.QUARANTINE_RUNS  # the commit metadata key (silver.Commit.quarantine_runs)
COLUMNS = ("entity", "side", "key", "stripe_id", "reasons", "run_id")


def runs_of(commit: dict | silver.Commit) -> list[str]:
    """The run ids whose quarantine rows belong to a silver version (from its commit metadata)."""
    return silver.Commit.of(commit).runs


def _sql_list(values: list[str]) -> str:
    return ", ".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)


def quarantined_keys(spark: SparkSession, cfg: Config, commits: dict[str, dict]) -> DataFrame | None:
    """One row per quarantined record of the silver versions whose commit metadata is ``commits``
    (silver table name -> metadata): :data:`COLUMNS`; None when no version names a run."""
    conds = []
    for name, commit in commits.items():
        if name not in silver.SIDES or not runs_of(commit):
            continue
        entity, side = silver.SIDES[name]
        conds.append(f"(run_id IN ({_sql_list(runs_of(commit))}) AND source = '{side}' AND entity = '{entity}')")
    if not conds or not tables.exists(spark, cfg, tables.GOLD_QUARANTINE):
        return None
    q = tables.read(spark, cfg, tables.GOLD_QUARANTINE).where(
        F.expr(f"stage IN ('land', 'validate') AND ({' OR '.join(conds)})"))
    internal = q.where(F.col("source") == "internal").select(
        "entity", "source", F.col("key"), F.lit(None).cast("string").alias("stripe_id"), "reasons", "run_id")
    lines = q.where(F.col("source") == "stripe").select(
        F.col("record").alias("value"), F.col("key").alias("_q_id"), F.col("entity").alias("_q_entity"),
        "reasons", "run_id", *[F.lit(None).cast("string").alias(c) for c in canonical.LINEAGE_COLS if c != "_run_id"],
        F.col("run_id").alias("_run_id"))
    parsed = canonical.parse_stripe_lines(lines, keep=("_q_id", "_q_entity", "reasons", "run_id"))
    stripe = parsed.select(
        F.col("_q_entity").alias("entity"), F.lit("stripe").alias("source"), _mapped_key(cfg).alias("key"),
        F.coalesce(F.col("_q_id"), F.col("id")).alias("stripe_id"), "reasons", "run_id")
    both = internal.unionByName(stripe).withColumnRenamed("source", "side")
    return both.where(F.col("key").isNotNull() | F.col("stripe_id").isNotNull()).select(*COLUMNS)


def _mapped_key(cfg: Config) -> Column:
    """The internal key a parsed Stripe record maps to, by its entity (records.stripe_key)."""
    return (F.when(F.col("_q_entity") == "product", records.stripe_key(cfg, "product"))
            .when(F.col("_q_entity") == "price", records.stripe_key(cfg, "price")))


def by_key(unknown: DataFrame) -> DataFrame:
    """What the report lists: one row per entity, side, key and Stripe id, with the distinct reasons
    and the number of quarantined records (a duplicated key: 2)."""
    return (unknown.groupBy("entity", "side", "key", "stripe_id")
            .agg(F.array_sort(F.array_distinct(F.flatten(F.collect_list("reasons")))).alias("reasons"),
                 F.count(F.lit(1)).alias("records")))
