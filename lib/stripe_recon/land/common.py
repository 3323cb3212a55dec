"""What both landing sides share: one lean pass per entity, change-only writes, counts from the writes.

A landing of one side (docs/internals.md, "Landing"):

1. **Unchanged?** The input's manifest (records, and an order-free hash of the records as they
   arrived) is compared with the one the side's last landing recorded in its silver commits. Equal,
   under the same landing spec, with silver untouched since: nothing is written but the bronze
   manifest row, and the ledger says "unchanged since run X" (:func:`unchanged_since`).
2. **Bronze** (pass A, side-specific): every record parsed and typed once, flagged by every row rule
   (land's own and the GX suite's compiled row rules, :func:`with_suite_reasons`), with its raw hash
   ``_rh``; on a first landing all of them are appended, on a re-landing only those whose ``_rh`` is not
   in silver (:func:`new_or_changed`). The records' counts are observed on that write.
3. **Silver** (pass B, :func:`publish`): the records that pass, one per key. Repeated internal keys
   are rejected (``duplicate_key``) and a Stripe id exported more than once keeps its latest version,
   both decided by narrow aggregations (no whole row is shuffled for them); then the derived columns
   (silver.py). A first landing writes silver directly; a re-landing writes the new snapshot to a
   scratch table and MERGEs into silver only the rows whose ``_hash`` changed, inserts the new keys and
   deletes the vanished ones, so the Change Data Feed holds exactly the changes. All counts (rows in,
   landed, quarantined per rule, silver rows, the id-set hash) are observed on that one write.
4. **Quarantine**: only when a rule failed (known from the counts), the rejected records with their
   reasons go to gold.quarantine: land's rules as stage ``land``, the suite's as stage ``validate``.

Nothing is cached but per-key frames that are small by construction; ``input rows = landed +
quarantined`` holds by construction (one flag array per row).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .. import canonical, gx_suites, quarantine, records, silver, tables, unknown
from ..errors import InputError
from ..ledger import Run
from ..quarantine import REASONS, Rule

log = logging.getLogger(__name__)

SUITE_REASONS = "_suite_reasons"
ROW = "_row"  # a unique id of a record within one landing (Stripe: picks one of identical versions)
# Bump when what land writes changes meaning (rules, derived columns): stored manifests stop matching.
LAND_VERSION = 2


def _empty() -> Column:
    return F.array().cast("array<string>")


@dataclass(frozen=True)
class EntitySpec:
    """How one entity of one side lands."""

    entity: str  # product | price (gold.quarantine.entity)
    side: str  # internal | stripe
    key: str  # silver key column
    silver: str  # silver table name
    schema: T.StructType  # silver schema
    suite: str  # GX suite whose row rules land evaluates (conf/expectations/<suite>.json)
    land_rules: tuple[str, ...]  # names of land's own rules (gold.quarantine reasons, stage land)

    @property
    def plural(self) -> str:
        return self.entity + "s"


# -- paths and reading ----------------------------------------------------------------------------

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


def lineage(run: Run, source: str, source_file: Column) -> list[Column]:
    return [
        F.lit(run.run_id).alias("_run_id"),
        F.lit(source).alias("_source"),
        source_file.cast("string").alias("_source_file"),
        F.current_timestamp().alias("_ingested_at"),
    ]


# -- rules --------------------------------------------------------------------------------------

def suite_rules(run: Run, spec: EntitySpec) -> list[Rule]:
    """The suite's compiled row rules land evaluates per record (gx_suites.landing_row_rules)."""
    return gx_suites.landing_row_rules(gx_suites.load_suite(spec.suite, run.cfg), spec.key, run.cfg)


def rules_spec(run: Run, spec: EntitySpec) -> str:
    """Id of the suite's row rules as land evaluates them (validate vouches only for the same id)."""
    return gx_suites.landing_rules_spec(gx_suites.load_suite(spec.suite, run.cfg), spec.key, run.cfg)


def with_suite_reasons(df: DataFrame, rules_by_entity: dict[str, list[Rule]], entity_col: str | None = None) -> DataFrame:
    """Add ``_suite_reasons``: the suite row rules a record that passed land's own rules breaks.

    With ``entity_col`` (Stripe lines) each entity's rules apply to its own records only."""
    arrays = []
    for entity, rules in rules_by_entity.items():
        col = quarantine.reasons_column(rules)
        arrays.append((entity, col))
    if entity_col is None:
        reasons = arrays[0][1]
    else:
        reasons = _empty()
        for entity, col in arrays:
            reasons = F.when(F.col(entity_col) == entity, col).otherwise(reasons)
    return df.withColumn(SUITE_REASONS, F.when(F.size(REASONS) == 0, reasons).otherwise(_empty()))


# -- the manifest and the unchanged check -----------------------------------------------------------

def hash_sums(h: Column) -> list[Column]:
    """Order-free sums of a 64-bit hash: its low and high 32 bits, each summed in a long (no overflow
    below 2^31 records)."""
    return [F.sum(h.bitwiseAND(F.lit(0xFFFFFFFF))).alias("h_lo"), F.sum(F.shiftrightunsigned(h, 32)).alias("h_hi")]


def manifest_of(df: DataFrame, h: Column) -> dict[str, int]:
    """{rows, h_lo, h_hi} of a frame of records in one aggregation (no row data leaves Spark)."""
    row = df.agg(F.count(F.lit(1)).alias("rows"), *hash_sums(h)).first()
    return {"rows": int(row["rows"]), "h_lo": int(row["h_lo"] or 0), "h_hi": int(row["h_hi"] or 0)}


def landing_spec(run: Run, specs: list[EntitySpec], extra: dict[str, Any]) -> str:
    """Id of everything a landing's output depends on besides the input: the derived columns' specs,
    the suites' row rules, the key mapping, LAND_VERSION and side options (``extra``)."""
    from ..normalise import icu_available

    icu = icu_available(run.spark)
    doc = {"version": LAND_VERSION, "extra": extra,
           "tables": {s.silver: [silver.fingerprint_spec(run.cfg, s.silver, icu), rules_spec(run, s)] for s in specs}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:24]


def unchanged_since(run: Run, specs: list[EntitySpec], manifest: dict[str, int], spec_id: str,
                    commits: dict[str, dict]) -> silver.Landing | None:
    """The landing record of the side's last landing when this input is the same (same manifest and
    landing spec, and every silver table's latest commit is that landing's); else None."""
    found = None
    for s in specs:
        landing = silver.Commit.of(commits.get(s.silver)).landing
        if landing is None or landing.spec != spec_id or landing.input != manifest:
            return None
        if found is not None and landing.run_id != found.run_id:
            return None
        found = landing
    return found


def held_in_memory(run: Run, specs: list[EntitySpec]) -> bool:
    """Whether a re-landing keeps its typed records in memory for its passes (bronze, the per-key
    aggregations, silver's MERGE) instead of reading the input again for each and writing silver
    through a scratch table: when every silver table of the side exists and holds at most
    ``land.memory_max_rows`` rows (a small catalog, where those fixed costs are most of the
    landing). Delta answers the counts from its log: no table is scanned."""
    limit = run.cfg.land.memory_max_rows
    return all(tables.exists(run.spark, run.cfg, s.silver) and tables.read(run.spark, run.cfg, s.silver).count() <= limit
               for s in specs)


# -- pass A: bronze -------------------------------------------------------------------------------

def new_or_changed(run: Run, arrived: DataFrame, silver_tables: list[str]) -> DataFrame:
    """The arrived records whose raw hash is not among the current silver rows' (all of them when
    silver has none): what a re-landing appends to bronze."""
    known = None
    for name in silver_tables:
        if tables.exists(run.spark, run.cfg, name):
            df = tables.read(run.spark, run.cfg, name)
            if silver.RAW_HASH in df.columns:
                part = df.select(F.col(silver.RAW_HASH).alias("_known_rh"))
                known = part if known is None else known.unionByName(part)
    if known is None:
        return arrived
    return arrived.join(known.distinct(), arrived[silver.RAW_HASH] == F.col("_known_rh"), "left_anti")


def write_bronze(run: Run, name: str, df: DataFrame, partition_by: str | None = None) -> None:
    """Append this run's records; a second landing of the same run replaces them instead of doubling."""
    tables.replace_where(run.spark, run.cfg, name, df, f"_run_id = {sql_str(run.run_id)}", partition_by=partition_by)


def write_manifest(run: Run, side: str, rows: list[dict[str, Any]]) -> None:
    """One bronze.manifests row per entity of this landing: files, counts, hashes, what was written."""
    tables.replace_where(run.spark, run.cfg, tables.BRONZE_MANIFESTS, tables.local_rows(run.spark, rows, tables.MANIFESTS_SCHEMA),
                         f"run_id = {sql_str(run.run_id)} AND side = {sql_str(side)}")


# -- pass B: silver ---------------------------------------------------------------------------------

@dataclass
class Published:
    """What :func:`publish` wrote for one entity."""

    counts: dict[str, int]  # rows_in, landed, quarantined, silver_rows, suite_quarantined
    rejected: DataFrame | None  # quarantine rows to write (None: nothing was rejected)
    details: dict[str, Any] = field(default_factory=dict)  # per-rule counts, id-set hash, silver version


def _observed_counts(spec: EntitySpec, suite_names: list[str]) -> tuple[list[Column], Callable[[dict], dict]]:
    """Aggregates observed on a flagged frame (``_land_ok``, ``_winner`` set) and how to read them."""
    land_ok, winner = F.col("_land_ok"), F.col("_winner")
    clean = winner & (F.size(SUITE_REASONS) == 0)
    aggs = [
        F.count(F.lit(1)).alias("rows_in"),
        F.count_if(land_ok).alias("landed"),
        F.count_if(~land_ok).alias("quarantined"),
        F.count_if(winner).alias("suite_rows_in"),
        F.count_if(winner & (F.size(SUITE_REASONS) > 0)).alias("suite_quarantined"),
        F.count_if(clean).alias("silver_rows"),
        F.bit_xor(F.when(clean, F.xxhash64(F.col(spec.key)))).alias("id_set"),
        *[F.count_if(F.array_contains(REASONS, n)).alias(f"r{i}") for i, n in enumerate(spec.land_rules)],
        *[F.count_if(winner & F.array_contains(SUITE_REASONS, n)).alias(f"s{i}") for i, n in enumerate(suite_names)],
    ]

    def read(got: dict) -> dict:
        counts = {k: int(got.get(k) or 0) for k in ("rows_in", "landed", "quarantined", "silver_rows")}
        return {
            "counts": counts,
            "suite_rows_in": int(got.get("suite_rows_in") or 0),
            "suite_quarantined": int(got.get("suite_quarantined") or 0),
            "id_set": int(got.get("id_set") or 0),
            "land_failed": {n: int(got[f"r{i}"]) for i, n in enumerate(spec.land_rules) if got.get(f"r{i}")},
            "suite_failed": {n: int(got[f"s{i}"]) for i, n in enumerate(suite_names) if got.get(f"s{i}")},
        }

    return aggs, read


def mark_repeated_keys(flagged: DataFrame, key: str, broadcast_max: int, frames: records.SmallFrames) -> DataFrame:
    """Internal records: every record of a key that occurs more than once (among non-null keys) gets
    ``duplicate_key``. The repeated keys come from a narrow aggregation of the key column alone."""
    repeated = (flagged.where(F.col(key).isNotNull()).groupBy(F.col(key).alias("_dup_key")).count()
                .where("count > 1").select("_dup_key", F.lit(True).alias("_dup")))
    marked = records.join_small(flagged, repeated, F.col(key), "_dup_key", broadcast_max, frames)
    reasons = F.when(F.coalesce(F.col("_dup"), F.lit(False)),
                     F.concat(F.col(REASONS), F.array(F.lit("duplicate_key")))).otherwise(F.col(REASONS))
    return marked.withColumn(REASONS, reasons).drop("_dup_key", "_dup")


def mark_latest_versions(flagged: DataFrame, broadcast_max: int, frames: records.SmallFrames) -> DataFrame:
    """Stripe records: ``_loser`` is true on every version of an id that is not its latest
    (canonical.latest_version_order; ``_row`` breaks ties between identical lines). The ids that
    occur more than once among the valid records come first, from an aggregation of the id column
    alone; only their records are then ordered, since the order reads the whole record (``raw``)."""
    ok = flagged.where(F.size(REASONS) == 0)
    repeated = frames.keep(ok.groupBy(F.col("id").alias("_r_id")).count().where("count > 1").select("_r_id"))
    n_repeated = repeated.count()  # an aggregate: the number of ids exported more than once
    if n_repeated == 0:
        return flagged.withColumn("_loser", F.lit(False))
    ids = F.broadcast(repeated) if n_repeated <= broadcast_max else repeated
    winners = (ok.join(ids, ok["id"] == ids["_r_id"], "left_semi").groupBy(F.col("id").alias("_w_id"))
               .agg(F.max_by(F.col(ROW), canonical.latest_version_order()).alias("_w_row")))
    marked = records.join_small(flagged, winners, F.col("id"), "_w_id", broadcast_max, frames)
    loser = F.col("_w_row").isNotNull() & (F.col(ROW) != F.col("_w_row"))
    return marked.withColumn("_loser", loser).drop("_w_id", "_w_row")


def publish(run: Run, spec: EntitySpec, flagged: DataFrame, suite_names: list[str], frames: records.SmallFrames,
            *, landing: silver.Landing, products: DataFrame | None = None, products_version: int | None = None,
            changes_only: bool = False, one_per_key: bool = False, in_memory: bool = False,
            context: Callable[[DataFrame], DataFrame] | None = None) -> Published:
    """Silver for one entity from its flagged records (pass B); returns the counts and the rejected rows.

    ``flagged``: the typed silver columns, ``_reasons`` (land's row rules), ``_suite_reasons``,
    ``_record``, ``_rh``, lineage (Stripe: also ``_row``, ``is_deleted``, ``raw``...). ``landing``: the
    landing record (spec, run, input manifest) stored with the silver commit (silver.Commit). ``changes_only``: the
    records are changes (CDC), not a snapshot: silver keys they do not name are kept. ``context``:
    given the clean rows, the silver rows derived and MERGEd with them (land/stripe_changes.py: the
    per-key columns of a change depend on the other records of its key). ``one_per_key``: no key can
    repeat (CDC change rows: land/cdc_events.py keeps each key's newest change), so internal records
    skip the repeated-key check and its aggregation. ``in_memory``: silver is MERGEd from the derived
    rows held in memory, not from a scratch table (:func:`held_in_memory`)."""
    cfg = run.cfg
    bmax = cfg.detect.broadcast_max_rows
    if spec.side == "internal" and one_per_key:
        marked = flagged.withColumn("_loser", F.lit(False))
    elif spec.side == "internal":
        marked = mark_repeated_keys(flagged, spec.key, bmax, frames).withColumn("_loser", F.lit(False))
    else:
        marked = mark_latest_versions(flagged, bmax, frames)
    marked = marked.withColumns({"_land_ok": F.size(REASONS) == 0}).withColumn(
        "_winner", F.col("_land_ok") & ~F.col("_loser"))
    aggs, read = _observed_counts(spec, suite_names)
    obs = Observation(f"land_{spec.side}_{spec.plural}_{uuid.uuid4().hex[:8]}")
    observed = marked.observe(obs, *aggs)
    clean = observed.where(F.col("_winner") & (F.size(SUITE_REASONS) == 0))
    rows = clean.select(*canonical.silver_columns(spec.schema), F.col(silver.RAW_HASH))
    if context is not None:
        rows = rows.unionByName(context(rows))
    derived, derived_commit = silver.derive(run.spark, cfg, spec.silver, rows, products=products,
                                            products_version=products_version, frames=frames)
    landing = replace(landing, rules_spec=rules_spec(run, spec))
    if changes_only:
        before = silver.Commit.of(tables.commit_metadata(run.spark, cfg, spec.silver))
        # Changes keep the columns the snapshot under them did not have: still not compared.
        if before.landing and before.landing.absent_columns and not landing.absent_columns:
            landing = replace(landing, absent_columns=before.landing.absent_columns)
        derived_commit = replace(derived_commit, quarantine_runs=tuple(carried_quarantine_runs(run, spec, before)))
    commit = replace(derived_commit, unique=(spec.key,), landing=landing)
    version = write_snapshot(run, spec.silver, derived, commit.as_json(), delete_missing=not changes_only,
                             in_memory=in_memory)
    observed_row = obs.get
    if not observed_row:
        # Spark 3.5 (Glue 5.0) can hand back an empty observation (seen on Stripe prices, whose write
        # also broadcasts the product keys): the same aggregates, counted in one more pass.
        log.debug("%s: the write's observation came back empty; counting again", spec.silver)
        observed_row = marked.agg(*aggs).first().asDict()
    got = read(observed_row)
    rejected = None
    if got["counts"]["quarantined"] or got["suite_quarantined"]:
        bad = marked.where(~F.col("_land_ok") | (F.col("_winner") & (F.size(SUITE_REASONS) > 0)))
        rejected = _quarantine_rows(run, spec, bad)
    counts = {**got["counts"], "suite_quarantined": got["suite_quarantined"]}
    if changes_only:  # the rows silver holds now, not the changed ones (the guard's shrink checks read it)
        counts["silver_rows"] = tables.read(run.spark, cfg, spec.silver).count()
    return Published(counts, rejected, {**got, "silver_version": version})


def carried_quarantine_runs(run: Run, spec: EntitySpec, latest: silver.Commit) -> list[str]:
    """The runs whose quarantine rows a change landing keeps (unknown.py): those named by the table's
    latest commit (``latest``: its metadata) that rejected records of this table. Applying changes does
    not make a key that an earlier landing rejected known: it stays unknown until a snapshot landing
    replaces the table."""
    spark, cfg = run.spark, run.cfg
    before = [r for r in unknown.runs_of(latest) if r != run.run_id]
    if not before or not tables.exists(spark, cfg, tables.GOLD_QUARANTINE):
        return []
    q = tables.read(spark, cfg, tables.GOLD_QUARANTINE).where(
        F.col("run_id").isin(*before) & (F.col("source") == spec.side) & (F.col("entity") == spec.entity)
        & F.col("stage").isin("land", "validate"))
    return sorted(r["run_id"] for r in q.select("run_id").distinct().collect())  # aggregate: a few run ids


def _quarantine_rows(run: Run, spec: EntitySpec, bad: DataFrame) -> DataFrame:
    """Rejected records as gold.quarantine rows: land's reasons (stage land) or, for records that
    passed them, the suite's (stage validate)."""
    land_bad = F.size(REASONS) > 0
    return bad.select(
        F.lit(run.run_id).alias("run_id"),
        F.when(land_bad, F.lit("land")).otherwise(F.lit("validate")).alias("stage"),
        F.lit(spec.side).alias("source"),
        F.lit(spec.entity).alias("entity"),
        F.col(spec.key).cast("string").alias("key"),
        F.when(land_bad, F.col(REASONS)).otherwise(F.col(SUITE_REASONS)).alias("reasons"),
        F.col(canonical.RECORD).cast("string").alias("record"),
        F.col("_source_file").cast("string").alias("source_file"),
        F.current_timestamp().alias("quarantined_at"),
    )


def write_snapshot(run: Run, name: str, df: DataFrame, metadata: dict[str, Any], delete_missing: bool = True,
                   in_memory: bool = False) -> int:
    """Make silver ``name`` hold exactly ``df``; returns the version written. ``delete_missing=False``
    (changes, not a snapshot): keys absent from ``df`` stay as they are.

    No silver yet (or one without land's row hash): an overwrite. Else the snapshot goes to a scratch
    table first and is MERGEd on the key: rows whose ``_hash`` changed are updated, new keys
    inserted, vanished keys deleted; unchanged rows are not touched, so the change feed (and the
    commit) holds only what changed. ``in_memory`` (a small snapshot): the MERGE reads ``df`` from
    memory, computed once (which is also when the landing's counts are observed), not from a scratch
    table: a MERGE reads its source more than once, and an observation does not fire inside it."""
    spark, cfg = run.spark, run.cfg
    entity, side = silver.SIDES[name]
    key = silver.KEYS[side][entity]
    target = tables.read(spark, cfg, name) if tables.exists(spark, cfg, name) else None
    if target is not None and not delete_missing and (silver.ROW_HASH not in target.columns
                                                      or target.columns != df.columns):
        raise InputError(f"{name} was written by an older version of this job (columns {target.columns}); "
                         "land a full snapshot once before applying changes to it")
    if target is None or silver.ROW_HASH not in target.columns or target.columns != df.columns:
        tables.overwrite(spark, cfg, name, df, metadata)
        return tables.version(spark, cfg, name)
    if in_memory:
        held = df.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            held.count()  # computes the rows once (and fires the landing's observation)
            tables.merge_snapshot(spark, cfg, name, held, key, silver.ROW_HASH, metadata, delete_missing=delete_missing)
        finally:
            held.unpersist()
        return tables.version(spark, cfg, name)
    scratch = f"{cfg.storage.root.rstrip('/')}/runs/{run.run_id}/scratch/{name}"
    df.write.format("delta").mode("overwrite").option("delta.dataSkippingNumIndexedCols", "1").save(scratch)
    try:
        source = spark.read.format("delta").load(scratch)
        tables.merge_snapshot(spark, cfg, name, source, key, silver.ROW_HASH, metadata, delete_missing=delete_missing)
    finally:
        tables.remove_path(spark, scratch)
    return tables.version(spark, cfg, name)


def write_quarantine(run: Run, source: str, frames: list[DataFrame]) -> None:
    """Write this run's landing rejects of one side; landing the same run again replaces them."""
    cond = (f"run_id = {sql_str(run.run_id)} AND stage IN ('land', 'validate') AND source = {sql_str(source)}")
    if not frames:
        if not run.fresh:  # a re-landing of a run may replace rows an earlier attempt wrote
            tables.delete_where(run.spark, run.cfg, tables.GOLD_QUARANTINE, cond)
        return
    rows = frames[0]
    for f in frames[1:]:
        rows = rows.unionByName(f)
    tables.replace_where(run.spark, run.cfg, tables.GOLD_QUARANTINE, rows.select(*tables.QUARANTINE_SCHEMA.fieldNames()), cond)


def copy_quarantine(run: Run, source: str, from_run: str) -> None:
    """An unchanged landing keeps the rejects of the landing it repeats, under its own run id."""
    q = tables.read(run.spark, run.cfg, tables.GOLD_QUARANTINE).where(
        f"run_id = {sql_str(from_run)} AND stage IN ('land', 'validate') AND source = {sql_str(source)}")
    write_quarantine(run, source, [q.withColumn("run_id", F.lit(run.run_id))])


def manifest_row(run: Run, side: str, plural: str, files: list[str], manifest: dict, bronze_rows: int,
                 counts: dict[str, int], details: dict[str, Any]) -> dict[str, Any]:
    """The bronze.manifests row of one entity of a landing that wrote silver."""
    return {
        "run_id": run.run_id, "side": side, "entity": plural, "files": files, "records": manifest["rows"],
        "input_hash": [manifest["h_lo"], manifest["h_hi"]], "bronze_rows": bronze_rows, "counts": counts,
        "land_failed": details["land_failed"], "suite_failed": details["suite_failed"],
        "id_set_hash": details["id_set"], "silver_version": details["silver_version"], "unchanged_since": None,
        "created_at": dt.datetime.now(dt.timezone.utc),
    }


def repeat_landing(run: Run, side: str, prev_run: str, manifests: dict[str, dict], files: dict[str, list[str]],
                   ) -> dict[str, dict[str, int]]:
    """A side whose input equals its last landing's (``prev_run``): nothing is written but the
    manifest rows (and a copy of that landing's rejects under this run id). Returns the counts of
    that landing, per entity."""
    prev = tables.landing_manifests(run.spark, run.cfg, prev_run, side)
    out: dict[str, dict[str, int]] = {}
    rows = []
    for plural, manifest in manifests.items():
        old = prev.get(plural) or {}
        counts = {k: int(v) for k, v in (old.get("counts") or {}).items()}
        out[plural] = counts
        rows.append({
            "run_id": run.run_id, "side": side, "entity": plural, "files": files.get(plural, []),
            "records": manifest["rows"], "input_hash": [manifest["h_lo"], manifest["h_hi"]], "bronze_rows": 0,
            "counts": counts, "land_failed": old.get("land_failed"), "suite_failed": old.get("suite_failed"),
            "id_set_hash": old.get("id_set_hash"), "silver_version": old.get("silver_version"),
            "unchanged_since": prev_run, "created_at": dt.datetime.now(dt.timezone.utc),
        })
    if any(c.get("quarantined") or c.get("suite_quarantined") for c in out.values()):
        copy_quarantine(run, side, prev_run)
    elif not run.fresh:
        write_quarantine(run, side, [])
    write_manifest(run, side, rows)
    return out


def ledger_counts(per_entity: dict[str, dict[str, int]]) -> dict[str, int]:
    """Flatten {"products": {"rows_in": 3}} to {"products.rows_in": 3} plus side totals."""
    flat: dict[str, int] = {}
    for entity, counts in per_entity.items():
        for k, v in counts.items():
            flat[f"{entity}.{k}"] = v
    for k in ("rows_in", "landed", "quarantined"):
        flat[k] = sum(c.get(k, 0) for c in per_entity.values())
    return flat
