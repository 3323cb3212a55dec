"""Benchmark: the input gate (validate_inputs) on N rows vs the detect stage on the same tables.

Builds the four silver tables with Spark SQL (``--products`` products and as many prices per side;
``--bad-ratio`` of the internal prices have a negative amount so the quarantine path runs), then
times, in one session and on the same data: a cold pass (key-only join, detect, validate_inputs; the
JIT, the Delta log cache and GX's import warm up), then, with the bad prices put back, a bare key-only
full outer join (the floor), detect, validate_inputs and detect again. The ratio compared with the
target is validate_inputs / mean(detect) of the warm pass. Writes bench/results/validate.json.

    .venv/bin/python bench/validate_bench.py --products 500000      # 1M internal + 1M Stripe rows
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
REPO = Path(__file__).resolve().parents[1]

from stripe_recon import tables  # noqa: E402
from stripe_recon.config import load_config  # noqa: E402
from stripe_recon.ledger import Run  # noqa: E402
from stripe_recon.spark import get_spark  # noqa: E402

CURRENCY = "element_at(array('usd', 'eur', 'jpy', 'kwd'), CAST(id % 4 AS INT) + 1)"
AMOUNT = ("CASE id % 4 WHEN 0 THEN CAST(19.99 AS DECIMAL(24,6)) WHEN 1 THEN CAST(9.50 AS DECIMAL(24,6)) "
          "WHEN 2 THEN CAST(1200 AS DECIMAL(24,6)) ELSE CAST(1.250 AS DECIMAL(24,6)) END")
UNIT = "CASE id % 4 WHEN 0 THEN 1999L WHEN 1 THEN 950L WHEN 2 THEN 1200L ELSE 1250L END"
LINEAGE = ["'bench' AS _run_id", "'bench' AS _source", "'generated' AS _source_file",
           "TIMESTAMP'2026-01-01 00:00:00' AS _ingested_at"]


KEYS = {tables.SILVER_INTERNAL_PRODUCTS: "product_id", tables.SILVER_INTERNAL_PRICES: "price_id",
        tables.SILVER_STRIPE_PRODUCTS: "id", tables.SILVER_STRIPE_PRICES: "id"}


def build(spark, cfg, n: int, bad_ratio: float, only: str | None = None, foreign: bool = False) -> None:
    """Write the four silver tables (or only the one named ``only``) as land writes them: with detect's
    stored fingerprints and the commit metadata naming them and the unique key. ``foreign``: as any
    other tool would (plain overwrite, no metadata), so detect and the gate check everything."""
    from stripe_recon import silver as silver_mod

    r = spark.range(n)
    bad_every = max(1, int(1 / bad_ratio)) if bad_ratio > 0 else 0
    ts = "TIMESTAMP'2026-01-01 00:00:00'"
    products = r.selectExpr(
        "concat('P', id) AS product_id", "concat('Product ', id) AS name",
        "CASE WHEN id % 3 = 0 THEN NULL ELSE concat('About ', id) END AS description",
        "true AS active", "CAST(NULL AS TIMESTAMP) AS deleted_at", "'txcd_10000000' AS tax_code",
        "map('color', 'red', 'size', CAST(id % 5 AS STRING)) AS metadata", f"{ts} AS updated_at", *LINEAGE,
    )
    neg = f"CASE WHEN {bad_every} > 0 AND id % {bad_every or 1} = 7 THEN -1 ELSE 1 END"
    prices = r.selectExpr(
        "concat('PR', id) AS price_id", "concat('P', id) AS product_id", f"{CURRENCY} AS currency",
        f"CAST({AMOUNT} * {neg} AS DECIMAL(24,6)) AS amount", f"{UNIT} * {neg} AS unit_amount",
        "CASE WHEN id % 2 = 0 THEN 'month' END AS interval", "CASE WHEN id % 2 = 0 THEN 1 END AS interval_count",
        "true AS active", "CAST(NULL AS STRING) AS nickname", f"{ts} AS updated_at", *LINEAGE,
    )
    sproducts = r.selectExpr(
        "concat('prod_', id) AS id",
        "CASE WHEN id % 100 = 0 THEN concat('Renamed ', id) ELSE concat('Product ', id) END AS name",
        "CASE WHEN id % 3 = 0 THEN NULL ELSE concat('About ', id) END AS description", "true AS active",
        "'txcd_10000000' AS tax_code",
        "map('internal_id', concat('P', id), 'color', 'red', 'size', CAST(id % 5 AS STRING)) AS metadata",
        "concat('price_', id) AS default_price", "false AS livemode", f"{ts} AS created", f"{ts} AS updated",
        "false AS is_deleted", *LINEAGE,
    )
    sprices = r.selectExpr(
        "concat('price_', id) AS id", "concat('prod_', id) AS product", "concat('PR', id) AS lookup_key",
        f"{CURRENCY} AS currency", f"{UNIT} AS unit_amount",
        "CASE WHEN id % 2 = 0 THEN 'recurring' ELSE 'one_time' END AS type",
        "CASE WHEN id % 2 = 0 THEN 'month' END AS interval", "CASE WHEN id % 2 = 0 THEN 1 END AS interval_count",
        "true AS active", "CAST(NULL AS STRING) AS nickname", "map() AS metadata", "false AS livemode",
        f"{ts} AS created", "false AS is_deleted", *LINEAGE,
    )
    for name, df, schema in [
        (tables.SILVER_INTERNAL_PRODUCTS, products, tables.SILVER_INTERNAL_PRODUCTS_SCHEMA),
        (tables.SILVER_INTERNAL_PRICES, prices, tables.SILVER_INTERNAL_PRICES_SCHEMA),
        (tables.SILVER_STRIPE_PRODUCTS, sproducts, tables.SILVER_STRIPE_PRODUCTS_SCHEMA),
        (tables.SILVER_STRIPE_PRICES, sprices, tables.SILVER_STRIPE_PRICES_SCHEMA),
    ]:
        if only and name != only:
            continue
        cols = [f"CAST(`{f.name}` AS {f.dataType.simpleString()}) AS `{f.name}`" for f in schema.fields]
        silver, metadata = df.selectExpr(*cols).repartition(4), None
        if not foreign:
            products = version = None
            if name == tables.SILVER_STRIPE_PRICES:
                products = tables.read(spark, cfg, tables.SILVER_STRIPE_PRODUCTS)
                version = tables.version(spark, cfg, tables.SILVER_STRIPE_PRODUCTS)
            silver, metadata = silver_mod.derive(spark, cfg, name, silver, products=products, products_version=version)
            metadata = {**metadata, "unique": [KEYS[name]]}
        tables.overwrite(spark, cfg, name, silver, metadata)


def key_join(spark, cfg) -> float:
    """The floor: a key-only full outer join of both sides of both entities, counted."""
    t0 = time.monotonic()
    ip = tables.read(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS).select("product_id")
    sp = tables.read(spark, cfg, tables.SILVER_STRIPE_PRODUCTS).selectExpr("metadata['internal_id'] AS product_id")
    ir = tables.read(spark, cfg, tables.SILVER_INTERNAL_PRICES).select("price_id")
    sr = tables.read(spark, cfg, tables.SILVER_STRIPE_PRICES).selectExpr("lookup_key AS price_id")
    ip.join(sp, "product_id", "full_outer").count()
    ir.join(sr, "price_id", "full_outer").count()
    return time.monotonic() - t0


def timed(fn) -> tuple[float, object]:
    t0 = time.monotonic()
    out = fn()
    return time.monotonic() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--products", type=int, default=500_000, help="products per side; as many prices per side")
    ap.add_argument("--bad-ratio", type=float, default=0.001, help="fraction of internal prices made invalid")
    ap.add_argument("--root", default=None, help="storage root (default: a temp folder, removed afterwards)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "validate.json"))
    ap.add_argument("--no-docs", action="store_true", help="skip Data Docs")
    ap.add_argument("--foreign", action="store_true",
                    help="write silver as another tool would (no stored fingerprints, no vouched key)")
    args = ap.parse_args(argv)

    root = args.root or tempfile.mkdtemp(prefix="recon-validate-bench-")
    overrides = [f"storage.root={root}", f"spark.ivy_dir={REPO / '.cache' / 'ivy'}",
                 "validation.row_count_band=0.5", "detect.reuse_unchanged=false", f"validation.data_docs={'false' if args.no_docs else 'true'}"]
    cfg = load_config(REPO / "conf" / "local.yaml", overrides, environ={})
    spark = get_spark(cfg)
    spark.sparkContext.setLogLevel("ERROR")
    try:
        t_build, _ = timed(lambda: build(spark, cfg, args.products, args.bad_ratio, foreign=args.foreign))
        from stripe_recon.detect import detect
        from stripe_recon.validate import validate_inputs

        # Cold pass (JIT, Delta log cache, the GX import and its file context): reported, not compared.
        t_join_cold = key_join(spark, cfg)
        t_detect_cold, _ = timed(lambda: detect(Run.new(spark, cfg)))
        t_validate_cold, _ = timed(lambda: validate_inputs(Run.new(spark, cfg)))
        # The cold validate removed the bad prices from silver: put them back so the timed run
        # quarantines them too.
        build(spark, cfg, args.products, args.bad_ratio, only=tables.SILVER_INTERNAL_PRICES, foreign=args.foreign)

        t_join = key_join(spark, cfg)
        t_detect1, _ = timed(lambda: detect(Run.new(spark, cfg)))
        t_validate, summary = timed(lambda: validate_inputs(Run.new(spark, cfg)))
        t_detect2, counts = timed(lambda: detect(Run.new(spark, cfg)))
        t_detect = statistics.mean([t_detect1, t_detect2])
        result = {
            "what": "validate_inputs (row rules + quarantine + GX + Data Docs) vs detect on the same silver tables",
            "command": " ".join([".venv/bin/python", "bench/validate_bench.py", *(argv if argv is not None else sys.argv[1:])]),
            "silver_written_as": "foreign (no metadata)" if args.foreign else "land (stored fingerprints, vouched key)",
            "rows": {"internal": 2 * args.products, "stripe": 2 * args.products},
            "quarantined": summary["quarantined"],
            "seconds": {
                "build_tables": round(t_build, 2),
                "key_only_full_outer_join": round(t_join, 2),
                "detect_runs": [round(t_detect1, 2), round(t_detect2, 2)],
                "detect_mean": round(t_detect, 2),
                "cold_pass": {"key_only_full_outer_join": round(t_join_cold, 2), "detect": round(t_detect_cold, 2),
                              "validate_inputs": round(t_validate_cold, 2)},
                "validate_inputs": round(t_validate, 2),
                "validate_by_table": {k: v["seconds"] for k, v in summary["tables"].items()},
            },
            "validate_over_detect": round(t_validate / t_detect, 3),
            "target_validate_over_detect": 0.30,
            "discrepancies": counts.get("discrepancies"),
            "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
                        "python": platform.python_version(), "spark_master": cfg.spark.master},
            "data_docs": bool(summary["data_docs"]),
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        spark.stop()
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
