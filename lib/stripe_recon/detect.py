"""Discrepancy detection: silver internal vs silver Stripe -> ``gold.discrepancies``.

Per entity (product, price) the work is ONE full outer join on the mapped key, fingerprint first:

1. Each side is projected once: key, effective ``active``, timestamp, the canonical value of every
   compared attribute (see normalise.py) and ``xxhash64`` over them (the fingerprint).
2. The Stripe side is aggregated by key before the join (no many-to-many join): ``min_by`` picks the
   primary record (active first, then the oldest ``created``, then the smallest ``id``) and the active
   ids are collected for ``duplicate_in_stripe`` / ``missing_in_internal``.
3. After the join, pairs whose fingerprints match (and that are not missing, duplicated or re-parented)
   are dropped by a cheap filter; only the rest builds an array of discrepancy structs, inlined into rows.

The rules (primary record, both-inactive, metadata per key, latest_wins) are docs/internals.md.
Choices made here:

- Attributes and metadata keys owned by ``ignore`` are not compared at all (no row).
- ``owner`` is the attribute's owner on field_mismatch rows, ``internal`` on missing_in_stripe and
  price_product_mismatch, null on missing_in_internal and duplicate_in_stripe.
- ``latest_wins``: internal ``updated_at`` (truncated to whole seconds, as Stripe's times are) vs
  Stripe ``updated`` for products and ``created`` for prices (prices have no ``updated``); newer internal
  -> push (replace for immutable price fields), newer Stripe -> pull, tie or a missing time -> review.
- A Stripe price whose product id is unknown in silver.stripe_products has a null product key, so it
  differs from any internal ``product_id`` (price_product_mismatch).

Example::

    run = Run.new(spark, cfg)
    counts = detect(run)   # {"discrepancies": 12, "field_mismatch": 7, ...}
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import normalise as N
from . import tables
from .config import Attribute, Config
from .errors import ConfigError

KINDS = ("missing_in_stripe", "missing_in_internal", "field_mismatch", "duplicate_in_stripe", "price_product_mismatch")
# Stripe price fields that cannot be updated: a change means a new price (action ``replace``).
IMMUTABLE_PRICE_FIELDS = frozenset({"unit_amount", "currency", "interval", "interval_count", "recurring", "type"})
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


def stripe_product_key(cfg: Config) -> Column:
    if cfg.mapping.product_key == "id":
        return F.col("id")
    return F.try_element_at(F.col("metadata"), F.lit("internal_id"))


def stripe_price_key(cfg: Config) -> Column:
    return F.col("id") if cfg.mapping.price_key == "id" else F.col("lookup_key")


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
        push = "replace" if self.entity.name == "price" and stripe_field in IMMUTABLE_PRICE_FIELDS else "push"
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


def _internal_side(df: DataFrame, comp: _Compiler) -> DataFrame:
    e = comp.entity
    if e.name == "product":
        eff = F.coalesce(F.col("active"), F.lit(True)) & F.col("deleted_at").isNull()
    else:
        eff = F.coalesce(F.col("active"), F.lit(True))
    df = df.withColumns({"active": eff})
    v, fp = comp.values(df, "internal")
    cols = [F.col(e.internal_key).alias("key"), F.col("active").alias("active"), F.col("updated_at").alias("ts"), v.alias("v"), fp.alias("fp")]
    if e.name == "price":
        cols.append(F.col("product_id").alias("product_key"))
    return df.select(*cols)


def _stripe_side(df: DataFrame, comp: _Compiler, key: Column, product_keys: DataFrame | None) -> DataFrame:
    """Stripe aggregated to one row per mapped key: the primary record and the sorted active ids."""
    e = comp.entity
    eff = F.coalesce(F.col("active"), F.lit(False)) & ~F.coalesce(F.col("is_deleted"), F.lit(False))
    df = df.withColumns({"active": eff})
    if product_keys is not None:
        df = df.join(product_keys, df["product"] == product_keys["_pid"], "left")
    v, fp = comp.values(df, "stripe")
    rec = [F.col("id"), F.col("active"), F.col(e.stripe_time).alias("ts"), v.alias("v"), fp.alias("fp")]
    if product_keys is not None:
        rec.append(F.col("_product_key").alias("product_key"))
    order = F.struct((~F.col("active")).alias("a"), F.col("created").alias("c"), F.col("id").alias("i"))
    return (
        df.select(key.alias("key"), F.struct(*rec).alias("r"), order.alias("o"), F.col("active"), F.col("id"))
        .groupBy("key")
        .agg(
            F.min_by("r", "o").alias("p"),
            F.array_sort(F.collect_list(F.when(F.col("active"), F.col("id")))).alias("active_ids"),
        )
    )


def compare(
    spark: SparkSession,
    cfg: Config,
    entity: Entity,
    internal: DataFrame,
    stripe: DataFrame,
    stripe_products: DataFrame | None = None,
    icu: bool | None = None,
) -> DataFrame:
    """The discrepancy rows (without run_id/detected_at) of one entity. Pure: frames in, frame out.

    ``stripe_products`` (silver.stripe_products) is needed for prices: it maps a Stripe price's
    ``product`` id to the product's key for price_product_mismatch.
    """
    comp = _Compiler(cfg, entity, N.icu_available(spark) if icu is None else icu)
    i = _internal_side(internal, comp).alias("i")
    product_keys = None
    if entity.name == "price":
        if stripe_products is None:
            raise ValueError("compare(price) needs stripe_products to map price.product to a product key")
        product_keys = stripe_products.select(F.col("id").alias("_pid"), stripe_product_key(cfg).alias("_product_key"))
        if cfg.detect.broadcast_max_rows and stripe_products.count() <= cfg.detect.broadcast_max_rows:
            product_keys = F.broadcast(product_keys)
    skey = stripe_product_key(cfg) if entity.name == "product" else stripe_price_key(cfg)
    s = _stripe_side(stripe, comp, skey, product_keys).alias("s")
    j = i.join(s, F.col("i.key") == F.col("s.key"), "full_outer")

    ip, sp = F.col("i.key").isNotNull(), F.col("s.p").isNotNull()
    ia, sa = F.col("i.active"), F.col("s.p.active")
    both = ip & sp
    live = both & (ia | sa)  # both present and not both inactive
    n_active = F.size(F.col("s.active_ids"))
    key = F.coalesce(F.col("i.key"), F.col("s.key"))
    sid = F.col("s.p.id")
    vi, vs, ti, ts = F.col("i.v"), F.col("s.p.v"), F.col("i.ts"), F.col("s.p.ts")
    fields_differ = (F.col("i.fp") != F.col("s.p.fp")) | comp.tolerant_differ(vi, vs)
    if entity.name == "price":
        product_differs = ~F.col("i.product_key").eqNullSafe(F.col("s.p.product_key"))
    else:
        product_differs = F.lit(False)

    candidate = (
        (ip & ~sp & ia)
        | (~ip & (n_active > 0))
        | (both & (n_active >= 2))
        | (live & (fields_differ | product_differs))
    )

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
        F.when(ip & ~sp & ia, one("missing_in_stripe", key, null, None, null, null, "internal", "create")).otherwise(empty),
        F.when(
            ~ip,
            F.transform(
                F.col("s.active_ids"),
                lambda x: F.struct(
                    F.col("s.key").alias("key"), x.alias("stripe_id"), _lit("missing_in_internal").alias("kind"),
                    null.alias("attribute"), null.alias("internal_value"), null.alias("stripe_value"),
                    null.alias("owner"), _lit(mii_action).alias("action"),
                ),
            ).cast(ROW_TYPE),
        ).otherwise(empty),
        F.when(both & (n_active >= 2), one("duplicate_in_stripe", key, others, None, null, null, None, "review")).otherwise(empty),
        F.when(
            live & product_differs,
            one("price_product_mismatch", key, sid, "product", F.col("i.product_key") if entity.name == "price" else null,
                F.col("s.p.product_key") if entity.name == "price" else null, "internal", "replace"),
        ).otherwise(empty),
        F.when(live & fields_differ, comp.field_rows(key, sid, vi, vs, ti, ts)).otherwise(empty),
    ]
    rows = F.concat(*parts)
    return j.where(candidate).select(F.lit(entity.name).alias("entity"), F.inline(rows))


def discrepancies(spark: SparkSession, cfg: Config, frames: dict[str, DataFrame], run_id: str,
                  detected_at: dt.datetime | None = None) -> DataFrame:
    """Both entities' rows in DISCREPANCIES_SCHEMA order; ``frames`` keyed by silver table name."""
    icu = N.icu_available(spark)
    products = compare(spark, cfg, PRODUCT, frames[tables.SILVER_INTERNAL_PRODUCTS], frames[tables.SILVER_STRIPE_PRODUCTS], icu=icu)
    prices = compare(
        spark, cfg, PRICE, frames[tables.SILVER_INTERNAL_PRICES], frames[tables.SILVER_STRIPE_PRICES],
        stripe_products=frames[tables.SILVER_STRIPE_PRODUCTS], icu=icu,
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


def detect(run) -> dict[str, int]:
    """Read the silver tables, write this run's rows to gold.discrepancies (replacing any earlier
    rows of the same run_id), record counts and versions read in the ledger, return the counts."""
    spark, cfg = run.spark, run.cfg
    with run.stage("detect") as st:
        frames = {}
        for name in SILVER_INPUTS:
            run.read_version(st, name)
            frames[name] = tables.read(spark, cfg, name, hint="run `recon land internal` and `recon land stripe` first")
        out = discrepancies(spark, cfg, frames, run.run_id)
        cond = "run_id = '" + run.run_id.replace("'", "''") + "'"
        tables.replace_where(spark, cfg, tables.GOLD_DISCREPANCIES, out, cond)
        written = tables.read(spark, cfg, tables.GOLD_DISCREPANCIES).where(cond)
        counts: dict[str, int] = {"discrepancies": 0, **{k: 0 for k in KINDS}}
        for r in written.groupBy("entity", "kind").count().collect():  # aggregate: at most 10 count rows
            counts["discrepancies"] += r["count"]
            counts[r["kind"]] = counts.get(r["kind"], 0) + r["count"]
            counts[f"{r['entity']}.{r['kind']}"] = r["count"]
        st.counts.update(counts)
    return counts
