"""Push throughput against the emulator with a rate limit (default 100 requests/s, Stripe live).

Seeds N products, writes N update_product corrections (verify read + write each) to the outbox, runs
the real pusher (SDK over HTTP, one global token bucket) and measures:

- ``requests_per_s``: Stripe API requests per second during the push (the budget actually used);
- ``corrections_per_s``: corrections finished per second (a write each, plus one batched verify read
  per 100 corrections);
- 429s answered by the emulator, retries, wall time including the Spark start of the stream.

Figures go to bench/results/push.json.

    .venv/bin/python bench/push_bench.py --corrections 1500 --limit 100
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from stripe_recon import tables  # noqa: E402
from stripe_recon.config import load_config  # noqa: E402
from stripe_recon.emulator.server import EmulatorServer  # noqa: E402
from stripe_recon.ledger import Run  # noqa: E402
from stripe_recon.push import push  # noqa: E402
from stripe_recon.spark import get_spark  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corrections", type=int, default=1500)
    ap.add_argument("--limit", type=float, default=100.0, help="emulator rate limit (requests/s)")
    ap.add_argument("--rate", type=float, default=None, help="pusher token bucket (default: the limit)")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "push.json"))
    args = ap.parse_args()
    rate = args.rate or args.limit
    n = args.corrections

    root = tempfile.mkdtemp(prefix="push_bench_")
    with EmulatorServer(port=0, rate_limit=args.limit) as emu:
        emu.store.seed({"object": "product", "id": f"prod_b{i:06d}", "name": f"Old {i}", "created": 1700000000 + i,
                        "metadata": {"internal_id": f"B{i}"}} for i in range(n))
        os.environ["STRIPE_API_KEY"] = "sk_test_bench"
        cfg = load_config(REPO / "conf" / "local.yaml", [
            f"storage.root={root}", f"stripe.api_base={emu.url}", f"stripe.rate_limit_per_second={rate}",
            f"stripe.threads={args.threads}", "stripe.status_chunk_size=500", "spark.shuffle_partitions=2",
            f"spark.ivy_dir={REPO / '.cache' / 'ivy'}",
        ], environ={})
        spark = get_spark(cfg)
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        rows = []
        for i in range(n):
            payload = json.dumps({"name": f"New {i}"}, separators=(",", ":"))
            observed = json.dumps({"id": f"prod_b{i:06d}", "name": f"Old {i}", "active": True})
            cid = hashlib.sha256(f"B{i}|{payload}".encode()).hexdigest()
            rows.append((cid, "bench", "HB", 0, "product", f"B{i}", f"prod_b{i:06d}", "update_product", payload,
                         observed, "recon-" + cid, "planned", 0, None, None, now, now, None))
        tables.append(spark, cfg, tables.GOLD_CORRECTIONS, spark.createDataFrame(rows, tables.CORRECTIONS_SCHEMA))
        tables.append(spark, cfg, tables.GOLD_PLANS, spark.createDataFrame(
            [("HB", "bench", "planned", {"corrections": n}, [], now, None, "bench")], tables.PLANS_SCHEMA))

        since = len(emu.journal)
        t0 = time.monotonic()
        summary = push(Run.new(spark, cfg))
        wall = time.monotonic() - t0
        journal = emu.journal[since:]

    api = [e for e in journal if e["path"].startswith("/v1/")]
    span = (api[-1]["ts"] - api[0]["ts"]) if len(api) > 1 else 0.0
    throttled = sum(1 for e in api if e["status"] == 429)
    writes = sum(1 for e in api if e["method"] == "POST" and e["applied"])
    renamed = summary["applied"]
    result = {
        "bench": "push", "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "emulator_rate_limit_per_s": args.limit, "pusher_rate_per_s": rate, "threads": args.threads,
        "corrections": n, "applied": renamed, "failed": summary["failed"], "writes_applied": writes,
        "requests": len(api), "http_429": throttled, "retries": summary["retries"],
        "api_span_s": round(span, 2),
        "requests_per_s": round(len(api) / span, 2) if span else None,
        "writes_per_s": round(writes / span, 2) if span else None,
        "corrections_per_s": round(renamed / span, 2) if span else None,
        "push_seconds_incl_spark": round(wall, 2), "push_summary": summary,
        "note": "verify-before-write reads are batched (one GET /v1/products?ids[] per 100 corrections), "
                "so a correction costs ~1.01 requests; *_per_s are over the API span (first to last request); "
                "push_seconds_incl_spark adds the Spark stream start and the outbox status MERGEs",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
