"""``detect --incremental``: which keys to compare again, and the earlier run whose other rows stand.

A full detect's rows of a key depend only on (a) the silver rows of that key on both sides, (b) for
a price, its product's key and whether that product is known, (c) which keys are quarantined
(unknown.py) and (d) the configuration. So a detect that starts from the rows of the last
reconciled run (the *base*: the latest ``ok`` detect in gold.runs) only has to compare again:

- every key named by a silver change since the versions the base read (Delta's Change Data Feed of
  the four silver tables: inserts, updates before and after, deletes; a Stripe record's key is
  mapped from its columns, so a record whose key moved names both keys);
- a price whose product changed: internal prices whose ``product_id`` is a changed product key,
  Stripe prices whose ``product`` is a changed Stripe product or the Stripe product of a changed key;
- every key quarantined now or at the base's versions (it enters or leaves the unknown set).

A Stripe record without a mapped key stands alone (its rows have a null key): it is named by its id.
The result is one small frame (``entity``, ``key``, ``sid``: ``sid`` only when ``key`` is null); the
run's rows are the base's rows outside it plus a detect restricted to it (detect.py), which is what
a full detect gives (tests/unit/test_incremental_detect.py checks it row for row).

The base is not used (a full detect runs, and the ledger message says why) when there is none, when
it ran under another configuration (:func:`spec_id`), when it did not read all four silver tables,
or when the change feed cannot answer for the version range (a table rewritten by another tool,
versions vacuumed, CDF off).

Example::

    try:
        base = base_run(run, spec_id(spark, cfg))
        changed, n = changed_keys(run, base, versions_now, commits_now, frames_now)
    except NoBase as why:
        ...  # a full detect, and the ledger message says why
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from . import __version__, ledger, records, silver, tables
from . import normalise as N
from .config import Config
from .unknown import quarantined_keys

#: The ledger count of a detect row that names the configuration it ran under (:func:`spec_id`).
SPEC_COUNT = "config_spec"
_SILVER_INPUTS = tuple(silver.SIDES)  # the four silver tables detect reads


class NoBase(Exception):
    """The base run cannot be built on; the message says why (a full detect runs instead)."""


@dataclass(frozen=True)
class Base:
    run_id: str
    versions: dict[str, int]
    discrepancies: int | None = None  # the rows it wrote (its ledger count)

    def read_the_same(self, versions: dict[str, int]) -> bool:
        """Whether ``versions`` (a detect's silver versions) are exactly the ones this base read."""
        return all(versions.get(t) == v for t, v in self.versions.items())


def spec_id(spark: SparkSession, cfg: Config) -> int:
    """A 60-bit id of everything detect's rows depend on besides silver and the quarantine: the
    compared attributes, metadata ownership, the key mapping, the missing-in-internal action,
    ICU, the stored-column version and this package's version."""
    doc = {
        "attributes": cfg.attributes.model_dump(), "metadata": cfg.metadata.model_dump(),
        "mapping": cfg.mapping.model_dump(), "mii": cfg.detect.missing_in_internal_action,
        "icu": N.icu_available(spark), "fp": silver.FP_VERSION, "version": __version__,
    }
    return int(hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:15], 16)


def base_run(run, spec: int) -> Base:
    """The latest ok detect of another run, when its rows can be built on; else :class:`NoBase`."""
    row = ledger.latest_ok(run.spark, run.cfg, "detect", ["run_id", "counts", "versions_read"], other_than=run.run_id)
    if row is None:
        raise NoBase("no earlier detect run")
    counts, versions = dict(row["counts"] or {}), dict(row["versions_read"] or {})
    if counts.get(SPEC_COUNT) != spec:
        raise NoBase(f"the last detect ({row['run_id']}) ran under another configuration or version")
    missing = [t for t in _SILVER_INPUTS if t not in versions]
    if missing:
        raise NoBase(f"the last detect ({row['run_id']}) did not read {', '.join(missing)}")
    n = counts.get("discrepancies")
    return Base(row["run_id"], {t: int(versions[t]) for t in _SILVER_INPUTS}, None if n is None else int(n))


def reusable(run, base: Base, versions: dict[str, int]) -> bool:
    """Whether ``base`` (:func:`base_run`) read exactly ``versions`` and its rows are all still in
    gold.discrepancies: a detect now would write those rows again (they depend only on the silver
    versions, their quarantine and the configuration), so they can be kept as they are."""
    if not base.read_the_same(versions) or base.discrepancies is None:
        return False
    kept = tables.read(run.spark, run.cfg, tables.GOLD_DISCREPANCIES).where(F.col("run_id") == F.lit(base.run_id))
    return kept.count() == base.discrepancies  # an aggregate


def _feed(spark: SparkSession, cfg: Config, name: str, start: int, end: int) -> DataFrame | None:
    """The change rows of ``name`` after version ``start`` up to ``end`` (None when there are none)."""
    if end == start:
        return None
    if end < start:
        raise NoBase(f"{name} is at version {end}, older than the {start} the last detect read")
    try:
        df = (spark.read.format("delta").option("readChangeFeed", "true")
              .option("startingVersion", start + 1).option("endingVersion", end).load(tables.table_path(cfg, name)))
        df.schema  # noqa: B018 - resolves the versions now: a gap or CDF off raises here
    except Exception as exc:  # AnalysisException / DeltaAnalysisException of several kinds
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise NoBase(f"the change feed of {name} cannot answer for versions {start + 1}..{end}: {first}") from None
    return df


def _stripe_ref(entity: str, cfg: Config) -> tuple[Column, Column]:
    """(key, sid) naming a Stripe record: its mapped key, or its id when it maps to no key."""
    key = records.stripe_key(cfg, entity)
    return key.alias("key"), F.when(key.isNull(), F.col("id")).alias("sid")


def _named(entity: str, key: Column) -> list[Column]:
    """(entity, key, sid) naming an internal record: always by its key."""
    return [F.lit(entity).alias("entity"), key.cast("string").alias("key"), F.lit(None).cast("string").alias("sid")]


def changed_keys(run, base: Base, versions: dict[str, int], commits: dict[str, dict],
                 frames: dict[str, DataFrame]) -> tuple[DataFrame, int]:
    """The (``entity``, ``key``, ``sid``) to compare again, distinct and computed once (small), and
    how many there are.

    ``versions`` / ``commits``: the silver versions this detect reads and their commit metadata;
    ``frames``: those versions, by table name (for the prices of a changed product). Computed once per
    run and range: plan asks again for the range its source detect compared (``run.memo``)."""
    memo_key = ("changed_keys", base.run_id, tuple((t, versions.get(t)) for t in _SILVER_INPUTS))
    if memo_key not in run.memo:
        run.memo[memo_key] = _changed_keys(run, base, versions, commits, frames)
    return run.memo[memo_key]


def _changed_keys(run, base: Base, versions: dict[str, int], commits: dict[str, dict],
                  frames: dict[str, DataFrame]) -> tuple[DataFrame, int]:
    spark, cfg = run.spark, run.cfg
    feeds = {t: _feed(spark, cfg, t, base.versions[t], versions[t]) for t in _SILVER_INPUTS}
    parts: list[DataFrame] = []
    if feeds[tables.SILVER_INTERNAL_PRODUCTS] is not None:
        parts.append(feeds[tables.SILVER_INTERNAL_PRODUCTS].select(*_named("product", F.col("product_id"))))
    if feeds[tables.SILVER_INTERNAL_PRICES] is not None:
        parts.append(feeds[tables.SILVER_INTERNAL_PRICES].select(*_named("price", F.col("price_id"))))
    changed_product_ids = None
    if feeds[tables.SILVER_STRIPE_PRODUCTS] is not None:
        fp = feeds[tables.SILVER_STRIPE_PRODUCTS]
        parts.append(fp.select(F.lit("product").alias("entity"), *_stripe_ref("product", cfg)))
        changed_product_ids = fp.select(F.col("id").alias("pid"))
    if feeds[tables.SILVER_STRIPE_PRICES] is not None:
        parts.append(feeds[tables.SILVER_STRIPE_PRICES].select(F.lit("price").alias("entity"), *_stripe_ref("price", cfg)))

    base_commits = {t: tables.commit_at(spark, cfg, t, v) for t, v in base.versions.items()}
    unknown_ids = []
    for commit_set in (commits, base_commits):
        found = quarantined_keys(spark, cfg, commit_set)
        if found is not None:
            parts.append(found.select("entity", F.col("key").cast("string").alias("key"),
                                      F.when(F.col("key").isNull(), F.col("stripe_id")).cast("string").alias("sid")))
            unknown_ids.append(found.where((F.col("entity") == "product") & (F.col("side") == "stripe")
                                           & F.col("stripe_id").isNotNull()).select(F.col("stripe_id").alias("pid")))
    if not parts:
        return spark.createDataFrame([], "entity string, key string, sid string"), 0
    try:
        named = _cut(_union(parts).distinct())
    except Exception as exc:  # a feed's files gone (vacuumed) shows only when it is read
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise NoBase(f"the change feed since the last detect's versions could not be read: {first}") from None
    hint = F.broadcast if named.count() <= cfg.detect.broadcast_max_rows else (lambda d: d)  # an aggregate

    # A price whose product changed (or became known / unknown) is compared again too.
    product_keys = named.where((F.col("entity") == "product") & F.col("key").isNotNull()).select(F.col("key").alias("pk"))
    stripe_products = frames[tables.SILVER_STRIPE_PRODUCTS]
    of_keys = (stripe_products.select("id", records.stripe_key(cfg, "product").alias("_k"))
               .join(hint(product_keys), F.col("_k") == F.col("pk"), "left_semi").select(F.col("id").alias("pid")))
    product_ids = _union([of_keys, *unknown_ids, *([changed_product_ids] if changed_product_ids is not None else [])])
    internal_prices = (frames[tables.SILVER_INTERNAL_PRICES]
                       .join(hint(product_keys), F.col("product_id") == F.col("pk"), "left_semi")
                       .select(*_named("price", F.col("price_id"))))
    stripe_prices = (frames[tables.SILVER_STRIPE_PRICES]
                     .join(hint(product_ids.distinct()), F.col("product") == F.col("pid"), "left_semi")
                     .select(F.lit("price").alias("entity"), *_stripe_ref("price", cfg)))
    out = _cut(_union([named, internal_prices, stripe_prices]).distinct())
    return out, out.count()  # an aggregate


def _cut(df: DataFrame) -> DataFrame:
    """``df`` computed once now and kept without its lineage (a local checkpoint): a frame read from
    the change feed is not matched by Spark's cache when used again (the feed's relation is made anew
    at each analysis), so persisting it would read the feed once per use."""
    return df.localCheckpoint(eager=True)


def _union(frames: list[DataFrame]) -> DataFrame:
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


def restrict(df: DataFrame, changed: DataFrame, entity: str, key: Column, sid: Column, broadcast: bool) -> DataFrame:
    """The rows of ``df`` (of ``entity``) whose (``key``, ``sid``) the changed set names: a semi join
    on both columns (null-safe: a null key matches by its id), broadcast when the set is small."""
    c = changed.where(F.col("entity") == entity).select(F.col("key").alias("_ck"), F.col("sid").alias("_cs"))
    c = F.broadcast(c) if broadcast else c
    return df.join(c, key.eqNullSafe(c["_ck"]) & sid.eqNullSafe(c["_cs"]), "left_semi")


def by_name(df: DataFrame, names: DataFrame, how: str, broadcast: bool) -> DataFrame:
    """The rows of ``df`` (``entity``, ``key``, ``stripe_id``: discrepancies, corrections) that
    ``names`` (:func:`changed_keys`' ``entity``, ``key``, ``sid``) names (``how="left_semi"``) or does
    not name (``"left_anti"``): by key, or by Stripe id when the key is null."""
    c = names.select(F.col("entity").alias("_ce"), F.col("key").alias("_ck"), F.col("sid").alias("_cs"))
    c = F.broadcast(c) if broadcast else c
    sid = F.when(F.col("key").isNull(), F.col("stripe_id"))
    cond = (F.col("entity") == c["_ce"]) & F.col("key").eqNullSafe(c["_ck"]) & sid.eqNullSafe(c["_cs"])
    return df.join(c, cond, how)


def kept_rows(spark: SparkSession, cfg: Config, base: Base, changed: DataFrame | None, broadcast: bool) -> DataFrame:
    """The base run's discrepancy rows of the keys not compared again (all columns but run_id and
    detected_at); all of them when ``changed`` is None."""
    rows = tables.read(spark, cfg, tables.GOLD_DISCREPANCIES).where(F.col("run_id") == F.lit(base.run_id))
    if changed is not None:
        rows = by_name(rows, changed, "left_anti", broadcast)
    return rows.drop("run_id", "detected_at")
