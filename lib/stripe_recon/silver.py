"""The derived columns silver carries after its schema columns, and the commit metadata vouching for them.

Land computes them in the pass that writes silver, so detect and plan read them instead of
recomputing them over every row:

- ``_fp``: detect's fingerprint of the compared attributes (detect.py ``_Compiler``);
- Stripe tables: ``_key``, ``_primary``, ``_active_ids`` (records.py) and, on prices, ``_product_key``;
- ``_rh``: the hash of the record as it arrived (land: which raw records are new or changed);
- ``_hash``: the hash of the whole silver row, derived columns included (land: a re-landing MERGEs
  only the rows whose ``_hash`` changed, so the Change Data Feed holds exactly the changes).

The silver commit's ``userMetadata`` says under which configuration they were made
(``{"fingerprint": <spec id>}``, see :func:`fingerprint_spec`) and, on Stripe prices, which version of
silver.stripe_products the product keys come from (``product_keys_from``). A reader trusts the stored
columns only when the table's latest commit says so for the current configuration
(:func:`stored_ready`); after a config change or a write by another tool it derives them itself. An
internal landing also records the canonical columns its input did not have (:func:`absent_columns`).

Example::

    df, meta = derive(spark, cfg, tables.SILVER_STRIPE_PRODUCTS, rows)   # rows: the silver columns
    tables.overwrite(spark, cfg, tables.SILVER_STRIPE_PRODUCTS, df, meta)
"""

from __future__ import annotations

import hashlib
import json

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
KEYS = {"internal": {"product": "product_id", "price": "price_id"}, "stripe": {"product": "id", "price": "id"}}


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
           frames: records.SmallFrames | None = None) -> tuple[DataFrame, dict]:
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
    meta: dict = {"fingerprint": fingerprint_spec(cfg, table, N.icu_available(spark))}
    if side == "stripe":
        out = records.with_stripe_key(out, cfg, entity)
        out = records.with_primary(out, entity, cfg.detect.broadcast_max_rows, frames)
        if entity == "price":
            if products is None:
                raise ValueError("derive(silver.stripe_prices) needs the Stripe products with _key")
            out = records.with_product_key(out, products, cfg.detect.broadcast_max_rows)
            meta["product_keys_from"] = products_version
    ordered = [*schema_cols, *derived_columns(table)[:-1]]
    return with_row_hash(out.select(*[F.col(f"`{c}`") for c in ordered])), meta


def with_row_hash(df: DataFrame) -> DataFrame:
    """``df`` (silver columns in table order, without ``_hash``) plus ``_hash``: the hash of every
    column but lineage and ``_rh``."""
    content = [hashable(df, c) for c in df.columns if c not in tables.LINEAGE_NAMES and c != RAW_HASH]
    return df.withColumn(ROW_HASH, row_hash(content))


def stored_ready(spark: SparkSession, cfg: Config, table: str, df: DataFrame, commit: dict | None = None) -> bool:
    """True when ``df`` (just read from ``table``) carries derived columns made under this config:
    the table's latest commit (``commit``: its metadata, read here when not given) must say so; a write
    by anything else, or a config change, means they are recomputed."""
    if table not in SIDES or any(c not in df.columns for c in derived_columns(table)[:-2]):
        return False
    meta = tables.commit_metadata(spark, cfg, table) if commit is None else commit
    return meta.get("fingerprint") == fingerprint_spec(cfg, table, N.icu_available(spark))


#: The landing record's list of canonical columns the internal input did not have (land/internal.py):
#: their attributes are not the internal side's to compare while silver holds that landing (detect.py).
ABSENT = "absent_columns"


def absent_columns(commit: dict) -> list[str]:
    """The canonical internal columns missing from the input that the commit's landing came from."""
    landing = commit.get("landing")
    value = landing.get(ABSENT) if isinstance(landing, dict) else None
    return sorted(c for c in value if isinstance(c, str)) if isinstance(value, list) else []


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


def product_keys_ready(commit: dict, products_version: int | None) -> bool:
    """Stripe prices' stored ``_product_key`` came from the current silver.stripe_products version."""
    return products_version is not None and commit.get("product_keys_from") == products_version
