"""Benchmark of the whole job: the floor vs our job (empty tables, then unchanged inputs) vs datacompy.

One process, one Spark session, one generated catalog (BENCH_ROWS products, their prices, seeded
discrepancies at BENCH_RATE per kind). Timed, in this order:

  (f) floor:        copy the four raw inputs to Delta as they are (internal products and prices:
                    Parquet -> Delta; Stripe products and prices: the JSON lines as text -> Delta),
                    then the key-only full outer join of the copies (+ count), products and prices;
  (j1) job, empty:  land internal + land stripe + validate_inputs + detect + plan (no push) on a new
                    storage root;
  (j2) job again:   the same stages on the same, unchanged inputs and the tables j1 left;
  (c) datacompy:    end to end on the same raw inputs: read them, flatten the compared columns,
                    SparkSQLCompare (its constructor runs the comparison) + all_mismatch().count().

Checks both jobs' detect output against truth.jsonl (multiset equality on entity, key, kind,
attribute). Prints the ratios j1/f, j2/f and c/j1, each stage's seconds, peak RSS (python + the JVM
it started, sampled every 0.2 s) per phase and the load average; saves
bench/results/e2e_<UTC stamp>_<rows>.json. Exit 1 when a detect differs from the truth.

    .venv/bin/python bench/e2e_bench.py                          # make bench-e2e (1M products)
    BENCH_ROWS=10000000 BENCH_DRIVER_MEMORY=8g BENCH_PARTITIONS=32 .venv/bin/python bench/e2e_bench.py

Environment: BENCH_ROWS (1000000), BENCH_SEED (42), BENCH_RATE (0.002), BENCH_DIR
(/tmp/stripe-recon-e2e-<rows>), BENCH_KEEP=1 (reuse the generated catalog in BENCH_DIR),
BENCH_DRIVER_MEMORY (8g), BENCH_PARTITIONS (8), BENCH_SKIP_DATACOMPY=1, BENCH_SKIP_SECOND=1,
BENCH_CLEAN=1 (delete BENCH_DIR at the end, generated catalog included).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import PeakRss  # noqa: E402
from stripe_recon import currencies, tables  # noqa: E402
from stripe_recon.config import load_config  # noqa: E402
from stripe_recon.errors import HeldError  # noqa: E402
from stripe_recon.generate import generate  # noqa: E402
from stripe_recon.ledger import Run  # noqa: E402
from stripe_recon.spark import get_spark  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
JOB_STAGES = ("land_internal", "land_stripe", "validate_inputs", "detect", "plan")
# The Stripe fields datacompy is given (an explicit schema: no inference pass, the fastest way a
# user would read them).
STRIPE_JSON_SCHEMA = (
    "id string, object string, name string, description string, active boolean, tax_code string, "
    "metadata map<string,string>, lookup_key string, currency string, unit_amount long, "
    "recurring struct<interval: string, interval_count: int>, nickname string"
)


def timed(label: str, fn, mem: PeakRss, phases: dict):
    mem.reset()
    t0 = time.monotonic()
    result = fn()
    seconds = round(time.monotonic() - t0, 2)
    phases[label] = {"seconds": seconds, "peak_rss_mb": round(mem.peak / 2**20)}
    print(f"{label:>16}: {seconds:9.2f} s   peak RSS {phases[label]['peak_rss_mb']} MB   "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    return result


def floor(spark, gen: Path, out: Path) -> int:
    """Copy the four inputs to Delta as they are, then the key-only full outer join of the copies."""
    copies = {}
    for name, read in (
        ("internal_products", lambda: spark.read.parquet(str(gen / "internal/products.parquet"))),
        ("internal_prices", lambda: spark.read.parquet(str(gen / "internal/prices.parquet"))),
        ("stripe_products", lambda: spark.read.text(str(gen / "stripe/products"))),
        ("stripe_prices", lambda: spark.read.text(str(gen / "stripe/prices"))),
    ):
        read().write.format("delta").mode("overwrite").save(str(out / name))
        copies[name] = spark.read.format("delta").load(str(out / name))
    sp_key = F.get_json_object("value", "$.metadata.internal_id")
    spr_key = F.get_json_object("value", "$.lookup_key")
    a = copies["internal_products"].select(F.col("product_id").alias("k")).join(
        copies["stripe_products"].select(sp_key.alias("k")), "k", "full_outer").count()
    b = copies["internal_prices"].select(F.col("price_id").alias("k")).join(
        copies["stripe_prices"].select(spr_key.alias("k")), "k", "full_outer").count()
    return a + b


def job(cfg, spark) -> tuple[Run, dict]:
    """land internal + land stripe + validate_inputs + detect + plan on ``cfg``'s storage root."""
    from stripe_recon.detect import detect
    from stripe_recon.land.internal import land_internal
    from stripe_recon.pipeline import land_stripe
    from stripe_recon.plan import plan
    from stripe_recon.validate import validate_inputs

    run = Run.new(spark, cfg)
    outcome: dict = {}
    for name, step in zip(JOB_STAGES, (land_internal, land_stripe, validate_inputs, detect, plan), strict=True):
        try:
            outcome[name] = step(run)
        except HeldError as exc:  # the guard's verdict is part of the job, not a benchmark failure
            outcome[name] = {"held": str(exc)[:300]}
            break
    return run, outcome


def stage_seconds(spark, cfg, run_id: str) -> dict[str, float]:
    rows = (tables.read(spark, cfg, tables.GOLD_RUNS).where(F.col("run_id") == run_id)
            .select("stage", "duration_s").collect())  # a handful of ledger rows
    return {r["stage"]: r["duration_s"] for r in rows}


def truth_check(spark, cfg, gen: Path, run_id: str) -> dict:
    got = (tables.read(spark, cfg, tables.GOLD_DISCREPANCIES).where(F.col("run_id") == run_id)
           .select("entity", "key", "kind", "attribute"))
    truth = spark.read.json(str(gen / "truth.jsonl")).select(
        *[F.col(c).cast("string") for c in ("entity", "key", "kind", "attribute")])
    extra, missing = got.exceptAll(truth).count(), truth.exceptAll(got).count()
    return {"rows": got.count(), "extra": extra, "missing": missing, "equal": extra == 0 and missing == 0}


def datacompy_e2e(spark, gen: Path) -> int:
    """Read the raw inputs, flatten the compared columns of both entities, compare with datacompy."""
    import datacompy

    def meta(c: str):
        return F.to_json(F.array_sort(F.map_entries(F.map_filter(F.col(c), lambda k, v: k != "internal_id"))))

    ip = spark.read.parquet(str(gen / "internal/products.parquet"))
    ipr = spark.read.parquet(str(gen / "internal/prices.parquet"))
    sp = spark.read.schema(STRIPE_JSON_SCHEMA).json(str(gen / "stripe/products"))
    spr = spark.read.schema(STRIPE_JSON_SCHEMA).json(str(gen / "stripe/prices"))
    p1 = ip.select(F.col("product_id").alias("key"), F.trim("name").alias("name"),
                   F.trim("description").alias("description"),
                   (F.coalesce(F.col("active").cast("boolean"), F.lit(True)) & F.col("deleted_at").isNull()).alias("active"),
                   "tax_code", meta("metadata").alias("metadata"))
    p2 = sp.select(F.col("metadata")["internal_id"].alias("key"), "name", "description", "active", "tax_code",
                   meta("metadata").alias("metadata"))
    cur = F.lower(F.col("currency"))
    minor = (F.col("amount").cast("decimal(30,12)")
             * F.pow(F.lit(10), F.expr(currencies.exponent_expr("lower(currency)"))).cast("decimal(4,0)"))
    q1 = ipr.select(F.col("price_id").alias("key"), minor.cast("long").alias("unit_amount"), cur.alias("currency"),
                    F.col("interval"), F.col("interval_count").cast("int").alias("interval_count"),
                    F.coalesce(F.col("active").cast("boolean"), F.lit(True)).alias("active"),
                    F.trim("nickname").alias("nickname"))
    q2 = spr.select(F.col("lookup_key").alias("key"), "unit_amount", "currency",
                    F.col("recurring.interval").alias("interval"), F.col("recurring.interval_count").alias("interval_count"),
                    "active", "nickname")
    n = 0
    for d1, d2 in ((p1, p2), (q1, q2)):
        cmp = datacompy.SparkSQLCompare(spark, d1, d2, join_columns=["key"], ignore_spaces=True, ignore_case=False)
        n += cmp.all_mismatch().count()
    return n


def main() -> int:
    rows = int(os.environ.get("BENCH_ROWS", "1000000"))
    seed = int(os.environ.get("BENCH_SEED", "42"))
    rate = float(os.environ.get("BENCH_RATE", "0.002"))
    work = Path(os.environ.get("BENCH_DIR", f"/tmp/stripe-recon-e2e-{rows}")).resolve()
    keep = bool(os.environ.get("BENCH_KEEP"))
    gen = work / "gen"
    if work.exists() and not (keep and (gen / "truth.jsonl").exists()):
        shutil.rmtree(work)
    for scratch in ("floor", "data"):
        shutil.rmtree(work / scratch, ignore_errors=True)
    cfg = load_config(
        REPO / "conf" / "local.yaml",
        [
            f"storage.root={work / 'data'}",
            f"spark.ivy_dir={REPO / '.cache' / 'ivy'}",
            f"spark.driver_memory={os.environ.get('BENCH_DRIVER_MEMORY', '8g')}",
            f"spark.shuffle_partitions={os.environ.get('BENCH_PARTITIONS', '8')}",
            "sources.internal.format=parquet",
            f"sources.internal.products={gen}/internal/products.parquet",
            f"sources.internal.prices={gen}/internal/prices.parquet",
            "sources.stripe.mode=files",
            f"sources.stripe.path={gen}/stripe",
        ],
    )
    spark = get_spark(cfg)
    phases: dict = {}
    jobs: dict = {}
    load_before = os.getloadavg()
    with PeakRss() as mem:
        if not (gen / "truth.jsonl").exists():
            timed("generate", lambda: generate(spark, str(gen), products=rows, seed=seed, rate=rate), mem, phases)
        timed("f_floor", lambda: floor(spark, gen, work / "floor"), mem, phases)
        shutil.rmtree(work / "floor", ignore_errors=True)
        labels = ["j1_job_empty"] + ([] if os.environ.get("BENCH_SKIP_SECOND") else ["j2_job_unchanged"])
        for label in labels:
            run, outcome = timed(label, lambda: job(cfg, spark), mem, phases)
            jobs[label] = {"run_id": run.run_id, "stages": stage_seconds(spark, cfg, run.run_id),
                           "truth": truth_check(spark, cfg, gen, run.run_id),
                           "held": {k: v["held"] for k, v in outcome.items() if isinstance(v, dict) and "held" in v}}
            print(f"{'':>16}  stages {jobs[label]['stages']}", flush=True)
            print(f"{'':>16}  detect vs truth {jobs[label]['truth']}", flush=True)
        if not os.environ.get("BENCH_SKIP_DATACOMPY"):
            timed("c_datacompy", lambda: datacompy_e2e(spark, gen), mem, phases)
    load_after = os.getloadavg()

    f = phases["f_floor"]["seconds"]
    j1 = phases["j1_job_empty"]["seconds"]
    j2 = phases.get("j2_job_unchanged", {}).get("seconds")
    c = phases.get("c_datacompy", {}).get("seconds")
    result = {
        "command": f"BENCH_ROWS={rows} BENCH_SEED={seed} BENCH_RATE={rate} .venv/bin/python bench/e2e_bench.py",
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "rows_products": rows,
        "rate": rate,
        "phases": phases,
        "jobs": jobs,
        "ratio_job_empty_over_floor": round(j1 / f, 2),
        "ratio_job_unchanged_over_floor": round(j2 / f, 2) if j2 else None,
        "ratio_datacompy_over_job_empty": round(c / j1, 2) if c else None,
        "peak_rss_mb": max(p["peak_rss_mb"] for k, p in phases.items() if k != "generate"),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
                    "python": sys.version.split()[0], "platform": platform.platform(), "spark": spark.version,
                    "master": cfg.spark.master, "shuffle_partitions": cfg.spark.shuffle_partitions,
                    "driver_memory": cfg.spark.driver_memory},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"e2e_{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}_{rows}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("ratio_job_empty_over_floor", "ratio_job_unchanged_over_floor",
                                             "ratio_datacompy_over_job_empty", "peak_rss_mb")}))
    print(f"saved {out}")
    if os.environ.get("BENCH_CLEAN"):
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(j["truth"]["equal"] for j in jobs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
