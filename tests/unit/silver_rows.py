"""Hand-built silver rows for detect/report tests (schemas from tables.py, lineage columns null)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

from stripe_recon import silver, tables

T0 = dt.datetime(2026, 1, 1, 12, 0, 0)
LINEAGE = (None, None, None, None)


def iprod(product_id, name="Widget", description=None, active=True, deleted_at=None, tax_code=None,
          metadata=None, updated_at=T0):
    return (product_id, name, description, active, deleted_at, tax_code, metadata or {}, updated_at, *LINEAGE)


def sprod(id, key, name="Widget", description=None, active=True, tax_code=None, metadata=None,
          created=T0, updated=T0, is_deleted=None):
    md = dict(metadata or {})
    if key is not None:
        md["internal_id"] = key
    return (id, name, description, active, tax_code, md, None, False, created, updated, is_deleted, *LINEAGE)


def iprice(price_id, product_id, currency="usd", unit_amount=1999, interval=None, interval_count=None,
           active=True, nickname=None, updated_at=T0):
    exp = {"jpy": 0, "kwd": 3}.get(currency, 2)
    amount = Decimal(unit_amount).scaleb(-exp) if unit_amount is not None else None
    return (price_id, product_id, currency, amount, unit_amount, interval, interval_count, active, nickname,
            updated_at, *LINEAGE)


def sprice(id, lookup_key, product, currency="usd", unit_amount=1999, interval=None, interval_count=None,
           active=True, nickname=None, created=T0, is_deleted=None):
    typ = "recurring" if interval else "one_time"
    return (id, product, lookup_key, currency, unit_amount, typ, interval, interval_count, active, nickname, {},
            False, created, is_deleted, *LINEAGE)


def write_silver(spark, cfg, products_i=(), products_s=(), prices_i=(), prices_s=(), fingerprints=False,
                 landing=None, absent=None):
    """Write the four silver tables with tables.overwrite (empty when not given); with
    ``fingerprints`` they also get the derived columns land stores (silver.derive), as land writes them;
    with ``landing`` (``{"internal": run_id, "stripe": run_id}``) each commit names its landing run;
    ``absent`` (``{"product": [column, ...]}``): the internal input had no such columns, as land records."""
    for name, schema, rows in [
        (tables.SILVER_INTERNAL_PRODUCTS, tables.SILVER_INTERNAL_PRODUCTS_SCHEMA, products_i),
        (tables.SILVER_STRIPE_PRODUCTS, tables.SILVER_STRIPE_PRODUCTS_SCHEMA, products_s),
        (tables.SILVER_INTERNAL_PRICES, tables.SILVER_INTERNAL_PRICES_SCHEMA, prices_i),
        (tables.SILVER_STRIPE_PRICES, tables.SILVER_STRIPE_PRICES_SCHEMA, prices_s),
    ]:
        df, commit = spark.createDataFrame(list(rows), schema), silver.Commit()
        if fingerprints:
            products = version = None
            if name == tables.SILVER_STRIPE_PRICES:
                products = tables.read(spark, cfg, tables.SILVER_STRIPE_PRODUCTS)
                version = tables.version(spark, cfg, tables.SILVER_STRIPE_PRODUCTS)
            df, commit = silver.derive(spark, cfg, name, df, products=products, products_version=version)
        entity, side = silver.SIDES[name]
        run_id = (landing or {}).get(side)
        gone = tuple((absent or {}).get(entity, ())) if side == "internal" else ()
        if run_id or gone:
            commit = dataclasses.replace(commit, landing=silver.Landing(run_id=run_id, absent_columns=gone))
        tables.overwrite(spark, cfg, name, df, commit.as_json() or None)


def write_quarantine(spark, cfg, rows):
    """Append gold.quarantine rows given as (run_id, stage, source, entity, key, reasons, record)."""
    full = [(*r, None, T0) for r in rows]
    tables.append(spark, cfg, tables.GOLD_QUARANTINE, spark.createDataFrame(full, tables.QUARANTINE_SCHEMA))
