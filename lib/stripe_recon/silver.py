"""The derived columns silver carries after its schema columns, and the commit metadata vouching for them.

Land computes them in the pass that writes silver, so detect and plan read them instead of
recomputing them over every row:

- ``_fp``: detect's fingerprint of the compared attributes (detect.py ``_Compiler``);
- Stripe tables: ``_key``, ``_primary``, ``_active_ids`` (records.py) and, on prices, ``_product_key``;
- ``_rh``: the hash of the record as it arrived (land: which raw records are new or changed);
- ``_hash``: the hash of the whole silver row, derived columns included (land: a re-landing MERGEs
  only the rows whose ``_hash`` changed, so the Change Data Feed holds exactly the changes).

The silver commit's ``userMetadata`` (:class:`Commit`, typed) says under which configuration they were made
(``{"fingerprint": <spec id>}``, see :func:`fingerprint_spec`) and, on Stripe prices, which version of
silver.stripe_products the product keys come from (``product_keys_from``). A reader trusts the stored
columns only when the table's latest commit says so for the current configuration
(:func:`stored_ready`); after a config change or a write by another tool it derives them itself. An
internal landing also records the canonical columns its input did not have (:func:`absent_columns`).

Example::

    df, commit = derive(spark, cfg, tables.SILVER_STRIPE_PRODUCTS, rows)   # rows: the silver columns
    tables.overwrite(spark, cfg, tables.SILVER_STRIPE_PRODUCTS, df, commit.as_json())
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import normalise as N
from . import records, tables
from .config import Config

FP, RAW_HASH, ROW_HASH = "_fp", "_rh", "_hash"
# Bump when the meaning of a stored derived column changes, so stored values stop being trusted.
FP_VERSION = 2
# table -> (entity, side)
SIDES = {
    tables.SILVER_INTERNAL_PRODUCTS: ("product", "internal"),
    tables.SILVER_STRIPE_PRODUCTS: ("product", "stripe"),
    tables.SILVER_INTERNAL_PRICES: ("price", "internal"),
    tables.SILVER_STRIPE_PRICES: ("price", "stripe"),
}
#: The landing record's list of canonical columns the internal input did not have (land/internal.py):
#: their attributes are not the internal side's to compare while silver holds that landing (detect.py).
ABSENT = "absent_columns"
#: The runs whose stage ``validate`` quarantine rows were removed from the table by the input gate
#: (validate.py), besides the landing's own run (unknown.py).
QUARANTINE_RUNS = "quarantine_runs"
KEYS = {"internal": {"product": "product_id", "price": "price_id"}, "stripe": {"product": "id", "price": "id"}}


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


@dataclass(frozen=True)
class Landing:
    """The landing a silver version came from, as land records it with the commit."""

    run_id: str | None = None
    spec: str | None = None  # land/common.landing_spec: the specs, format and rules it landed under
    input: dict[str, Any] | None = None  # the input's manifest (rows, h_lo, h_hi; CDC: where): the unchanged check
    rules_spec: str | None = None  # the suite row rules evaluated in the pass (validate vouches with it)
    absent_columns: tuple[str, ...] = ()  # canonical internal columns the input did not have

    @classmethod
    def of(cls, value: Any) -> Landing | None:
        if not isinstance(value, dict):
            return None
        text = {k: value.get(k) if isinstance(value.get(k), str) else None for k in ("run_id", "spec", "rules_spec")}
        manifest = value.get("input")
        return cls(**text, input=manifest if isinstance(manifest, dict) else None,
                   absent_columns=tuple(sorted(_strings(value.get(ABSENT)))))

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in (("run_id", self.run_id), ("spec", self.spec), ("input", self.input),
                                                  ("rules_spec", self.rules_spec)) if v is not None}
        if self.absent_columns:
            out[ABSENT] = list(self.absent_columns)
        return out


@dataclass(frozen=True)
class Commit:
    """What this job attaches to a silver commit (Delta ``userMetadata``), typed: the one place its keys
    are named. :meth:`of` reads any table's metadata (a write by another tool has none: every field
    empty, so nothing stored is trusted); :meth:`as_json` is what the writer records.

    ``fingerprint``: the :func:`fingerprint_spec` the derived columns were made under; on Stripe prices
    ``product_keys_from``: the silver.stripe_products version the product keys come from; ``unique``:
    the columns the writer guarantees unique (validate.py skips those rules); ``landing``;
    ``quarantine_runs``: runs whose input gate removed rows from this version besides the landing's."""

    fingerprint: str | None = None
    product_keys_from: int | None = None
    unique: tuple[str, ...] = ()
    landing: Landing | None = None
    quarantine_runs: tuple[str, ...] = ()

    @classmethod
    def of(cls, meta: Any) -> Commit:
        if isinstance(meta, Commit):
            return meta
        if not isinstance(meta, dict):
            return cls()
        keys_from = meta.get("product_keys_from")
        return cls(
            fingerprint=meta.get("fingerprint") if isinstance(meta.get("fingerprint"), str) else None,
            product_keys_from=keys_from if isinstance(keys_from, int) and not isinstance(keys_from, bool) else None,
            unique=_strings(meta.get("unique")),
            landing=Landing.of(meta.get("landing")),
            quarantine_runs=_strings(meta.get(QUARANTINE_RUNS)),
        )

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.fingerprint is not None:
            out["fingerprint"] = self.fingerprint
        if self.product_keys_from is not None:
            out["product_keys_from"] = self.product_keys_from
        if self.unique:
            out["unique"] = list(self.unique)
        if self.landing is not None:
            out["landing"] = self.landing.as_json()
        if self.quarantine_runs:
            out[QUARANTINE_RUNS] = list(self.quarantine_runs)
        return out

    @property
    def runs(self) -> list[str]:
        """The run ids whose quarantine rows belong to this version: the landing's, then the gate's."""
        landing = self.landing.run_id if self.landing else None
        return [r for r in [landing, *self.quarantine_runs] if r]

    def with_quarantine_run(self, run_id: str) -> Commit:
        return replace(self, quarantine_runs=(*self.quarantine_runs, run_id))


def derived_columns(table: str) -> list[str]:
    """The derived column names ``table`` carries after its schema columns, in order."""
    entity, side = SIDES[table]
    cols = [FP]
    if side == "stripe":
        cols += list(records.STRIPE_KEY_COLUMNS)
        if entity == "price":
            cols.append(records.PRODUCT_KEY)
    return cols + [RAW_HASH, ROW_HASH]


def fingerprint_spec(cfg: Config, table: str, icu: bool) -> str:
    """Id of everything a stored derived column of ``table`` depends on: the compared attributes of
    its entity, metadata ownership, the key mapping, ICU and FP_VERSION. Another config -> another id."""
    entity, side = SIDES[table]
    attrs = cfg.attributes.product if entity == "product" else cfg.attributes.price
    doc = {
        "version": FP_VERSION, "table": table, "icu": icu,
        "attributes": {n: a.model_dump() for n, a in sorted(attrs.items())},
        "metadata": cfg.metadata.model_dump(),
        "key": (cfg.mapping.product_key if entity == "product" else cfg.mapping.price_key) if side == "stripe" else None,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:24]


def row_hash(columns: list[Column]) -> Column:
    """xxhash64 over values of any type (maps as their entries sorted by key), nulls flagged."""
    return N.fingerprint(columns)


def hashable(df: DataFrame, name: str) -> Column:
    """A column of ``df`` in a form xxhash64 accepts with a stable value (maps -> sorted entries)."""
    dtype = df.schema[name].dataType
    col = F.col(f"`{name}`")
    if isinstance(dtype, T.MapType):
        return F.array_sort(F.map_entries(col))
    return col


def compute_fp(spark: SparkSession, cfg: Config, table: str, df: DataFrame) -> tuple[DataFrame, Column]:
    """``df`` (silver columns of ``table``) with ``active`` moved to ``_active_stored`` and replaced by
    the effective one, and the ``_fp`` column over it, exactly as detect computes it."""
    from .detect import compiler  # detect owns the comparison semantics

    entity, side = SIDES[table]
    prepared = df.withColumnRenamed("active", "_active_stored")
    prepared = prepared.withColumn("active", records.effective_active(entity, side, F.col("_active_stored")))
    return prepared, compiler(spark, cfg, entity).values(prepared, side)[1]


def derive(spark: SparkSession, cfg: Config, table: str, silver: DataFrame, *,
           products: DataFrame | None = None, products_version: int | None = None,
           frames: records.SmallFrames | None = None) -> tuple[DataFrame, Commit]:
    """Silver rows plus every derived column, and the commit metadata that vouches for them.

    ``silver``: the schema columns of ``table`` and, when landed from raw records, their ``_rh``
    (null otherwise). Stripe prices need ``products`` (silver Stripe products with ``_key``) and
    ``products_version`` (recorded as ``product_keys_from``)."""
    entity, side = SIDES[table]
    schema_cols = [c for c in silver.columns if c != RAW_HASH]
    prepared, fp = compute_fp(spark, cfg, table, silver)
    rh = F.col(RAW_HASH) if RAW_HASH in silver.columns else F.lit(None).cast("bigint")
    out = prepared.select(*[F.col("_active_stored").alias(c) if c == "active" else F.col(f"`{c}`") for c in schema_cols],
                          fp.alias(FP), rh.alias(RAW_HASH))
    meta = Commit(fingerprint=fingerprint_spec(cfg, table, N.icu_available(spark)))
    if side == "stripe":
        out = records.with_stripe_key(out, cfg, entity)
        out = records.with_primary(out, entity, cfg.detect.broadcast_max_rows, frames)
        if entity == "price":
            if products is None:
                raise ValueError("derive(silver.stripe_prices) needs the Stripe products with _key")
            out = records.with_product_key(out, products, cfg.detect.broadcast_max_rows)
            meta = replace(meta, product_keys_from=products_version)
    ordered = [*schema_cols, *derived_columns(table)[:-1]]
    return with_row_hash(out.select(*[F.col(f"`{c}`") for c in ordered])), meta


def with_row_hash(df: DataFrame) -> DataFrame:
    """``df`` (silver columns in table order, without ``_hash``) plus ``_hash``: the hash of every
    column but lineage and ``_rh``."""
    content = [hashable(df, c) for c in df.columns if c not in tables.LINEAGE_NAMES and c != RAW_HASH]
    return df.withColumn(ROW_HASH, row_hash(content))


def stored_ready(spark: SparkSession, cfg: Config, table: str, df: DataFrame,
                 commit: dict | Commit | None = None) -> bool:
    """True when ``df`` (just read from ``table``) carries derived columns made under this config:
    the table's latest commit (``commit``: its metadata, read here when not given) must say so; a write
    by anything else, or a config change, means they are recomputed."""
    if table not in SIDES or any(c not in df.columns for c in derived_columns(table)[:-2]):
        return False
    meta = Commit.of(tables.commit_metadata(spark, cfg, table) if commit is None else commit)
    return meta.fingerprint == fingerprint_spec(cfg, table, N.icu_available(spark))


def absent_columns(commit: dict | Commit) -> list[str]:
    """The canonical internal columns missing from the input that the commit's landing came from."""
    landing = Commit.of(commit).landing
    return list(landing.absent_columns) if landing else []


def compared_config(cfg: Config, commits: dict[str, dict]) -> tuple[Config, dict[str, list[str]]]:
    """``cfg`` as detect and plan apply it to the silver versions whose commit metadata is ``commits``
    (table -> metadata): an attribute whose internal column the landed input did not have is not the
    internal side's to compare in this run (owner ``ignore``; design.md "Catalog fields"). Returns that
    config and the attributes left out, per entity (empty: ``cfg`` itself)."""
    skipped: dict[str, list[str]] = {}
    for table, (entity, side) in SIDES.items():
        absent = set(absent_columns(commits.get(table) or {})) if side == "internal" else set()
        attrs = cfg.attributes.product if entity == "product" else cfg.attributes.price
        names = sorted(n for n, a in attrs.items() if a.owner != "ignore" and a.internal.split(".")[0] in absent)
        if names:
            skipped[entity] = names
    if not skipped:
        return cfg, {}
    attributes = cfg.attributes.model_copy(update={
        entity: {n: a.model_copy(update={"owner": "ignore"}) if n in skipped.get(entity, ()) else a
                 for n, a in getattr(cfg.attributes, entity).items()}
        for entity in ("product", "price")})
    return cfg.model_copy(update={"attributes": attributes}), skipped


def product_keys_ready(commit: dict | Commit, products_version: int | None) -> bool:
    """Stripe prices' stored ``_product_key`` came from the current silver.stripe_products version."""
    return products_version is not None and Commit.of(commit).product_keys_from == products_version
