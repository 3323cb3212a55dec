"""Discrepancy detection: silver internal vs silver Stripe -> ``gold.discrepancies``.

Per entity (product, price) the work is ONE full outer join on the mapped key, fingerprint first:

1. Each side is projected once, narrow: key, effective ``active``, timestamp and the fingerprint
   (``xxhash64`` of the canonical value of every compared attribute, see normalise.py), stored by
   land in silver (silver.py) or computed here for a table another tool wrote.
2. The Stripe side is one row per mapped key without any aggregation: land stores which record is
   its key's primary (active first, then the oldest ``created``, then the smallest ``id``), the key's
   active ids (for ``duplicate_in_stripe`` / ``missing_in_internal``) and each price's product key
   (records.py); a table without them gets them here, from narrow aggregations.
3. After the join, pairs whose fingerprints match (and that are not missing, duplicated or re-parented)
   are dropped by a cheap filter; only the rest builds an array of discrepancy structs, inlined into rows.

The rules (primary record, both-inactive, metadata per key, latest_wins) are docs/internals.md.
Choices made here:

- Attributes and metadata keys owned by ``ignore`` are not compared at all (no row).
- An attribute whose internal column the landed input did not have (silver.compared_config) is not
  compared in that run, as if owned by ``ignore``; the ledger row names it.
- ``owner`` is the attribute's owner on field_mismatch rows, ``internal`` on missing_in_stripe and
  price_product_mismatch, null on missing_in_internal and duplicate_in_stripe.
- ``latest_wins``: internal ``updated_at`` (truncated to whole seconds, as Stripe's times are) vs
  Stripe ``updated`` for products and ``created`` for prices (prices have no ``updated``); newer internal
  -> push (replace for immutable price fields), newer Stripe -> pull, tie or a missing time -> review.
- A Stripe price whose product id is unknown in silver.stripe_products has a null product key, so it
  differs from any internal ``product_id`` (price_product_mismatch).
- A key quarantined by the runs that produced the silver versions read (unknown.py) is unknown, not
  absent: every candidate pair of it is left out, on both sides, and so is a price's when its product
  (key or Stripe id) is quarantined (:func:`without_unknown`, one place, before phase 2).

Example::

    run = Run.new(spark, cfg)
    counts = detect(run)   # {"discrepancies": 12, "field_mismatch": 7, ...}
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import catalog, incremental, records, silver, tables
from . import normalise as N
from .config import Attribute, Config
from .errors import ConfigError
from .unknown import by_key, quarantined_keys

KINDS = ("missing_in_stripe", "missing_in_internal", "field_mismatch", "duplicate_in_stripe", "price_product_mismatch")
_ROW_FIELDS = ("key", "stripe_id", "kind", "attribute", "internal_value", "stripe_value", "owner", "action")
ROW_TYPE = T.ArrayType(T.StructType([T.StructField(f, T.StringType()) for f in _ROW_FIELDS]))


@dataclass(frozen=True)
class Entity:
    name: str
    internal_table: str
    stripe_table: str
    internal_key: str
    stripe_time: str  # products: updated; prices: created (prices have no `updated`)


PRODUCT = Entity("product", tables.SILVER_INTERNAL_PRODUCTS, tables.SILVER_STRIPE_PRODUCTS, "product_id", "updated")
PRICE = Entity("price", tables.SILVER_INTERNAL_PRICES, tables.SILVER_STRIPE_PRICES, "price_id", "created")


def _lit(s: str | None) -> Column:
    return F.lit(s).cast("string")


def _path(df: DataFrame, path: str, where: str) -> tuple[Column, T.DataType]:
    """A column or ``metadata.<key>`` path of a frame, with its type; a clear error if absent."""
    if path.startswith("metadata.") and path != "metadata.":
        return F.try_element_at(F.col("metadata"), F.lit(path[len("metadata."):])), T.StringType()
    if path not in df.columns:
        raise ConfigError(f"{where}: column {path!r} is not in the table (columns: {', '.join(df.columns)})")
    return F.col(path), df.schema[path].dataType


def _key_differs(mi: Column, ms: Column):
    """Predicate lambda for F.filter: the key's value differs between the two maps (null = absent)."""
    return lambda k: ~F.try_element_at(mi, k).eqNullSafe(F.try_element_at(ms, k))


class _Compiler:
    """Builds the per-side projections and the discrepancy array of one entity from the config."""

    def __init__(self, cfg: Config, entity: Entity, icu: bool):
        self.cfg, self.entity, self.icu = cfg, entity, icu
        attrs = cfg.attributes.product if entity.name == "product" else cfg.attributes.price
        self.attrs = {n: a for n, a in attrs.items() if a.owner != "ignore"}
        self.maps = {n: a for n, a in self.attrs.items() if a.compare == "map"}
        self.scalars = {n: a for n, a in self.attrs.items() if a.compare != "map"}
        # Metadata keys mapped to their own attribute (stripe path metadata.color) leave the map compare.
        self.mapped_keys = sorted(
            {p[len("metadata."):] for a in self.scalars.values() for p in (a.internal, a.stripe) if p.startswith("metadata.")}
        )

    # -- metadata key ownership ----------------------------------------------------------------
    def key_owner(self, k: Column, default: str) -> Column:
        owners = self.cfg.metadata.owners
        exact = {p: o for p, o in owners.items() if not p.endswith("*")}
        prefixes = sorted(((p[:-1], o) for p, o in owners.items() if p.endswith("*")), key=lambda x: -len(x[0]))
        expr = None
        for p, o in exact.items():
            expr = (F.when(k == F.lit(p), F.lit(o)) if expr is None else expr.when(k == F.lit(p), F.lit(o)))
        for p, o in prefixes:
            cond = k.startswith(F.lit(p))
            expr = F.when(cond, F.lit(o)) if expr is None else expr.when(cond, F.lit(o))
        return F.lit(default) if expr is None else expr.otherwise(F.lit(default))

    def keep_key(self, default_owner: str):
        excluded = list(self.cfg.metadata.excluded_keys) + self.mapped_keys

        def keep(k: Column) -> Column:
            ok = self.key_owner(k, default_owner) != F.lit("ignore")
            if excluded:
                ok = ok & ~k.isin(*excluded)
            return ok

        return keep

    # -- projections -------------------------------------------------------------------------
    def values(self, df: DataFrame, side: str) -> tuple[Column, Column]:
        """(struct of canonical values, fingerprint) for one side."""
        fields, fp_inputs = [], []
        for name, attr in self.scalars.items():
            path = attr.internal if side == "internal" else attr.stripe
            col, dtype = _path(df, path, f"attributes.{self.entity.name}.{name}.{side}")
            v = N.compared_value(col, attr, dtype, self.icu, name)
            fields.append(v.alias(name))
            if not N.tolerant(attr):
                fp_inputs.append(v)
        for name, attr in self.maps.items():
            path = attr.internal if side == "internal" else attr.stripe
            col, dtype = _path(df, path, f"attributes.{self.entity.name}.{name}.{side}")
            if not isinstance(dtype, T.MapType):
                raise ConfigError(f"attributes.{self.entity.name}.{name}.{side}: compare 'map' needs a map column, got {dtype.simpleString()}")
            m = N.map_normalise(col, attr, self.keep_key(attr.owner), self.icu)
            fields.append(m.alias(name))
            fp_inputs.append(N.map_fingerprint_input(m))
        return F.struct(*fields), N.fingerprint(fp_inputs)

    # -- actions ---------------------------------------------------------------------------
    def action(self, owner: Column | str, attr: Attribute, stripe_field: str, ti: Column, ts: Column) -> Column:
        # A price field Stripe cannot update (catalog.py) is pushed as a new price: action ``replace``.
        push = "replace" if self.entity.name == "price" and catalog.replaces("price", stripe_field) else "push"
        if attr.resolve == "latest_wins":
            i_sec = F.date_trunc("second", ti)
            s_sec = F.date_trunc("second", ts)
            resolved = F.when(i_sec > s_sec, F.lit(push)).when(i_sec < s_sec, F.lit("pull")).otherwise(F.lit("review"))
        else:
            resolved = F.lit("review")
        if isinstance(owner, str):
            return {"internal": F.lit(push), "stripe": F.lit("pull"), "bidirectional": resolved}.get(owner, F.lit("ignore"))
        return (
            F.when(owner == "internal", F.lit(push))
            .when(owner == "stripe", F.lit("pull"))
            .when(owner == "bidirectional", resolved)
            .otherwise(F.lit("ignore"))
        )

    def field_rows(self, key: Column, sid: Column, vi: Column, vs: Column, ti: Column, ts: Column) -> Column:
        """array<row> of the differing attributes of a both-present pair (evaluated for mismatches only)."""
        scalar = [
            F.when(
                N.differ(vi[name], vs[name], attr),
                F.struct(
                    key.alias("key"), sid.alias("stripe_id"), _lit("field_mismatch").alias("kind"), _lit(name).alias("attribute"),
                    N.as_text(vi[name]).alias("internal_value"), N.as_text(vs[name]).alias("stripe_value"),
                    _lit(attr.owner).alias("owner"), self.action(attr.owner, attr, attr.stripe, ti, ts).alias("action"),
                ),
            )
            for name, attr in self.scalars.items()
        ]
        parts = [F.filter(F.array(*scalar), lambda x: x.isNotNull()).cast(ROW_TYPE)] if scalar else []
        for name, attr in self.maps.items():
            mi, ms = vi[name], vs[name]
            keys = F.array_sort(F.array_distinct(F.concat(F.map_keys(mi), F.map_keys(ms))))
            differing = F.filter(keys, _key_differs(mi, ms))

            parts.append(F.transform(differing, self._map_row(name, attr, mi, ms, key, sid, ti, ts)).cast(ROW_TYPE))
        if not parts:
            return F.array().cast(ROW_TYPE)
        return parts[0] if len(parts) == 1 else F.concat(*parts)

    def _map_row(self, name: str, attr: Attribute, mi: Column, ms: Column, key: Column, sid: Column,
                 ti: Column, ts: Column):
        """The lambda (one argument, as Spark's higher-order functions require) for one metadata key."""

        def row(k: Column) -> Column:
            owner = self.key_owner(k, attr.owner)
            return F.struct(
                key.alias("key"), sid.alias("stripe_id"), _lit("field_mismatch").alias("kind"),
                F.concat(F.lit(name + "."), k).alias("attribute"),
                F.try_element_at(mi, k).alias("internal_value"), F.try_element_at(ms, k).alias("stripe_value"),
                owner.alias("owner"), self.action(owner, attr, attr.stripe, ti, ts).alias("action"),
            )

        return row

    def tolerant_differ(self, vi: Column, vs: Column) -> Column:
        cond = F.lit(False)
        for name, attr in self.scalars.items():
            if N.tolerant(attr):
                cond = cond | N.differ(vi[name], vs[name], attr)
        return cond


def _with_effective_active(df: DataFrame, entity: Entity, side: str) -> DataFrame:
    """``df`` with its ``active`` column replaced by the effective one (what is compared)."""
    return df.withColumns({"active": records.effective_active(entity.name, side)})


def compiler(spark: SparkSession, cfg: Config, entity: str) -> _Compiler:
    """The compiler of one entity's compared values and fingerprint (land stores the fingerprint)."""
    return _Compiler(cfg, PRODUCT if entity == "product" else PRICE, N.icu_available(spark))


def _tolerant_values(comp: _Compiler, df: DataFrame, side: str) -> Column | None:
    """Struct of the canonical values of tolerant attributes (not fingerprinted), or None."""
    cols = []
    for name, attr in comp.scalars.items():
        if N.tolerant(attr):
            col, dtype = _path(df, attr.internal if side == "internal" else attr.stripe, f"attributes.{comp.entity.name}.{name}.{side}")
            cols.append(N.compared_value(col, attr, dtype, comp.icu, name).alias(name))
    return F.struct(*cols) if cols else None


def _internal_narrow(df: DataFrame, comp: _Compiler, ready: bool) -> DataFrame:
    """Phase 1, internal side: key, effective active, updated_at, fingerprint (+ product key, tolerant values)."""
    e = comp.entity
    df = _with_effective_active(df, e, "internal")
    fp = F.col(silver.FP) if ready else comp.values(df, "internal")[1]
    cols = [F.col(e.internal_key).alias("key"), F.col("active").alias("active"), F.col("updated_at").alias("ts"), fp.alias("fp")]
    tol = _tolerant_values(comp, df, "internal")
    if tol is not None:
        cols.append(tol.alias("t"))
    if e.name == "price":
        cols.append(F.col("product_id").alias("product_key"))
    return df.select(*cols)


def _stripe_narrow(df: DataFrame, comp: _Compiler, ready: bool) -> DataFrame:
    """Phase 1, Stripe side, one row per mapped key (its primary record: id, active, time, fingerprint,
    product key) with the key's sorted active ids; every null-key record stands alone. ``df`` comes
    from :func:`stripe_keyed`."""
    e = comp.entity
    df = _with_effective_active(records.primary_rows(df), e, "stripe")
    fp = F.col(silver.FP) if ready else comp.values(df, "stripe")[1]
    rec = [F.col("id"), F.col("active"), F.col(e.stripe_time).alias("ts"), fp.alias("fp")]
    tol = _tolerant_values(comp, df, "stripe")
    if tol is not None:
        rec.append(tol.alias("t"))
    if e.name == "price":
        rec += [F.col(records.PRODUCT_KEY).alias("product_key"), F.col("product").alias("product_id")]
    return df.select(F.col(records.KEY).alias("key"), F.struct(*rec).alias("p"), F.col(records.ACTIVE_IDS).alias("active_ids"))


def _field_rows(comp: _Compiler, pairs: DataFrame, internal: DataFrame, stripe: DataFrame, broadcast: bool) -> DataFrame:
    """Phase 2: field_mismatch rows of the pairs whose fingerprints differ.

    ``pairs`` (``_c_key``, ``_c_sid``, ``_c_ti``, ``_c_ts``) is small; each side is joined to it on its
    own key (the pairs broadcast when ``broadcast``), so only the rows of those pairs are normalised
    again, and the two small results are joined on the Stripe id.
    """
    e = comp.entity
    hint = F.broadcast if broadcast else (lambda d: d)
    i = _with_effective_active(internal, e, "internal")
    i = i.join(hint(pairs), F.col(e.internal_key) == F.col("_c_key"))
    i = i.select("_c_key", "_c_sid", "_c_ti", "_c_ts", comp.values(i, "internal")[0].alias("_vi"))
    s = _with_effective_active(stripe, e, "stripe")
    s = s.join(hint(pairs.select(F.col("_c_sid").alias("_s_sid"))), F.col("id") == F.col("_s_sid"))
    s = s.select("_s_sid", comp.values(s, "stripe")[0].alias("_vs"))
    j = i.join(s, F.col("_c_sid") == F.col("_s_sid"))
    rows = comp.field_rows(F.col("_c_key"), F.col("_c_sid"), F.col("_vi"), F.col("_vs"), F.col("_c_ti"), F.col("_c_ts"))
    return j.select(F.lit(e.name).alias("entity"), F.inline(rows))


# -- quarantined keys are unknown, not absent (unknown.py) ------------------------------------------

def unknown_keys(spark: SparkSession, cfg: Config, commits: dict[str, dict],
                 frames: records.SmallFrames) -> tuple[DataFrame | None, dict[str, int]]:
    """The quarantined keys of the silver versions read (``commits``: their commit metadata), kept
    in ``frames`` (small: quarantined rows are few), and the number of unknown keys (and Stripe ids)
    per entity (an aggregate, ledger counts ``<entity>.unknown_keys``);
    (None, {}) when there are none."""
    found = quarantined_keys(spark, cfg, commits)
    if found is None:
        return None, {}
    found = frames.keep(found)
    counts = by_key(found).groupBy("entity").count()
    per_entity = {r["entity"]: int(r["count"]) for r in counts.collect()}  # aggregate
    return (found, per_entity) if per_entity else (None, {})


def without_unknown(cand: DataFrame, entity: Entity, unknown_df: DataFrame | None, broadcast_max: int) -> DataFrame:
    """The candidate pairs (``i``/``s`` structs) without those of an unknown key: the key or the
    Stripe id is quarantined, or (prices) the price's product is, on either side. Broadcast
    anti-joins with the few quarantined keys; nothing at all when there are none."""
    if unknown_df is None:
        return cand

    def values(of: str, column: str) -> DataFrame:
        return unknown_df.where((F.col("entity") == of) & F.col(column).isNotNull()).select(F.col(column).alias("_u")).distinct()

    checks = [(F.coalesce(F.col("i.key"), F.col("s.key")), entity.name, "key"), (F.col("s.p.id"), entity.name, "stripe_id")]
    if entity.name == "price":
        checks += [(F.col("i.product_key"), "product", "key"), (F.col("s.p.product_key"), "product", "key"),
                   (F.col("s.p.product_id"), "product", "stripe_id")]
    hint = F.broadcast if unknown_df.count() <= broadcast_max else (lambda d: d)
    for col, of, column in checks:
        u = hint(values(of, column))
        cand = cand.join(u, col == u["_u"], "left_anti")
    return cand


def compare(
    spark: SparkSession,
    cfg: Config,
    entity: Entity,
    internal: DataFrame,
    stripe: DataFrame,
    stripe_products: DataFrame | None = None,
    icu: bool | None = None,
    ready: frozenset[str] = frozenset(),
    cache: list[DataFrame] | None = None,
    frames: records.SmallFrames | None = None,
    unknown: DataFrame | None = None,
    only: DataFrame | None = None,
    only_broadcast: bool = True,
) -> DataFrame:
    """The discrepancy rows (without run_id/detected_at) of one entity. Frames in, frame out.

    ``stripe_products`` (silver.stripe_products) is needed for prices unless their stored product keys
    are current: it maps a Stripe price's ``product`` id to the product's key for
    price_product_mismatch. ``ready`` names the frames whose stored derived columns are valid for this
    config: "internal", "stripe", "stripe_products", "product_keys" (see :func:`silver.stored_ready`);
    the others are derived here. With ``cache`` (a list the caller unpersists after the rows are
    written) the candidate pairs of phase 1 are kept and counted once, so phase 2 can broadcast them;
    without it the frame is pure (nothing persisted) and phase 1 runs once per consumer. ``unknown``
    (:func:`unknown_keys`): the pairs of a quarantined key are left out (:func:`without_unknown`).
    ``only`` (incremental.py, ``detect --incremental``): compare only the keys this frame names
    (a semi join of each side, broadcast when ``only_broadcast``).
    """
    comp = _Compiler(cfg, entity, N.icu_available(spark) if icu is None else icu)
    i = _internal_narrow(internal, comp, "internal" in ready)
    if only is not None:
        i = incremental.restrict(i, only, entity.name, F.col("key"), F.lit(None).cast("string"), only_broadcast)
    i = i.alias("i")
    products = stripe_products
    if entity.name == "price" and products is not None and "stripe_products" not in ready:
        products = records.with_stripe_key(products.drop(*[c for c in (records.KEY,) if c in products.columns]),
                                           cfg, "product")
    keyed = records.stripe_keyed(cfg, entity.name, stripe, "stripe" in ready, products, "product_keys" in ready, frames)
    if only is not None:
        keyed = incremental.restrict(keyed, only, entity.name, F.col(records.KEY),
                                     F.when(F.col(records.KEY).isNull(), F.col("id")), only_broadcast)
    s = _stripe_narrow(keyed, comp, "stripe" in ready).alias("s")
    j = i.join(s, F.col("i.key") == F.col("s.key"), "full_outer")

    def conditions() -> dict[str, Column]:
        ip, sp = F.col("i.key").isNotNull(), F.col("s.p").isNotNull()
        ia, sa = F.col("i.active"), F.col("s.p.active")
        both = ip & sp
        live = both & (ia | sa)  # both present and not both inactive
        fields_differ = (F.col("i.fp") != F.col("s.p.fp")) | comp.tolerant_differ(F.col("i.t"), F.col("s.p.t"))
        if entity.name == "price":
            product_differs = ~F.col("i.product_key").eqNullSafe(F.col("s.p.product_key"))
        else:
            product_differs = F.lit(False)
        return {"ip": ip, "sp": sp, "ia": ia, "both": both, "live": live, "fields": live & fields_differ,
                "product": live & product_differs, "n_active": F.size(F.col("s.active_ids"))}

    c = conditions()
    candidate = (c["ip"] & ~c["sp"] & c["ia"]) | (~c["ip"] & (c["n_active"] > 0)) | (c["both"] & (c["n_active"] >= 2)) | c["fields"] | c["product"]
    # The candidate rows keep the i/s shape (as structs) so that the conditions read the same on them.
    cand = j.where(candidate).select(
        F.struct(F.col("i.*")).alias("i"),
        F.struct(F.col("s.key").alias("key"), F.col("s.p").alias("p"), F.col("s.active_ids").alias("active_ids")).alias("s"),
    )
    cand = without_unknown(cand, entity, unknown, cfg.detect.broadcast_max_rows)
    broadcast = False
    if cache is not None:
        cand = cand.persist(StorageLevel.MEMORY_AND_DISK)
        cache.append(cand)
        pairs_n = cand.where(conditions()["fields"]).count()  # phase 1 runs here, once; the rest reads the cache
        broadcast = 0 < pairs_n <= cfg.detect.broadcast_max_rows
    c = conditions()
    key = F.coalesce(F.col("i.key"), F.col("s.key"))
    sid = F.col("s.p.id")

    def one(kind: str, k: Column, stripe_id: Column, attribute: str | None, iv: Column, sv: Column, owner: str | None, action: str) -> Column:
        return F.array(
            F.struct(
                k.alias("key"), stripe_id.alias("stripe_id"), _lit(kind).alias("kind"), _lit(attribute).alias("attribute"),
                iv.cast("string").alias("internal_value"), sv.cast("string").alias("stripe_value"),
                _lit(owner).alias("owner"), _lit(action).alias("action"),
            )
        ).cast(ROW_TYPE)

    empty = F.array().cast(ROW_TYPE)
    null = F.lit(None).cast("string")
    mii_action = "archive" if cfg.detect.missing_in_internal_action == "archive" else "review"
    others = F.array_join(F.filter(F.col("s.active_ids"), lambda x: x != sid), ",")
    parts = [
        F.when(c["ip"] & ~c["sp"] & c["ia"], one("missing_in_stripe", key, null, None, null, null, "internal", "create")).otherwise(empty),
        F.when(
            ~c["ip"],
            F.transform(
                F.col("s.active_ids"),
                lambda x: F.struct(
                    F.col("s.key").alias("key"), x.alias("stripe_id"), _lit("missing_in_internal").alias("kind"),
                    null.alias("attribute"), null.alias("internal_value"), null.alias("stripe_value"),
                    null.alias("owner"), _lit(mii_action).alias("action"),
                ),
            ).cast(ROW_TYPE),
        ).otherwise(empty),
        F.when(c["both"] & (c["n_active"] >= 2), one("duplicate_in_stripe", key, others, None, null, null, None, "review")).otherwise(empty),
        F.when(
            c["product"],
            one("price_product_mismatch", key, sid, "product", F.col("i.product_key") if entity.name == "price" else null,
                F.col("s.p.product_key") if entity.name == "price" else null, "internal", "replace"),
        ).otherwise(empty),
    ]
    narrow_rows = cand.select(F.lit(entity.name).alias("entity"), F.inline(F.concat(*parts)))
    pairs = cand.where(c["fields"]).select(
        F.col("i.key").alias("_c_key"), sid.alias("_c_sid"), F.col("i.ts").alias("_c_ti"), F.col("s.p.ts").alias("_c_ts"),
    )
    return narrow_rows.unionByName(_field_rows(comp, pairs, internal, stripe, broadcast))


def discrepancies(spark: SparkSession, cfg: Config, frames: dict[str, DataFrame], run_id: str,
                  detected_at: dt.datetime | None = None, ready: frozenset[str] = frozenset(),
                  cache: list[DataFrame] | None = None, small: records.SmallFrames | None = None,
                  unknown: DataFrame | None = None, only: DataFrame | None = None,
                  only_broadcast: bool = True) -> DataFrame:
    """Both entities' rows in DISCREPANCIES_SCHEMA order; ``frames`` keyed by silver table name,
    ``ready`` the names of those whose stored derived columns are valid (:func:`silver.stored_ready`),
    plus "product_keys" when the Stripe prices' product keys come from the current products version;
    ``unknown`` the quarantined keys (:func:`unknown_keys`); ``only`` the keys to compare
    (:func:`compare`; all when None)."""
    icu = N.icu_available(spark)

    def sides(internal: str, stripe: str) -> frozenset[str]:
        named = {"internal": internal, "stripe": stripe, "stripe_products": tables.SILVER_STRIPE_PRODUCTS}
        out = {n for n, t in named.items() if t in ready}
        return frozenset(out | ({"product_keys"} & ready))

    products = compare(spark, cfg, PRODUCT, frames[tables.SILVER_INTERNAL_PRODUCTS], frames[tables.SILVER_STRIPE_PRODUCTS],
                       icu=icu, ready=sides(tables.SILVER_INTERNAL_PRODUCTS, tables.SILVER_STRIPE_PRODUCTS), cache=cache,
                       frames=small, unknown=unknown, only=only, only_broadcast=only_broadcast)
    prices = compare(
        spark, cfg, PRICE, frames[tables.SILVER_INTERNAL_PRICES], frames[tables.SILVER_STRIPE_PRICES],
        stripe_products=frames[tables.SILVER_STRIPE_PRODUCTS], icu=icu,
        ready=sides(tables.SILVER_INTERNAL_PRICES, tables.SILVER_STRIPE_PRICES), cache=cache, frames=small,
        unknown=unknown, only=only, only_broadcast=only_broadcast,
    )
    at = detected_at or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    both = products.unionByName(prices)
    return both.select(
        F.lit(run_id).alias("run_id"), "entity", "key", "stripe_id", "kind", "attribute", "internal_value",
        "stripe_value", "owner", "action", F.lit(at).cast("timestamp").alias("detected_at"),
    )


SILVER_INPUTS = (
    tables.SILVER_INTERNAL_PRODUCTS,
    tables.SILVER_INTERNAL_PRICES,
    tables.SILVER_STRIPE_PRODUCTS,
    tables.SILVER_STRIPE_PRICES,
)


def ready_frames(spark: SparkSession, cfg: Config, frames: dict[str, DataFrame], commits: dict[str, dict],
                 versions: dict[str, int]) -> frozenset[str]:
    """Which silver frames carry stored derived columns valid for ``cfg`` (plus "product_keys")."""
    ready = {n for n, df in frames.items() if silver.stored_ready(spark, cfg, n, df, commits[n])}
    if tables.SILVER_STRIPE_PRICES in ready and silver.product_keys_ready(
            commits[tables.SILVER_STRIPE_PRICES], versions.get(tables.SILVER_STRIPE_PRODUCTS)):
        ready.add("product_keys")
    return frozenset(ready)


def detect(run, incremental_run: bool = False) -> dict[str, int]:
    """Read the silver tables, write this run's rows to gold.discrepancies (replacing any earlier
    rows of the same run_id), record counts and versions read in the ledger, return the counts.

    ``incremental_run`` (``--incremental``): start from the last reconciled run's rows and compare
    again only the keys changed since the versions it read (incremental.py); the rows written are
    those a full detect would write. When that run cannot be built on, a full detect runs and the
    ledger message says why."""
    spark = run.spark
    with run.stage("detect") as st:
        frames, commits = {}, {}
        for name in SILVER_INPUTS:
            commits[name] = run.read_version(st, name)
            frames[name] = tables.read(spark, run.cfg, name, hint="run `recon land internal` and `recon land stripe` first")
        cfg, skipped = silver.compared_config(run.cfg, commits)
        ready = ready_frames(spark, cfg, frames, commits, st.versions_read)
        notes = []
        if skipped:
            notes.append("not compared (the internal input has no such column): "
                         + ", ".join(f"{e}.{n}" for e, names in skipped.items() for n in names))
        stale = sorted(set(frames) - ready)
        if stale and skipped:
            notes.append("fingerprints computed here without them")
        elif stale:
            notes.append(f"fingerprints computed here for {', '.join(stale)} (land again to store them under this config)")
        elif "product_keys" not in ready:
            notes.append("product keys of silver.stripe_prices computed here (silver.stripe_products changed since)")
        spec = incremental.spec_id(spark, cfg)
        cache: list[DataFrame] = []
        small = records.SmallFrames()
        try:
            base, changed, n_changed, out = None, None, 0, None
            at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
            candidate, why_not = None, None
            if incremental_run or cfg.detect.reuse_unchanged:
                try:
                    candidate = incremental.base_run(run, spec)
                except incremental.NoBase as why:
                    why_not = why
            same = (candidate if candidate is not None and cfg.detect.reuse_unchanged
                    and incremental.reusable(run, candidate, st.versions_read) else None)
            if same is not None:
                # Nothing detect reads changed since that run: its rows are this run's rows.
                base = same
                notes.append(f"silver unchanged since run {base.run_id}: its rows stand (0 keys compared again)")
            elif incremental_run and candidate is None:
                notes.append(f"full detect: {why_not}")
            elif incremental_run:
                try:
                    changed, n_changed = incremental.changed_keys(run, candidate, st.versions_read, commits, frames)
                    base = candidate
                except incremental.NoBase as why:
                    notes.append(f"full detect: {why}")
            bcast = n_changed <= cfg.detect.broadcast_max_rows
            quarantined, n_unknown = unknown_keys(spark, cfg, commits, small)
            if same is None:
                out = discrepancies(spark, cfg, frames, run.run_id, detected_at=at, ready=ready, cache=cache,
                                    small=small, unknown=quarantined, only=changed, only_broadcast=bcast)
            if base is not None:
                kept = incremental.kept_rows(spark, cfg, base, changed, bcast).withColumns(
                    {"run_id": F.lit(run.run_id), "detected_at": F.lit(at).cast("timestamp")})
                out = kept.select(*tables.DISCREPANCIES_SCHEMA.names) if out is None else out.unionByName(kept)
                if same is None:
                    notes.append(f"incremental from run {base.run_id}: {n_changed:,} keys compared again")
            cond = "run_id = '" + run.run_id.replace("'", "''") + "'"
            # The counts come from the write itself (an observation), not from reading the rows back.
            obs = Observation("detect_counts")
            pairs = [(e, k) for e in ("product", "price") for k in KINDS]
            out = out.observe(obs, *[F.count_if((F.col("entity") == e) & (F.col("kind") == k)).alias(f"{e}.{k}")
                                     for e, k in pairs])
            tables.replace_where(spark, cfg, tables.GOLD_DISCREPANCIES, out, cond)
            observed = obs.get
        finally:
            for df in cache:
                df.unpersist()
            small.release()
        st.message = "; ".join(notes)
        counts: dict[str, int] = {"discrepancies": 0, **{k: 0 for k in KINDS}}
        for e, k in pairs:
            n = int(observed.get(f"{e}.{k}") or 0)
            counts["discrepancies"] += n
            counts[k] += n
            if n:
                counts[f"{e}.{k}"] = n
        counts.update({f"{e}.unknown_keys": n for e, n in n_unknown.items()})
        counts.update({f"{e}.attributes_not_compared": len(names) for e, names in skipped.items()})
        if base is not None:
            counts["changed_keys"] = n_changed
        st.counts.update(counts)
        st.counts[incremental.SPEC_COUNT] = spec
    return counts
