"""Benchmark of an incremental run against a full run of the same catalog (`make bench-incremental`).

One process, one Spark session, one generated catalog (BENCH_ROWS products, their prices, seeded
discrepancies at BENCH_RATE per kind). Timed, in this order:

  (full)  a full run on a new storage root: land internal + land stripe + validate_inputs + detect
          + plan (no push);
  (incr)  BENCH_CHANGE (0.1%) of the product keys changed by Debezium events (renamed products,
          a re-priced price of each, a few deletes and inserts, made with Spark from silver: no
          Python loop over rows): land internal --cdc + detect --incremental + plan;
  (ref)   the referee, not timed as a run: a full detect over the same silver; the incremental
          run's gold.discrepancies must equal it row for row (exit 1 otherwise).

  (plan)  the incremental run's corrections and pull corrections must equal build_corrections over
          every discrepancy row of the run (what a full plan would write), row for row (exit 1 otherwise).

Prints incr/full, each stage's seconds, peak RSS and the load average; saves
bench/results/incremental_<UTC stamp>_<rows>.json. With BENCH_JOBS=1 the Spark UI is on and the
incremental run's Spark jobs are summed per call site (the slowest printed and saved): where its
seconds go.

    .venv/bin/python bench/incremental_bench.py                     # 1M products
    BENCH_ROWS=10000000 BENCH_DRIVER_MEMORY=8g BENCH_PARTITIONS=32 .venv/bin/python bench/incremental_bench.py

Environment: BENCH_ROWS (1000000), BENCH_SEED (42), BENCH_RATE (0.002), BENCH_CHANGE (0.001),
BENCH_DIR (/tmp/stripe-recon-incr-<rows>), BENCH_KEEP=1 (reuse the generated catalog),
BENCH_DRIVER_MEMORY (8g), BENCH_PARTITIONS (8), BENCH_CLEAN=1 (delete BENCH_DIR at the end),
BENCH_JOBS=1 (per-call-site Spark job seconds of the incremental run).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import sys
import urllib.request
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_bench import job, stage_seconds, timed  # noqa: E402
from run_bench import PeakRss  # noqa: E402
from stripe_recon import tables  # noqa: E402
from stripe_recon.config import load_config  # noqa: E402
from stripe_recon.errors import HeldError  # noqa: E402
from stripe_recon.generate import generate  # noqa: E402
from stripe_recon.ledger import Run  # noqa: E402
from stripe_recon.spark import get_spark  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
ROW = ["entity", "key", "stripe_id", "kind", "attribute", "internal_value", "stripe_value", "owner", "action"]
_ISO = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"


def _event(table: str, op: str, row, lsn) -> DataFrame:
    """A Debezium event (plain envelope) as a JSON-text column, from a struct of the row's columns."""
    after = F.lit(None) if op == "d" else row
    before = row if op == "d" else F.lit(None)
    return F.to_json(F.struct(F.lit(op).alias("op"), before.alias("before"), after.alias("after"),
                              F.struct(F.lit(table).alias("table"), lsn.alias("lsn"),
                                       (F.lit(1_900_000_000_000) + lsn).alias("ts_ms")).alias("source")))


def change_events(spark, cfg, out: Path, fraction: float, seed: int) -> dict[str, int]:
    """Debezium events for ``fraction`` of the internal product keys, written as JSON lines: each
    picked product renamed (one in 20 deleted instead), the first price of each picked product
    re-priced, and as many new products as deletes. Built from silver with Spark."""
    when = F.lit("2031-01-01T00:00:00Z")
    prods = tables.read(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS)
    picked = prods.where(F.rand(seed) < F.lit(fraction)).withColumn("_n", F.monotonically_increasing_id())
    row = F.struct(
        F.col("product_id"), F.concat(F.coalesce(F.col("name"), F.lit("")), F.lit(" (renamed)")).alias("name"),
        "description", "active", F.date_format("deleted_at", _ISO).alias("deleted_at"), "tax_code",
        F.to_json("metadata").alias("metadata"), when.alias("updated_at"))
    deleted = (F.col("_n") % 20) == 0
    lsn = F.lit(10_000_000_000) + F.col("_n") * 4
    product_events = picked.select(F.when(deleted, _event("products", "d", F.struct("product_id"), lsn))
                                   .otherwise(_event("products", "u", row, lsn)).alias("value"))
    new_row = F.struct(F.concat(F.lit("incr_new_"), F.col("_n").cast("string")).alias("product_id"),
                       F.lit("New product").alias("name"), F.lit(True).alias("active"), F.lit("{}").alias("metadata"),
                       when.alias("updated_at"))
    inserts = picked.where(deleted).select(_event("products", "c", new_row, lsn + 1).alias("value"))
    prices = tables.read(spark, cfg, tables.SILVER_INTERNAL_PRICES)
    first_price = (prices.join(picked.where(~deleted).select("product_id", "_n"), "product_id")
                   .where(F.col("price_id").endswith("-0")))
    price_row = F.struct("price_id", "product_id", "currency", (F.col("amount") + F.lit(1)).cast("string").alias("amount"),
                         "interval", "interval_count", "active", "nickname", when.alias("updated_at"))
    price_events = first_price.select(_event("prices", "u", price_row, lsn + 2).alias("value"))
    events = product_events.unionByName(inserts).unionByName(price_events)
    events.coalesce(1).write.mode("overwrite").text(str(out))
    return {"events": spark.read.text(str(out)).count(), "products_picked": picked.count()}


def incremental_run(cfg, spark, events: Path) -> tuple[Run, dict]:
    """land internal --cdc + detect --incremental + plan."""
    from stripe_recon.detect import detect
    from stripe_recon.land.internal_cdc import land_internal_cdc
    from stripe_recon.plan import plan

    run = Run.new(spark, cfg)
    outcome: dict = {"land_internal": land_internal_cdc(run, path=str(events)),
                     "detect": detect(run, incremental_run=True)}
    try:
        outcome["plan"] = plan(run)
    except HeldError as exc:
        outcome["plan"] = {"held": str(exc)[:300]}
    return run, outcome


def rows_equal(spark, cfg, a: str, b: str) -> dict:
    d = tables.read(spark, cfg, tables.GOLD_DISCREPANCIES).select("run_id", *ROW)
    x, y = d.where(F.col("run_id") == a).drop("run_id"), d.where(F.col("run_id") == b).drop("run_id")
    extra, missing = x.exceptAll(y).count(), y.exceptAll(x).count()
    return {"rows": x.count(), "extra": extra, "missing": missing, "equal": extra == 0 and missing == 0}


CORRECTION = ["correction_id", "seq", "entity", "key", "stripe_id", "operation", "payload", "observed", "depends_on",
              "idempotency_key"]
PULL = ["correction_id", "entity", "key", "attribute", "current_value", "new_value", "stripe_id"]


def plans_equal(spark, cfg, run_id: str) -> dict:
    """The run's corrections and pull corrections against build_corrections over every discrepancy
    row of the run and today's silver (what a plan of every row writes)."""
    from stripe_recon.plan import build_corrections

    disc = tables.read(spark, cfg, tables.GOLD_DISCREPANCIES).where(F.col("run_id") == run_id)
    ip, ipr, sp, spr = (tables.read(spark, cfg, n) for n in (
        tables.SILVER_INTERNAL_PRODUCTS, tables.SILVER_INTERNAL_PRICES, tables.SILVER_STRIPE_PRODUCTS,
        tables.SILVER_STRIPE_PRICES))
    every = build_corrections(disc, ip, ipr, sp, spr, cfg, run_id, allow_archives=ip.count() > 0)
    out: dict = {}
    for label, name, cols, ref in (("corrections", tables.GOLD_CORRECTIONS, CORRECTION, every.corrections),
                                   ("pulls", tables.GOLD_INTERNAL_CORRECTIONS, PULL, every.internal)):
        x = tables.read(spark, cfg, name).where(F.col("run_id") == run_id).select(*cols)
        # computed once without its lineage: exceptAll over build_corrections' plan hits a Spark
        # INTERNAL_ERROR ("Couldn't find entity") in its rewrite of the set operation
        y = ref.select(*cols).localCheckpoint(eager=True)
        out[label] = {"rows": x.count(), "extra": x.exceptAll(y).count(), "missing": y.exceptAll(x).count()}
    out["equal"] = all(v["extra"] == 0 and v["missing"] == 0 for v in out.values())
    return out


class JobLog:
    """The Spark jobs run since :meth:`mark`, from the UI's REST API, summed per call site."""

    def __init__(self, spark):
        sc = spark.sparkContext
        self.url = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/jobs"
        self.after = -1

    def _jobs(self) -> list[dict]:
        with urllib.request.urlopen(self.url) as reply:
            return json.load(reply)

    def mark(self) -> None:
        self.after = max((j["jobId"] for j in self._jobs()), default=-1)

    def summary(self, top: int = 20) -> dict:
        def ms(stamp: str) -> float:
            return dt.datetime.strptime(stamp.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()

        sites: dict[str, list[float]] = {}
        jobs = [j for j in self._jobs() if j["jobId"] > self.after and "completionTime" in j]
        for j in jobs:
            site = j["name"] + (f" | {j['description'][:90]}" if j.get("description") else "")
            sites.setdefault(site, []).append(ms(j["completionTime"]) - ms(j["submissionTime"]))
        ranked = sorted(sites.items(), key=lambda kv: -sum(kv[1]))[:top]
        return {"jobs": len(jobs), "job_seconds": round(sum(sum(v) for v in sites.values()), 2),
                "slowest": [{"site": k, "jobs": len(v), "seconds": round(sum(v), 2)} for k, v in ranked]}


def main() -> int:
    rows = int(os.environ.get("BENCH_ROWS", "1000000"))
    seed = int(os.environ.get("BENCH_SEED", "42"))
    rate = float(os.environ.get("BENCH_RATE", "0.002"))
    change = float(os.environ.get("BENCH_CHANGE", "0.001"))
    work = Path(os.environ.get("BENCH_DIR", f"/tmp/stripe-recon-incr-{rows}")).resolve()
    keep = bool(os.environ.get("BENCH_KEEP"))
    gen = work / "gen"
    if work.exists() and not (keep and (gen / "truth.jsonl").exists()):
        shutil.rmtree(work)
    for scratch in ("data", "events"):
        shutil.rmtree(work / scratch, ignore_errors=True)
    cfg = load_config(REPO / "conf" / "local.yaml", [
        f"storage.root={work / 'data'}", f"spark.ivy_dir={REPO / '.cache' / 'ivy'}",
        f"spark.driver_memory={os.environ.get('BENCH_DRIVER_MEMORY', '8g')}",
        f"spark.shuffle_partitions={os.environ.get('BENCH_PARTITIONS', '8')}",
        "sources.internal.format=parquet", f"sources.internal.products={gen}/internal/products.parquet",
        f"sources.internal.prices={gen}/internal/prices.parquet", "sources.stripe.mode=files",
        f"sources.stripe.path={gen}/stripe",
        # the guard holds a plan that changes more than its ratios allow; here it must not stop the plan stage
        "guard.max_change_ratio=1", "guard.max_archive_ratio=1",
        *(["spark.ui_enabled=true"] if os.environ.get("BENCH_JOBS") else []),
    ])
    spark = get_spark(cfg)
    phases: dict = {}
    load_before = os.getloadavg()
    with PeakRss() as mem:
        if not (gen / "truth.jsonl").exists():
            timed("generate", lambda: generate(spark, str(gen), products=rows, seed=seed, rate=rate), mem, phases)
        full_run, _ = timed("full_run", lambda: job(cfg, spark), mem, phases)
        made = change_events(spark, cfg, work / "events", change, seed)
        print(f"{'':>16}  {made}", flush=True)
        job_log = JobLog(spark) if os.environ.get("BENCH_JOBS") else None
        if job_log:
            job_log.mark()
        inc_run, outcome = timed("incremental_run", lambda: incremental_run(cfg, spark, work / "events"), mem, phases)
        jobs = job_log.summary() if job_log else None
        plan_check = plans_equal(spark, cfg, inc_run.run_id)
        from stripe_recon.detect import detect

        referee = Run.new(spark, cfg.with_overrides("detect.reuse_unchanged=false"))  # compares every key
        timed("referee_detect", lambda: detect(referee), mem, phases)
        check = rows_equal(spark, cfg, inc_run.run_id, referee.run_id)
    load_after = os.getloadavg()
    full_s, inc_s = phases["full_run"]["seconds"], phases["incremental_run"]["seconds"]
    result = {
        "command": f"BENCH_ROWS={rows} BENCH_CHANGE={change} .venv/bin/python bench/incremental_bench.py",
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "rows_products": rows, "change_fraction": change, "events": made, "phases": phases,
        "full_stages": stage_seconds(spark, cfg, full_run.run_id),
        "incremental_stages": stage_seconds(spark, cfg, inc_run.run_id),
        "incremental_messages": {r["stage"]: r["message"] for r in tables.read(spark, cfg, tables.GOLD_RUNS)
                                 .where(F.col("run_id") == inc_run.run_id).select("stage", "message").collect()},
        "changed_keys": outcome["detect"].get("changed_keys"),
        "ratio_incremental_over_full": round(inc_s / full_s, 4),
        "incremental_equals_full_detect": check,
        "incremental_plan_equals_full_plan": plan_check,
        **({"incremental_jobs": jobs} if jobs else {}),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
                    "python": sys.version.split()[0], "platform": platform.platform(), "spark": spark.version,
                    "shuffle_partitions": cfg.spark.shuffle_partitions, "driver_memory": cfg.spark.driver_memory},
    }
    print(f"{'':>16}  full stages {result['full_stages']}")
    print(f"{'':>16}  incremental stages {result['incremental_stages']}")
    print(f"{'':>16}  incremental messages {result['incremental_messages']}")
    if jobs:
        print(f"{'':>16}  {jobs['jobs']} Spark jobs, {jobs['job_seconds']} s in jobs; the slowest call sites:")
        for site in jobs["slowest"]:
            print(f"{'':>18}{site['seconds']:8.2f} s  {site['jobs']:3d} jobs  {site['site']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"incremental_{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}_{rows}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("ratio_incremental_over_full", "changed_keys",
                                             "incremental_equals_full_detect", "incremental_plan_equals_full_plan")}))
    print(f"saved {out}")
    if os.environ.get("BENCH_CLEAN"):
        shutil.rmtree(work, ignore_errors=True)
    return 0 if check["equal"] and plan_check["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
