"""Discrepancies -> a correction batch (the outbox ``gold.corrections``) and pull corrections for
the internal system (``gold.internal_corrections``), guarded by the blast-radius guard.

Spark SQL expressions only (no UDF, no collect of rows). Rules (../shared/design.md, docs/internals.md):

- ``missing_in_stripe`` product -> ``create_product`` with a deterministic id (``prod_`` + sha256 of
  the internal key, or the key itself with ``mapping.product_key: id``): a second create is
  ``resource_already_exists``, i.e. already applied.
- ``field_mismatch`` + ``push`` on a product -> one ``update_product`` per product with only the
  differing internal-owned attributes (a metadata key is unset with ``""``); ``active`` pushed to
  false -> ``archive_product`` (never delete). ``pull`` -> a row in gold.internal_corrections.
- ``missing_in_stripe`` price -> ``create_price`` (``lookup_key`` = price id). Its product is the
  primary Stripe product of the internal product, or the product created in this plan (then the
  correction ``depends_on`` that create). A price whose product is neither is quarantined.
- ``replace`` (amount/currency/interval/interval_count, ``price_product_mismatch``) ->
  ``replace_price``: create the new price with ``transfer_lookup_key``, move the product's
  ``default_price`` if the old price was it (unset it when the price moves to another product; push
  decides from the live product), archive the old price. ``active`` pushed to false ->
  ``archive_price``; nickname/active=true -> ``update_price``.
- ``missing_in_internal`` with action ``archive`` -> archive (never when the internal input is empty);
  review/ignore actions and duplicates produce no Stripe write.

``correction_id`` = ``idempotency_key`` = sha256 of (entity, key, stripe id, operation, payload JSON)
where the payload is the request parameters as JSON with a fixed field order and sorted metadata:
re-planning the same discrepancies gives the same ids. ``observed`` is the Stripe object's values as
landed at detection (nulls kept), used by the pusher's verify-before-write.
``plan_hash`` = sha256 of the sorted correction ids.

Example::

    summary = plan(run)          # {"corrections": 12, "plan_hash": "9f..", "status": "planned", ...}
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from . import catalog, incremental, ledger, records, silver, tables
from . import guard as guard_mod
from .config import Attribute, Config
from .errors import HeldError, InputError
from .lease import sql_literal

log = logging.getLogger(__name__)

PRODUCT_OPS = ("create_product", "update_product", "archive_product")
PRICE_OPS = ("create_price", "replace_price", "update_price", "archive_price")
ARCHIVE_OPS = ("archive_product", "archive_price")
DETECT_STAGE = "detect"
PLAN_STAGE = "plan"
SILVER_TABLES = tuple(silver.SIDES)
#: The plan ledger count that says whether archives could be planned (1) or not (0: empty internal input).
ARCHIVES_ALLOWED = "archives_allowed"
NULLS_KEPT = {"ignoreNullFields": "false"}


@dataclass
class PlanFrames:
    """What :func:`build_corrections` returns: all lazily evaluated frames."""

    corrections: DataFrame  # CORRECTIONS_SCHEMA columns except plan_hash/status bookkeeping
    internal: DataFrame  # INTERNAL_CORRECTIONS_SCHEMA
    unplannable: DataFrame  # entity, key, reason, record (to quarantine)


# -- small SQL helpers ----------------------------------------------------------------------------

def _sorted_map(col: str) -> str:
    """A map with entries sorted by key (to_json keeps insertion order: this makes it canonical)."""
    return f"map_from_entries(array_sort(map_entries(coalesce({col}, map()))))"


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _stripe_product_key(cfg: Config, alias: str) -> str:
    if cfg.mapping.product_key == "id":
        return f"{alias}.id"
    return f"{alias}.metadata['internal_id']"


def _stripe_price_key(cfg: Config, alias: str) -> str:
    return f"{alias}.id" if cfg.mapping.price_key == "id" else f"{alias}.lookup_key"


def _det_product_id(cfg: Config, key: str) -> str:
    if cfg.mapping.product_key == "id":
        return key
    return f"concat('prod_', substr(sha2({key}, 256), 1, 24))"


def _primary_products(sp: DataFrame) -> DataFrame:
    """(pkey, sid): the primary Stripe product per internal key (records.py: active first, oldest,
    smallest id). ``sp`` carries ``_key`` and ``_primary`` (stored by land, or derived by the stage)."""
    return (records.primary_rows(sp).where(F.col(records.KEY).isNotNull())
            .select(F.col(records.KEY).alias("pkey"), F.col("id").alias("sid")))


def _product_observed(cfg: Config) -> Column:
    fields = ["'active', sp.active", f"'metadata', {_sorted_map('sp.metadata')}"]
    for name, attr in sorted(cfg.attributes.product.items()):
        if name in ("active", "metadata"):
            continue
        fields.append(f"'{attr.stripe}', sp.{_q(attr.stripe)}")
    fields.append("'default_price', sp.default_price")
    fields.append("'id', sp.id")
    return F.to_json(F.expr(f"named_struct({', '.join(sorted(fields))})"), NULLS_KEPT)


def _price_observed(alias: str = "spr") -> Column:
    a = alias
    return F.to_json(
        F.expr(
            f"named_struct('active', {a}.active, 'currency', {a}.currency, 'id', {a}.id, "
            f"'interval', {a}.`interval`, 'interval_count', {a}.interval_count, 'lookup_key', {a}.lookup_key, "
            f"'metadata', {_sorted_map(f'{a}.metadata')}, 'nickname', {a}.nickname, 'product', {a}.product, "
            f"'unit_amount', {a}.unit_amount)"
        ),
        NULLS_KEPT,
    )


def _set_in_place(attr: Attribute) -> bool:
    """A scalar price attribute that update_price sets from its internal value (catalog.py says which
    parameters Stripe updates). ``active`` has its own line (true re-activates, false is archive_price);
    a ``while_unspecified`` parameter (tax_behavior) needs Stripe's current value to choose between an
    update and a replace_price, which silver does not land yet, so it is not planned in place."""
    param = catalog.param_of("price", attr.stripe)
    return (param is not None and param.change == "update" and param.name == attr.stripe
            and attr.compare != "map" and param.name not in ("active", "metadata"))


def _price_create_struct(extra: str = "") -> str:
    """named_struct of the create-price parameters from an internal price row ``ip`` and ``product_sid``."""
    return (
        "named_struct('currency', lower(trim(ip.currency)), 'lookup_key', ip.price_id, "
        "'nickname', nullif(trim(ip.nickname), ''), 'product', res.product_sid, "
        "'recurring', CASE WHEN nullif(trim(ip.`interval`), '') IS NOT NULL THEN "
        "named_struct('interval', lower(trim(ip.`interval`)), 'interval_count', ip.interval_count) END"
        f"{extra}, 'unit_amount', ip.unit_amount)"
    )


OUT_COLS = ["seq", "entity", "key", "stripe_id", "operation", "payload", "observed", "depends_on"]


# -- the pure part ----------------------------------------------------------------------------------

def _groups(disc: DataFrame, entity: str) -> DataFrame:
    """One row per (key, stripe_id) of one entity's discrepancies, with what the planner asks of them:
    the pushed attributes (sorted) and whether a create, a replace or an orphan archive was decided.
    A ``missing_in_stripe`` row has no stripe id, so a key's create is one group. ``key_replaced``:
    some group of the same key asks for a replace (its in-place update is then left to the new price)."""
    push = "kind = 'field_mismatch' AND action = 'push' AND attribute IS NOT NULL"
    return (
        disc.where(F.col("entity") == entity)
        .groupBy("key", "stripe_id")
        .agg(
            F.expr(f"array_sort(collect_set(CASE WHEN {push} THEN attribute END))").alias("attrs"),
            F.expr(f"count_if({push}) > 0").alias("pushed"),
            F.expr("count_if(kind = 'missing_in_stripe' AND action = 'create') > 0").alias("create"),
            F.expr("count_if(action = 'replace' AND stripe_id IS NOT NULL) > 0").alias("replace"),
            F.expr("count_if(kind = 'missing_in_internal' AND action = 'archive' AND stripe_id IS NOT NULL) > 0")
            .alias("orphan"),
        )
        .withColumn("key_replaced", F.expr("max(replace) OVER (PARTITION BY key)"))
    )


def _row(seq: int, entity: str, operation: str, payload: Column, observed: Column,
         depends_on: Column | None = None, stripe_id: Column | None = None) -> Column:
    """One correction (a struct of OUT_COLS) built from a context row (``g`` = its discrepancy group)."""
    return F.struct(
        F.lit(seq).alias("seq"), F.lit(entity).alias("entity"), F.col("g.key").alias("key"),
        (F.col("g.stripe_id") if stripe_id is None else stripe_id).alias("stripe_id"),
        F.lit(operation).alias("operation"), payload.alias("payload"), observed.alias("observed"),
        (F.lit(None).cast("string") if depends_on is None else depends_on).alias("depends_on"),
    )


def _corrections_of(ctx: DataFrame, kinds: list[tuple[str, Column]]) -> DataFrame:
    """The corrections of one context frame: per row, one for each kind (condition, :func:`_row`)
    whose SQL condition holds. One projection and one scan of ``ctx``, whatever the number of kinds
    (a union of one filter per kind would scan it, and start its tasks, once per kind)."""
    chosen = F.array(*[F.when(F.expr(cond), row) for cond, row in kinds])
    return ctx.select(F.explode(F.filter(chosen, lambda c: c.isNotNull())).alias("c")).select("c.*")


def build_corrections(
    disc: DataFrame,
    ip: DataFrame,
    ipr: DataFrame,
    sp: DataFrame,
    spr: DataFrame,
    cfg: Config,
    run_id: str,
    allow_archives: bool = True,
    small: Callable[[DataFrame], DataFrame] = F.broadcast,
    keep: Callable[[DataFrame], DataFrame] = lambda df: df,
    materialize: Callable[[DataFrame], DataFrame] = lambda df: df,
) -> PlanFrames:
    """Turn one detect run's discrepancies plus the silver tables into corrections (pure, lazy).

    ``disc``: DISCREPANCIES_SCHEMA rows of one run; ``ip``/``ipr``/``sp``/``spr``: silver internal
    products/prices and Stripe products/prices (``sp`` with ``_key`` and ``_primary``, see
    records.py). ``allow_archives=False`` (empty internal input) drops every archive.

    One context row per discrepancy group and entity (:func:`_groups`): the group joined once with
    its internal row and its Stripe row (prices also with the product resolution and the old price's
    product). Every kind of correction is then a condition and a struct in one projection of its
    context frame (:func:`_corrections_of`), so the plan joins each silver table once and scans each
    context once, whatever the number of correction kinds. Each silver table
    is first cut down to the rows the discrepancies name (:func:`records.rows_named`, with ``small``
    applied to the key sets: a broadcast hint while they are small), so no join shuffles a whole table. ``keep``
    (lazy persist) is applied to the cut tables used twice, ``materialize`` to the two context frames
    (the stage computes them once, each in one job, and every correction kind reads them from memory).
    """
    if records.PRIMARY not in sp.columns:
        sp = records.stripe_keyed(cfg, "product", sp, ready=False)
    pgroups = _groups(disc, "product").alias("g")
    prgroups = _groups(disc, "price").alias("g")
    ip = records.rows_named(ip, "product_id", pgroups.select("key"), small)
    ipr = keep(records.rows_named(ipr, "price_id", prgroups.select("key"), small))
    spr = keep(records.rows_named(spr, "id", prgroups.select("stripe_id"), small))
    sp_all = sp
    named_products = pgroups.select("stripe_id").unionByName(spr.select(F.col("product").alias("stripe_id")))
    sp = keep(records.rows_named(sp, "id", named_products, small))
    prim = records.rows_named(_primary_products(sp_all), "pkey", ipr.select("product_id"), small).alias("prim")
    ip_eff = "(coalesce(ip.active, true) AND ip.deleted_at IS NULL)"

    # -- products: g (the group), ip (its internal row), sp (its Stripe row) -------------------
    pctx = materialize(
        pgroups.join(small(ip).alias("ip"), F.expr("g.key = ip.product_id"), "left")
        .join(small(sp).alias("sp"), F.expr("g.stripe_id = sp.id"), "left")
    )
    has_ip = "ip.product_id IS NOT NULL"
    excluded = ", ".join(f"'{k}'" for k in cfg.metadata.excluded_keys) or "''"
    meta_create = (
        f"map_filter(coalesce(ip.metadata, map()), (k, v) -> v IS NOT NULL AND NOT array_contains(array({excluded}), k))"
    )
    if cfg.mapping.product_key == "metadata.internal_id":
        meta_create = f"map_concat({meta_create}, map('internal_id', ip.product_id))"
    new_id = _det_product_id(cfg, "ip.product_id")
    create_cond = f"g.create AND {has_ip}"
    create_p = _row(
        0, "product", "create_product",
        F.expr(
            f"to_json(named_struct('description', nullif(trim(ip.description), ''), 'id', {new_id}, "
            f"'metadata', CASE WHEN size({meta_create}) > 0 THEN {_sorted_map(meta_create)} END, "
            f"'name', ip.name))"
        ),
        F.lit(None).cast("string"), stripe_id=F.expr(new_id),
    )

    upd_fields = []
    for name, attr in sorted(cfg.attributes.product.items(), key=lambda kv: kv[1].stripe):
        if name in ("active", "metadata"):
            continue
        upd_fields.append(
            f"'{attr.stripe}', CASE WHEN array_contains(g.attrs, '{name}') "
            f"THEN coalesce(CAST(ip.{_q(attr.internal)} AS STRING), '') END"
        )
    meta_col = _q(cfg.attributes.product["metadata"].internal) if "metadata" in cfg.attributes.product else "metadata"
    meta_upd = (
        "map_from_entries(array_sort(transform(filter(g.attrs, a -> startswith(a, 'metadata.')), "
        f"a -> named_struct('k', substr(a, 10), 'v', coalesce(ip.{meta_col}[substr(a, 10)], '')))))"
    )
    upd_fields += [
        "'active', CASE WHEN array_contains(g.attrs, 'active') THEN true END",
        f"'metadata', CASE WHEN size({meta_upd}) > 0 THEN {meta_upd} END",
    ]
    upd_fields.sort()
    upd_payload = f"to_json(named_struct({', '.join(upd_fields)}))"
    pushed_p = f"g.pushed AND {has_ip}"
    product_kinds = [
        (create_cond, create_p),
        (f"{pushed_p} AND {ip_eff} AND {upd_payload} <> '{{}}'",
         _row(0, "product", "update_product", F.expr(upd_payload), _product_observed(cfg))),
    ]
    if allow_archives:
        archive = _row(0, "product", "archive_product", F.lit('{"active":false}'), _product_observed(cfg))
        product_kinds += [(f"{pushed_p} AND NOT {ip_eff} AND array_contains(g.attrs, 'active')", archive),
                          ("g.orphan", archive)]

    # -- prices: g, ip (the internal price), res (its product resolution), spr (the Stripe price),
    # op (the Stripe product the Stripe price belongs to) -------------------------------------
    created = (pctx.where(create_cond).select(create_p.alias("c")).select("c.*")
               .select(F.col("key").alias("ckey"), F.col("stripe_id").alias("cid"), _correction_id().alias("cdep")))
    # product resolution for an internal product id: existing primary, else the one being created
    res = (
        ipr.select(F.col("price_id").alias("rp"), F.col("product_id").alias("rprod")).alias("r")
        .join(small(prim), F.expr("r.rprod = prim.pkey"), "left")
        .join(small(created).alias("c"), F.expr("r.rprod = c.ckey"), "left")
        .selectExpr("r.rp", "coalesce(prim.sid, c.cid) AS product_sid",
                    "CASE WHEN prim.sid IS NULL THEN c.cdep END AS dep")
    )
    prctx = materialize(
        prgroups.join(small(ipr).alias("ip"), F.expr("g.key = ip.price_id"), "left")
        .join(small(res).alias("res"), F.expr("ip.price_id = res.rp"), "left")
        .join(small(spr).alias("spr"), F.expr("g.stripe_id = spr.id"), "left")
        .join(small(sp).alias("op"), F.expr("spr.product = op.id"), "left")
    )
    has_ip = "ip.price_id IS NOT NULL"
    ipr_eff = "coalesce(ip.active, true)"
    resolved = "res.product_sid IS NOT NULL"

    create_cond = f"g.create AND {has_ip}"
    replace_cond = f"g.replace AND {has_ip} AND {ipr_eff}"
    replace_payload = F.expr(
        "to_json(named_struct('archive', g.stripe_id, "
        f"'create', {_price_create_struct(', ' + chr(39) + 'transfer_lookup_key' + chr(39) + ', true')}, "
        "'default_price_of', CASE WHEN op.default_price = g.stripe_id AND spr.product = res.product_sid "
        "THEN res.product_sid END))"
    )
    no_product = prctx.where(f"({create_cond} OR {replace_cond}) AND NOT {resolved}").select(
        F.lit("price").alias("entity"), F.col("g.key").alias("key"), F.lit("product_not_in_stripe").alias("reason"),
        F.to_json(F.struct(F.col("ip.price_id"), F.col("ip.product_id"))).alias("record"))

    pr_fields = ["'active', CASE WHEN array_contains(g.attrs, 'active') THEN true END"]
    for name, attr in cfg.attributes.price.items():
        if _set_in_place(attr):
            pr_fields.append(
                f"'{attr.stripe}', CASE WHEN array_contains(g.attrs, '{name}') "
                f"THEN coalesce(CAST(ip.{_q(attr.internal)} AS STRING), '') END"
            )
    pr_fields.sort()
    pr_payload = f"to_json(named_struct({', '.join(pr_fields)}))"
    pushed_pr = f"g.pushed AND {has_ip}"
    price_kinds = [
        (f"{create_cond} AND {resolved}",
         _row(1, "price", "create_price", F.expr(f"to_json({_price_create_struct()})"), F.lit(None).cast("string"),
              depends_on=F.col("res.dep"), stripe_id=F.lit(None).cast("string"))),
        (f"{replace_cond} AND {resolved}",
         _row(1, "price", "replace_price", replace_payload, _price_observed(), depends_on=F.col("res.dep"))),
        (f"{pushed_pr} AND {ipr_eff} AND NOT g.key_replaced AND {pr_payload} <> '{{}}'",
         _row(1, "price", "update_price", F.expr(pr_payload), _price_observed())),
    ]
    if allow_archives:
        archive = _row(1, "price", "archive_price", F.lit('{"active":false}'), _price_observed())
        price_kinds += [(f"{pushed_pr} AND NOT {ipr_eff} AND array_contains(g.attrs, 'active')", archive),
                        ("g.orphan", archive)]

    allc = _corrections_of(pctx, product_kinds).unionByName(_corrections_of(prctx, price_kinds))
    corrections = allc.select(
        _correction_id().alias("correction_id"), F.lit(run_id).alias("run_id"),
        *[F.col(c) for c in OUT_COLS],
    ).withColumns({
        "idempotency_key": F.concat(F.lit("recon-"), F.col("correction_id")),
        "seq": F.col("seq").cast("int"),
    })

    d = disc.alias("d")
    internal = (
        d.filter("d.action = 'pull'")
        .select(
            F.sha2(F.to_json(F.struct("d.entity", "d.key", "d.attribute", "d.stripe_value")), 256).alias(
                "correction_id"),
            F.lit(run_id).alias("run_id"), F.col("d.entity").alias("entity"), F.col("d.key").alias("key"),
            F.col("d.attribute").alias("attribute"), F.col("d.internal_value").alias("current_value"),
            F.col("d.stripe_value").alias("new_value"), F.col("d.stripe_id").alias("stripe_id"),
            F.current_timestamp().alias("created_at"),
        )
        .dropDuplicates(["correction_id"])
    )
    return PlanFrames(corrections, internal, no_product)


def _correction_id() -> Column:
    """sha256 over (entity, key, stripe_id, operation, payload) as one JSON struct (no separator
    collisions)."""
    return F.sha2(
        F.to_json(F.struct("entity", "key", "stripe_id", "operation", "payload"), NULLS_KEPT), 256
    )


# -- the stage --------------------------------------------------------------------------------------

def _source_run_id(run: Any, recent: ledger.Recent) -> str:
    """The detect run to plan: this run's own detect, else the newest successful detect run
    (``recent``: :func:`ledger.recent_ok` with this run's rows)."""
    detects = recent.get(DETECT_STAGE, [])
    if detects:
        own = [r["run_id"] for r in detects if r["run_id"] == run.run_id]
        return own[0] if own else detects[0]["run_id"]
    latest = tables.latest_run_id(run.spark, run.cfg, tables.GOLD_DISCREPANCIES)
    if latest is None:
        raise InputError("no detect run found (gold.runs has no ok 'detect' row and gold.discrepancies is "
                         "empty): run `recon detect` first")
    return latest


@dataclass(frozen=True)
class _Previous:
    """The last plan (ok or held) this plan builds on: it ran under this configuration, over the
    discrepancy rows of a detect that read the silver versions it read, and all its corrections are
    still under its run id."""

    run_id: str
    plan_hash: str
    counts: dict[str, int]
    source_run_id: str  # the detect run it planned
    versions: dict[str, int]  # the silver versions it and that detect read

    def read_the_same(self, versions: dict[str, int]) -> bool:
        return all(versions.get(t) == v for t, v in self.versions.items())


def _silver_versions(row: Any) -> dict[str, int] | None:
    """The four silver versions a ledger row read (None when it did not read them all)."""
    got = dict(row["versions_read"] or {})
    return {t: int(got[t]) for t in SILVER_TABLES} if all(t in got for t in SILVER_TABLES) else None


def _previous_plan(run: Any, recent: ledger.Recent, source: str, versions: dict[str, int],
                   spec: int, archives_allowed: bool) -> _Previous | None:
    """The latest ok or held plan of another run when this plan can build on it (:class:`_Previous`):
    the same configuration (``spec``: incremental.spec_id) and archive rule, its source detect read
    the versions it read, this plan's source detect read the versions this plan reads
    (``versions``), both under that configuration, and gold.corrections and
    gold.internal_corrections still hold all its rows under its run id. None otherwise (the plan is
    computed in full)."""
    spark, cfg = run.spark, run.cfg
    plans = [r for r in recent.get(PLAN_STAGE, []) if r["run_id"] != run.run_id]
    if not plans:
        return None
    last = plans[0]
    counts = {k: int(v) for k, v in (last["counts"] or {}).items()}
    if (counts.get(incremental.SPEC_COUNT) != spec or "internal_corrections" not in counts
            or counts.get(ARCHIVES_ALLOWED) != int(archives_allowed)):
        return None  # another configuration or archive rule, or a plan from before these counts
    its, mine = _silver_versions(last), {t: versions.get(t) for t in SILVER_TABLES}
    row = (tables.read(spark, cfg, tables.GOLD_PLANS).where(F.col("run_id") == last["run_id"])
           .select("plan_hash", "source_run_id").first())  # one row: that plan's
    if its is None or row is None:
        return None
    detects = {r["run_id"]: r for r in recent.get(DETECT_STAGE, [])}
    for detect_id, read in ((source, mine), (row["source_run_id"], its)):
        d = detects.get(detect_id)
        if d is None or _silver_versions(d) != read or (d["counts"] or {}).get(incremental.SPEC_COUNT) != spec:
            return None
    for name, count in ((tables.GOLD_CORRECTIONS, "corrections"), (tables.GOLD_INTERNAL_CORRECTIONS,
                                                                   "internal_corrections")):
        if counts[count] and tables.read(spark, cfg, name).where(F.col("run_id") == last["run_id"]).count() != counts[count]:
            return None  # some were re-planned or removed since
    return _Previous(last["run_id"], row["plan_hash"], counts, row["source_run_id"], its)


def _restamp(run: Any, prev: _Previous, status: str) -> int:
    """Make the previous plan's corrections this run's, as a re-plan of the same rows would: the run
    id and status move (applied stays applied: Stripe was not observed in another state since, or a
    silver table would have moved), internal corrections and unplannable records likewise. Returns
    the unplannable records copied."""
    spark, cfg = run.spark, run.cfg
    was = f"run_id = {sql_literal(prev.run_id)}"
    tables.update_where(spark, cfg, tables.GOLD_CORRECTIONS, was, {
        "run_id": sql_literal(run.run_id),
        "status": f"CASE WHEN status = 'applied' THEN status ELSE {sql_literal(status)} END",
        "last_error": "CASE WHEN status = 'applied' THEN last_error END",
        "updated_at": "current_timestamp()",
    })
    if prev.counts.get("internal_corrections"):
        tables.update_where(spark, cfg, tables.GOLD_INTERNAL_CORRECTIONS, was,
                            {"run_id": sql_literal(run.run_id), "created_at": "current_timestamp()"})
    return _quarantine(run, None, _carried_quarantine(run, prev, None, False))


def _carried(run: Any, prev: _Previous, name: str, replanned: DataFrame, broadcast: bool) -> DataFrame:
    """The previous plan's rows of ``name`` (gold.corrections or gold.internal_corrections) outside the
    groups planned again, as this run's rows."""
    rows = tables.read(run.spark, run.cfg, name).where(F.col("run_id") == F.lit(prev.run_id))
    return incremental.by_name(rows, replanned, "left_anti", broadcast).withColumn("run_id", F.lit(run.run_id))


def _carried_quarantine(run: Any, prev: _Previous, replanned: DataFrame | None, broadcast: bool) -> DataFrame | None:
    """The previous plan's unplannable records (outside ``replanned`` when given), as this run's."""
    if not prev.counts.get("unplannable"):
        return None
    rows = (tables.read(run.spark, run.cfg, tables.GOLD_QUARANTINE)
            .where((F.col("run_id") == F.lit(prev.run_id)) & (F.col("stage") == "plan")))
    if replanned is not None:  # plan-stage records are prices, always named by their key
        rows = incremental.by_name(rows.withColumn("stripe_id", F.lit(None).cast("string")), replanned, "left_anti",
                                   broadcast).drop("stripe_id")
    return rows.withColumns({"run_id": F.lit(run.run_id), "quarantined_at": F.current_timestamp()})


def _replanned(changed: DataFrame, ipr: DataFrame, small: Callable[[DataFrame], DataFrame]) -> tuple[DataFrame, int]:
    """The discrepancy groups an incremental plan plans again (``entity``, ``key``, ``sid`` as in
    incremental.changed_keys): the changed keys, and the product of each changed internal price (a
    price's create or replace reads its product's resolution, and that product's create when it is
    being created). Small, computed once, and how many."""
    price_keys = changed.where((F.col("entity") == "price") & F.col("key").isNotNull()).select(F.col("key").alias("_pk"))
    products = (ipr.join(small(price_keys), F.col("price_id") == F.col("_pk"), "left_semi")
                .select(F.lit("product").alias("entity"), F.col("product_id").cast("string").alias("key"),
                        F.lit(None).cast("string").alias("sid")))
    out = changed.unionByName(products).distinct().localCheckpoint(eager=True)
    return out, out.count()  # an aggregate


def plan(run: Any) -> dict[str, Any]:
    """Plan corrections for the latest detect run, guard the plan, write gold.corrections,
    gold.internal_corrections and gold.plans. Raises :class:`HeldError` (exit 3) when held.

    With ``detect.reuse_unchanged`` it builds on the last plan (:func:`_previous_plan`): over the same
    silver versions its corrections stand as they are (restamped); over later versions only the
    groups the change feed names since (:func:`_replanned`) are planned again and the last plan's
    other corrections are carried, which is what a plan of every row would write (a group's
    corrections depend only on its discrepancy rows and its silver rows)."""
    spark, cfg = run.spark, run.cfg
    with run.stage("plan") as st:
        recent = ledger.recent_ok(spark, cfg, (DETECT_STAGE, PLAN_STAGE, guard_mod.LAND_INTERNAL_STAGE,
                                               guard_mod.LAND_STRIPE_STAGE), run_id=run.run_id, held_too=[PLAN_STAGE])
        source = _source_run_id(run, recent)
        hint = "run `recon land internal`, `recon land stripe` and `recon detect` first"
        names = [tables.GOLD_DISCREPANCIES, tables.SILVER_INTERNAL_PRODUCTS, tables.SILVER_INTERNAL_PRICES,
                 tables.SILVER_STRIPE_PRODUCTS, tables.SILVER_STRIPE_PRICES]
        commits = {name: run.read_version(st, name) for name in names}
        disc = tables.read(spark, cfg, tables.GOLD_DISCREPANCIES, hint).filter(F.col("run_id") == source)
        ip, ipr, sp, spr = (tables.read(spark, cfg, n, hint) for n in names[1:])
        silver_frames = dict(zip(names[1:], (ip, ipr, sp, spr), strict=True))
        # Delta answers a bare count from its log: no table is scanned to size the catalog.
        n_ip, n_ipr = ip.count(), ipr.count()
        n_stripe = sp.count() + spr.count()
        allow_archives = n_ip > 0
        spec = incremental.spec_id(spark, silver.compared_config(cfg, commits)[0])  # as detect's
        prev = (_previous_plan(run, recent, source, st.versions_read, spec, allow_archives)
                if cfg.detect.reuse_unchanged else None)
        same = prev is not None and prev.read_the_same(st.versions_read)
        replanned, n_replanned, replanned_bcast = None, 0, True
        if prev is not None and not same:
            try:
                changed, n_changed = incremental.changed_keys(run, incremental.Base(prev.source_run_id, prev.versions),
                                                      st.versions_read, commits, silver_frames)
                replanned, n_replanned = _replanned(
                    changed, ipr, F.broadcast if n_changed <= cfg.detect.broadcast_max_rows else (lambda df: df))
                replanned_bcast = n_replanned <= cfg.detect.broadcast_max_rows
            except incremental.NoBase as why:
                st.message = f"full plan: {why}"
                prev = None
        small_frames = records.SmallFrames()
        corr = None
        try:
            if same:  # the same corrections as the last plan: restamped below, not planned again
                plan_hash, n = prev.plan_hash, prev.counts["corrections"]
                counts = {op: prev.counts.get(op, 0) for op in PRODUCT_OPS + PRICE_OPS}
            else:
                if replanned is not None:
                    disc = incremental.by_name(disc, replanned, "left_semi", replanned_bcast)
                disc = small_frames.keep(disc)
                n_disc = disc.count()
                small_hint = F.broadcast if n_disc <= cfg.detect.broadcast_max_rows else (lambda df: df)
                ready = silver.stored_ready(spark, cfg, tables.SILVER_STRIPE_PRODUCTS, sp,
                                            commits[tables.SILVER_STRIPE_PRODUCTS])
                sp = records.stripe_keyed(cfg, "product", sp, ready, frames=small_frames)
                frames = build_corrections(disc, ip, ipr, sp, spr, cfg, run.run_id, allow_archives=allow_archives,
                                           small=small_hint, keep=small_frames.keep,
                                           materialize=small_frames.materialize)
                corr, internal = frames.corrections, frames.internal
                if replanned is not None:
                    corr = corr.unionByName(_carried(run, prev, tables.GOLD_CORRECTIONS, replanned, replanned_bcast)
                                            .select(*corr.columns))
                    internal = internal.unionByName(
                        _carried(run, prev, tables.GOLD_INTERNAL_CORRECTIONS, replanned, replanned_bcast)
                        .withColumn("created_at", F.current_timestamp()).select(*internal.columns))
                corr = corr.cache()
                agg = corr.agg(
                    F.sha2(F.concat_ws(",", F.array_sort(F.collect_list("correction_id"))), 256).alias("plan_hash"),
                    F.count("*").alias("n"),
                    *[F.sum(F.when(F.col("operation") == op, 1).otherwise(0)).alias(op) for op in PRODUCT_OPS + PRICE_OPS],
                ).first()
                plan_hash = agg["plan_hash"]
                counts = {op: int(agg[op] or 0) for op in PRODUCT_OPS + PRICE_OPS}
                n = int(agg["n"])
            archives = sum(counts[op] for op in ARCHIVE_OPS)
            now, prev_internal = guard_mod.internal_snapshot_counts(spark, cfg, recent)
            verdict = guard_mod.evaluate(cfg.guard, guard_mod.GuardInput(
                writes=n, archives=archives, catalog=max(n_ip + n_ipr, n_stripe),
                internal_now=now, internal_prev=prev_internal,
                creates=counts.get("create_product", 0) + counts.get("create_price", 0),
                stripe_quarantined=guard_mod.stripe_quarantined(spark, cfg, recent),
                stripe_snapshots=guard_mod.stripe_snapshot_counts(spark, cfg, recent)))
            reasons = list(verdict.reasons)
            if not allow_archives:
                reasons.append("internal input is empty: no archive was planned")
            status = "held" if verdict.held else "planned"

            if same:
                n_unplannable = _restamp(run, prev, status)
                n_internal = prev.counts["internal_corrections"]
                st.message = f"silver unchanged since plan run {prev.run_id}: its corrections stand (none planned again)"
            else:
                out = corr.select(
                    "correction_id", "run_id", F.lit(plan_hash).alias("plan_hash"), "seq", "entity", "key",
                    "stripe_id", "operation", "payload", "observed", "idempotency_key", F.lit(status).alias("status"),
                    F.lit(0).alias("attempts"), F.lit(None).cast("string").alias("last_error"),
                    F.lit(None).cast("string").alias("result_id"), F.current_timestamp().alias("created_at"),
                    F.current_timestamp().alias("updated_at"), "depends_on",
                )
                # applied stays applied (never re-sent) unless Stripe was observed in another state since;
                # everything else is re-planned with the new observation and status.
                keep = "t.status = 'applied' AND t.observed <=> s.observed"
                tables.merge_rows(spark, cfg, tables.GOLD_CORRECTIONS, out, ["correction_id"], update={
                    "run_id": "s.run_id", "plan_hash": "s.plan_hash", "seq": "s.seq", "depends_on": "s.depends_on",
                    "observed": "s.observed",
                    "status": f"CASE WHEN {keep} THEN t.status ELSE s.status END",
                    "last_error": f"CASE WHEN {keep} THEN t.last_error END",
                    "updated_at": "s.updated_at",
                })
                internal = small_frames.keep(internal)
                n_internal = internal.count()
                if n_internal:  # a MERGE costs seconds even when it has nothing to write
                    tables.merge_rows(spark, cfg, tables.GOLD_INTERNAL_CORRECTIONS, internal, ["correction_id"])
                carried = (_carried_quarantine(run, prev, replanned, replanned_bcast)
                           if replanned is not None else None)
                n_unplannable = _quarantine(run, frames.unplannable, carried)
                if replanned is not None:
                    st.message = (f"incremental from plan run {prev.run_id}: {n_replanned:,} keys planned again, "
                                  "its other corrections carried")
        finally:
            if corr is not None:
                corr.unpersist()
            small_frames.release()

        all_counts = {
            "corrections": n, **counts, "archives": archives, "unplannable": n_unplannable,
            "internal_corrections": n_internal, "catalog_internal": n_ip + n_ipr, "catalog_stripe": n_stripe,
            ARCHIVES_ALLOWED: int(allow_archives),
        }
        if replanned is not None:
            all_counts["replanned_keys"] = n_replanned
        if now is not None:
            all_counts["internal_products_now"] = now
        if prev_internal is not None:
            all_counts["internal_products_prev"] = prev_internal
        plan_row = {"plan_hash": plan_hash, "run_id": run.run_id, "status": status, "counts": all_counts,
                    "reasons": reasons, "created_at": dt.datetime.now(dt.timezone.utc), "approved_at": None,
                    "source_run_id": source}
        tables.append(spark, cfg, tables.GOLD_PLANS, tables.local_rows(spark, [plan_row], tables.PLANS_SCHEMA))
        st.counts.update({**all_counts, incremental.SPEC_COUNT: spec})
        summary: dict[str, Any] = {"plan_hash": plan_hash, "status": status, "source_run_id": source,
                                   **all_counts, "reasons": reasons}
        if verdict.held:
            raise HeldError(
                f"plan {plan_hash} is held by the blast-radius guard: {'; '.join(verdict.reasons)}. "
                f"Nothing will be pushed. Review gold.corrections where plan_hash = '{plan_hash}', then "
                f"release it with: recon push --approve {plan_hash}"
            )
    return summary


def _quarantine(run: Any, unplannable: DataFrame | None, carried: DataFrame | None = None) -> int:
    """Corrections that cannot be planned go to gold.quarantine with their reason (nothing lost), with
    the previous plan's records carried to this run (``carried``: gold.quarantine rows)."""
    parts = [] if carried is None else [carried.select(*tables.QUARANTINE_SCHEMA.names)]
    if unplannable is not None:
        parts.insert(0, unplannable.select(
            F.lit(run.run_id).alias("run_id"), F.lit("plan").alias("stage"), F.lit("plan").alias("source"),
            "entity", "key", F.array("reason").alias("reasons"), "record",
            F.lit(None).cast("string").alias("source_file"), F.current_timestamp().alias("quarantined_at"),
        ))
    if not parts:
        return 0
    rows = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    rows = rows.cache()
    try:
        n = rows.count()
        if n:
            tables.append(run.spark, run.cfg, tables.GOLD_QUARANTINE, rows)
    finally:
        rows.unpersist()
    return n
