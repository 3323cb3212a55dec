"""Stripe objects landed as changes (``land stripe --from-events``): the per-key columns stay whole.

A change landing MERGEs the changed objects into silver without deleting the others
(common.publish ``changes_only``). Three derived columns depend on other rows (records.py):
``_primary`` and ``_active_ids`` on every record of the same key, a price's ``_product_key`` on its
product. So the rows derived and MERGEd are the changed objects plus their *context*
(:func:`context`): every silver row of a key they touch (their new keys, and the old key of an
object whose key moved) and, for prices, every price of a product that changed in this landing
(and the other records of those prices' keys). The MERGE updates only the rows whose ``_hash``
changed, so silver then holds what a full landing of the same objects would hold, in one commit per
table, and the change feed holds exactly the rows that changed.

Example::

    pub = publish(run, spec, flagged, ..., changes_only=True,
                  context=context(run, tables.SILVER_STRIPE_PRICES, changed_product_ids))
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .. import records, silver, tables
from ..ledger import Run


def changed_ids(run: Run, name: str, before: int | None) -> DataFrame | None:
    """The ids of the rows ``name`` changed after version ``before`` (its change feed); None when none."""
    spark, cfg = run.spark, run.cfg
    after = tables.version(spark, cfg, name)
    if after is None or before is None or after == before:
        return None
    return (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", before + 1)
            .option("endingVersion", after).load(tables.table_path(cfg, name)).select("id").distinct())


def context(run: Run, name: str, changed_products: DataFrame | None = None) -> Callable[[DataFrame], DataFrame]:
    """For :func:`common.publish`: given the changed rows (silver columns and ``_rh``), the silver rows
    (same columns) the per-key columns of those rows, or of theirs, depend on, without the changed
    ids themselves. ``changed_products`` (prices): ids of the products this landing changed."""
    spark, cfg = run.spark, run.cfg
    entity, _ = silver.SIDES[name]

    def rows(changed: DataFrame) -> DataFrame:
        current = tables.read(spark, cfg, name)
        ids = changed.select(F.col("id").alias("_cid"))
        keys = [changed.select(records.stripe_key(cfg, entity).alias("_t")),
                current.join(ids, current["id"] == ids["_cid"], "left_semi").select(F.col(records.KEY).alias("_t"))]
        loners = None
        if entity == "price" and changed_products is not None:
            pids = changed_products.select(F.col("id").alias("_pid"))
            of_products = current.join(pids, current["product"] == pids["_pid"], "left_semi")
            keys.append(of_products.select(F.col(records.KEY).alias("_t")))
            loners = of_products.where(F.col(records.KEY).isNull())
        touched = keys[0]
        for k in keys[1:]:
            touched = touched.unionByName(k)
        touched = touched.where(F.col("_t").isNotNull()).distinct()
        out = current.join(touched, current[records.KEY] == touched["_t"], "left_semi")
        if loners is not None:  # null keys: disjoint from the keyed rows
            out = out.unionByName(loners)
        out = out.join(ids, out["id"] == ids["_cid"], "left_anti")
        return out.select(*changed.columns)

    return rows
