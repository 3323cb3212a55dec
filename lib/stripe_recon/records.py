"""Which record is which: key mapping, effective active, the Stripe primary record per key, a price's
product key. The rules land, detect and plan share (docs/internals.md, "Which Stripe record is the
counterpart"), written once as Column expressions.

Per-key facts need more than one row (how many Stripe records map to a key, which one is primary).
They are computed with NARROW aggregations: one pass over the few columns they need, grouped by
key, keeping only the keys with more than one record (usually a handful), which are then joined
back (broadcast while small). No whole row is ever shuffled to decide them, and a key with one
record (nearly all of them) needs no lookup at all.

Columns added to a Stripe silver frame (land stores them, detect and plan read them):

- ``_key``: the mapped key (``metadata.internal_id`` or ``id`` for products, ``lookup_key`` or ``id``
  for prices);
- ``_primary``: this record is its key's primary (active first, then the oldest ``created``, then the
  smallest ``id``); true for every record of a null key (each one stands alone: it maps to nothing);
- ``_active_ids``: on primary rows, the sorted ids of the key's effectively active records (null on
  the other rows);
- ``_product_key`` (prices): the ``_key`` of the Stripe product the price hangs off (null when that
  product is unknown).

Example::

    prods = with_primary(with_stripe_key(silver_products, cfg, "product"), broadcast_max=2_000_000)
    prices = with_product_key(with_stripe_key(silver_prices, cfg, "price"), prods, broadcast_max=2_000_000)
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from .config import Config

KEY, PRIMARY, ACTIVE_IDS, PRODUCT_KEY = "_key", "_primary", "_active_ids", "_product_key"
STRIPE_KEY_COLUMNS = (KEY, PRIMARY, ACTIVE_IDS)


def effective_active(entity: str, side: str, active: Column | None = None) -> Column:
    """What a record's ``active`` means for reconciliation: an internal product also needs
    ``deleted_at`` null (a missing flag counts as active); a Stripe object is active only when
    ``active`` is true and it is not deleted (a missing flag counts as inactive)."""
    active = F.col("active") if active is None else active
    if side == "stripe":
        return F.coalesce(active, F.lit(False)) & ~F.coalesce(F.col("is_deleted"), F.lit(False))
    eff = F.coalesce(active, F.lit(True))
    return eff & F.col("deleted_at").isNull() if entity == "product" else eff


def stripe_key(cfg: Config, entity: str) -> Column:
    """The internal key a Stripe record maps to (``mapping.product_key`` / ``mapping.price_key``)."""
    if entity == "product":
        if cfg.mapping.product_key == "id":
            return F.col("id")
        return F.try_element_at(F.col("metadata"), F.lit("internal_id"))
    return F.col("id") if cfg.mapping.price_key == "id" else F.col("lookup_key")


def with_stripe_key(df: DataFrame, cfg: Config, entity: str) -> DataFrame:
    return df.withColumn(KEY, stripe_key(cfg, entity))


class SmallFrames:
    """Small per-key frames persisted while a stage uses them (``release`` unpersists them)."""

    def __init__(self) -> None:
        self.frames: list[DataFrame] = []

    def keep(self, df: DataFrame) -> DataFrame:
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        self.frames.append(df)
        return df

    def materialize(self, df: DataFrame) -> DataFrame:
        """``keep`` and compute it now (one job): later plans read it from memory, with its real size
        known to the planner (so joins with it are broadcast when it is small)."""
        df = self.keep(df)
        df.count()
        return df

    def release(self) -> None:
        for df in self.frames:
            df.unpersist()
        self.frames.clear()


def rows_named(big: DataFrame, column: str, keys: DataFrame,
               hint: Callable[[DataFrame], DataFrame] = F.broadcast) -> DataFrame:
    """The rows of ``big`` (a whole silver or control table) whose ``column`` is among ``keys`` (its first
    column; nulls and repeats dropped), as a semi join with ``hint`` applied to the keys (a broadcast
    while they are few): the big side is scanned once and never shuffled, so every join after it is
    between small frames. Plan cuts silver to the keys of one run's discrepancies with it, a CDC
    landing to the keys its change events name."""
    k = keys.select(keys.columns[0]).where(F.col(keys.columns[0]).isNotNull()).distinct()
    return big.join(hint(k), big[column] == k[k.columns[0]], "left_semi")


def join_small(df: DataFrame, small: DataFrame, left_key: Column, right_key: str, broadcast_max: int,
                frames: SmallFrames | None) -> DataFrame:
    """Left join of ``df`` with a per-key frame that is usually tiny: counted once (and kept), then
    broadcast when it has at most ``broadcast_max`` rows, else joined by a shuffle (still correct).
    An empty frame is no join at all: its columns are added as nulls."""
    small = frames.keep(small) if frames is not None else small
    n = small.count()  # an aggregate: the number of keys with more than one record
    if n == 0:
        return df.select("*", *[F.lit(None).cast(f.dataType).alias(f.name) for f in small.schema.fields])
    side = F.broadcast(small) if n <= broadcast_max else small
    return df.join(side, left_key.eqNullSafe(side[right_key]), "left")


def with_primary(df: DataFrame, entity: str, broadcast_max: int, frames: SmallFrames | None = None) -> DataFrame:
    """``df`` (Stripe rows of one entity, one per id, with ``_key``) plus ``_primary`` and ``_active_ids``."""
    eff = effective_active(entity, "stripe")
    # the oldest created first, an unknown time last (NULLS LAST), then the smallest id
    created = F.coalesce(F.col("created"), F.lit("9999-12-31 23:59:59").cast("timestamp"))
    order = F.struct((~eff).alias("a"), created.alias("c"), F.col("id").alias("i"))
    multi = (
        df.where(F.col(KEY).isNotNull())
        .select(F.col(KEY).alias("_m_key"), order.alias("_o"), F.when(eff, F.col("id")).alias("_a"))
        .groupBy("_m_key")
        .agg(F.count(F.lit(1)).alias("_m_n"), F.min("_o").alias("_m_first"),
             F.array_sort(F.collect_list("_a")).alias("_m_active"))
        .where("_m_n > 1")
        .select("_m_key", F.col("_m_first.i").alias("_m_primary"), "_m_active")
    )
    joined = join_small(df, multi, df[KEY], "_m_key", broadcast_max, frames)
    primary = F.col("_m_primary").isNull() | (F.col("id") == F.col("_m_primary"))
    alone = F.when(eff, F.array(F.col("id"))).otherwise(F.array().cast("array<string>"))
    return joined.withColumns({
        PRIMARY: primary,
        ACTIVE_IDS: F.when(primary, F.coalesce(F.col("_m_active"), alone)),
    }).drop("_m_key", "_m_primary", "_m_active")


def with_product_key(prices: DataFrame, products: DataFrame, broadcast_max: int) -> DataFrame:
    """Stripe prices plus ``_product_key``: the mapped key of the product each price hangs off.

    ``products``: Stripe products with ``id`` and ``_key``. Broadcast when there are at most
    ``broadcast_max`` of them, else a shuffle join on the product id."""
    keys = products.select(F.col("id").alias("_pk_id"), F.col(KEY).alias(PRODUCT_KEY))
    if broadcast_max and products.count() <= broadcast_max:  # a Delta table answers from its log's stats
        keys = F.broadcast(keys)
    return prices.join(keys, prices["product"] == keys["_pk_id"], "left").drop("_pk_id")


def primary_rows(df: DataFrame) -> DataFrame:
    """The rows detect and plan compare: one per mapped key (its primary), and every null-key row."""
    return df.where(F.col(PRIMARY))


def stripe_keyed(cfg: Config, entity: str, df: DataFrame, ready: bool,
                 products: DataFrame | None = None, products_ready: bool = False,
                 frames: SmallFrames | None = None) -> DataFrame:
    """Stripe silver rows of one entity with ``_key``, ``_primary``, ``_active_ids`` (and, for prices,
    ``_product_key``): the stored columns when ``ready``, else derived here from narrow aggregations.

    ``products``: silver Stripe products (needed for prices unless ``products_ready``: the stored
    product keys came from the current products version); their own ``_key`` is derived when absent."""
    if not ready:
        df = with_stripe_key(df.drop(*[c for c in STRIPE_KEY_COLUMNS if c in df.columns]), cfg, entity)
        df = with_primary(df, entity, cfg.detect.broadcast_max_rows, frames)
    if entity == "price" and not (ready and products_ready):
        if products is None:
            raise ValueError("the Stripe prices need the Stripe products to map each price to its product's key")
        if KEY not in products.columns:
            products = with_stripe_key(products, cfg, "product")
        df = with_product_key(df.drop(*[c for c in (PRODUCT_KEY,) if c in df.columns]), products,
                              cfg.detect.broadcast_max_rows)
    return df
