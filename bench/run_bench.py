"""Benchmark: our detect vs the bare key-only join (the floor) vs datacompy's SparkSQLCompare.

One process, one Spark session: generate BENCH_ROWS products (with their prices and seeded
discrepancies), land both sides into silver, then time on the same silver frames:

  (a) floor:     key-only full outer join + count, products and prices
  (a2) plain:    the compared columns joined and compared with plain null-safe equality (context: what
                 the same join costs once every compared column is read, before normalisation)
  (b) detect:    our detect stage end to end (read silver, compare, write gold.discrepancies)
  (c) datacompy: SparkSQLCompare on the compared columns of both entities (constructor, which runs
                 the comparison and its counts, plus all_mismatch().count())

and check (b) against truth.jsonl (multiset equality). Prints and saves bench/results/<stamp>_<rows>.json
with times, ratios b/a and c/b, peak driver memory (RSS of python + the JVM it started, sampled every
0.2 s) and the machine's load average (the machine may be shared: read the ratios, not the seconds).

    BENCH_ROWS=1000000 .venv/bin/python bench/run_bench.py     # make bench
    BENCH_ROWS=10000000 BENCH_SKIP_DATACOMPY=1 make bench
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil
from pyspark.sql import functions as F

from stripe_recon import tables
from stripe_recon.config import load_config
from stripe_recon.detect import detect
from stripe_recon.generate import generate
from stripe_recon.land.internal import land_internal
from stripe_recon.land.stripe_files import land_stripe_files
from stripe_recon.ledger import Run
from stripe_recon.records import stripe_key
from stripe_recon.spark import get_spark

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


class PeakRss:
    """Peak RSS of this process plus its children (the JVM), sampled in a thread."""

    def __init__(self, interval: float = 0.2):
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            time.sleep(self.interval)

    def reset(self) -> None:
        self.peak = self.sample()

    def __enter__(self) -> PeakRss:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def timed(label: str, fn, mem: PeakRss, phases: dict) -> object:
    mem.reset()
    t0 = time.monotonic()
    result = fn()
    seconds = round(time.monotonic() - t0, 2)
    phases[label] = {"seconds": seconds, "peak_rss_mb": round(mem.peak / 2**20)}
    print(f"{label:>12}: {seconds:8.2f} s   peak RSS {phases[label]['peak_rss_mb']} MB", flush=True)
    return result


def main() -> int:
    rows = int(os.environ.get("BENCH_ROWS", "1000000"))
    seed = int(os.environ.get("BENCH_SEED", "42"))
    rate = float(os.environ.get("BENCH_RATE", "0.02"))  # seeded share per discrepancy kind (generate's rate)
    work = Path(os.environ.get("BENCH_DIR", f"/tmp/stripe-recon-bench-{rows}")).resolve()
    keep = bool(os.environ.get("BENCH_KEEP"))
    if work.exists() and not keep:
        shutil.rmtree(work)
    gen = work / "gen"
    cfg = load_config(
        REPO / "conf" / "local.yaml",
        [
            f"storage.root={work / 'data'}",
            f"spark.ivy_dir={REPO / '.cache' / 'ivy'}",
            f"spark.driver_memory={os.environ.get('BENCH_DRIVER_MEMORY', '6g')}",
            f"spark.shuffle_partitions={os.environ.get('BENCH_PARTITIONS', '8')}",
            "detect.reuse_unchanged=false",  # every detect timed here compares every key
            "sources.internal.format=parquet",
            f"sources.internal.products={gen}/internal/products.parquet",
            f"sources.internal.prices={gen}/internal/prices.parquet",
            "sources.stripe.mode=files",
            f"sources.stripe.path={gen}/stripe",
        ],
    )
    spark = get_spark(cfg)
    phases: dict = {}
    load_before = os.getloadavg()
    with PeakRss() as mem:
        if not (keep and (gen / "truth.jsonl").exists()):
            timed("generate", lambda: generate(spark, str(gen), products=rows, seed=seed, rate=rate), mem, phases)
        run = Run.new(spark, cfg)
        if not (keep and tables.exists(spark, cfg, tables.SILVER_STRIPE_PRICES)):
            timed("land", lambda: (land_internal(run), land_stripe_files(run)), mem, phases)

        ip = tables.read(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS)
        sp = tables.read(spark, cfg, tables.SILVER_STRIPE_PRODUCTS)
        ipr = tables.read(spark, cfg, tables.SILVER_INTERNAL_PRICES)
        spr = tables.read(spark, cfg, tables.SILVER_STRIPE_PRICES)
        sizes = {"internal_products": ip.count(), "stripe_products": sp.count(),
                 "internal_prices": ipr.count(), "stripe_prices": spr.count()}  # also warms the file cache
        print("silver rows:", sizes, flush=True)

        def floor() -> int:
            a = ip.select(F.col("product_id").alias("k")).join(sp.select(stripe_key(cfg, "product").alias("k")), "k", "full_outer").count()
            b = ipr.select(F.col("price_id").alias("k")).join(spr.select(stripe_key(cfg, "price").alias("k")), "k", "full_outer").count()
            return a + b

        floor()  # warm-up (JIT, Delta log and file caches): every timed phase below runs warm
        timed("a_floor", floor, mem, phases)
        # detect runs twice: the first run also warms its own code paths (reported, not compared).
        timed("b_detect_first", lambda: detect(Run.new(spark, cfg)), mem, phases)
        run = Run.new(spark, cfg)
        counts = timed("b_detect", lambda: detect(run), mem, phases)

        got = tables.read(spark, cfg, tables.GOLD_DISCREPANCIES).where(F.col("run_id") == run.run_id).select("entity", "key", "kind", "attribute")
        truth = spark.read.json(f"{gen}/truth.jsonl").select(*[F.col(c).cast("string") for c in ("entity", "key", "kind", "attribute")])
        extra, missing = got.exceptAll(truth).count(), truth.exceptAll(got).count()
        print(f"detect vs truth: {counts['discrepancies']} rows, extra {extra}, missing {missing}", flush=True)

        def meta(c: str):
            return F.to_json(F.array_sort(F.map_entries(F.map_filter(F.col(c), lambda k, v: k != "internal_id"))))

        def compared_frames():
            p1 = ip.select(F.col("product_id").alias("key"), "name", "description",
                           (F.coalesce("active", F.lit(True)) & F.col("deleted_at").isNull()).alias("active"),
                           "tax_code", meta("metadata").alias("metadata"))
            p2 = sp.select(stripe_key(cfg, "product").alias("key"), "name", "description", "active", "tax_code",
                           meta("metadata").alias("metadata"))
            q1 = ipr.select(F.col("price_id").alias("key"), "unit_amount", "currency", "interval", "interval_count", "active", "nickname")
            q2 = spr.select(stripe_key(cfg, "price").alias("key"), "unit_amount", "currency", "interval", "interval_count", "active", "nickname")
            return [(p1, p2), (q1, q2)]

        def plain_join() -> int:
            """(a2) the same compared columns, full outer join, rows with any column not null-safe equal
            counted: no normalisation, no duplicate handling, no output rows. Context for (b), not a target."""
            n = 0
            for d1, d2 in compared_frames():
                cols = [c for c in d1.columns if c != "key"]
                j = d1.alias("l").join(d2.alias("r"), F.col("l.key") == F.col("r.key"), "full_outer")
                differs = F.lit(False)
                for c in cols:
                    differs = differs | ~F.col(f"l.{c}").eqNullSafe(F.col(f"r.{c}"))
                n += j.where(differs).count()
            return n

        timed("a2_plain_join", plain_join, mem, phases)

        if not os.environ.get("BENCH_SKIP_DATACOMPY"):
            import datacompy

            def dc() -> int:
                n = 0
                for d1, d2 in compared_frames():
                    cmp = datacompy.SparkSQLCompare(spark, d1, d2, join_columns=["key"], ignore_spaces=True, ignore_case=False)
                    n += cmp.all_mismatch().count()
                return n

            timed("c_datacompy", dc, mem, phases)
    load_after = os.getloadavg()

    a, b = phases["a_floor"]["seconds"], phases["b_detect"]["seconds"]
    c = phases.get("c_datacompy", {}).get("seconds")
    result = {
        "command": f"BENCH_ROWS={rows} BENCH_SEED={seed} BENCH_RATE={rate} .venv/bin/python bench/run_bench.py",
        "rate": rate,
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "rows_products": rows,
        "silver_rows": sizes,
        "phases": phases,
        "ratio_b_over_a": round(b / a, 2),
        "ratio_c_over_b": round(c / b, 2) if c else None,
        "ratio_b_over_a2": round(b / phases["a2_plain_join"]["seconds"], 2),
        "peak_driver_rss_mb": max(p["peak_rss_mb"] for p in phases.values()),
        "detect_counts": counts,
        "truth_check": {"extra": extra, "missing": missing, "equal": extra == 0 and missing == 0},
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
                    "python": sys.version.split()[0], "platform": platform.platform(),
                    "spark": spark.version, "master": cfg.spark.master, "shuffle_partitions": cfg.spark.shuffle_partitions,
                    "driver_memory": cfg.spark.driver_memory},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}_{rows}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("ratio_b_over_a", "ratio_c_over_b", "peak_driver_rss_mb", "truth_check")}))
    print(f"saved {out}")
    return 0 if result["truth_check"]["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
