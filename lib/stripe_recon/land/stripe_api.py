"""Export products and prices through the Stripe API, then land them like an export file.

``recon land stripe --from-api``:

1. The created-time range is split into ``stripe.export_windows`` windows (the first open below,
   the last open above, so nothing can fall outside); every (kind, active=true|false, window) is
   listed in parallel (``stripe.threads`` workers) under the one global token bucket, with the
   pusher's retry/backoff. Prices are listed with ``active=false`` too (Stripe lists only active
   prices otherwise); products are listed both ways as well.
2. The objects are written as JSON lines to ``{storage.root}/runs/{run_id}/stripe_export/`` (one file
   per task) and landed by :func:`land_stripe_files` with ``sources.stripe.path`` pointed there, so
   the bronze/silver path is the same as for files.
3. Completeness: distinct ids per kind and an id-set fingerprint (``bit_xor(xxhash64(id))``, computed
   in Spark) of the exported files and of the landed silver tables must match; both go to the runs
   ledger (stage ``export_stripe_api``). A mismatch is an error naming the counts.

Example::

    counts = land_stripe_api(Run.new(spark, cfg.with_overrides("stripe.api_base=http://127.0.0.1:12111")))
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pyspark.sql import functions as F

from .. import stripe_requests as sr
from .. import tables
from ..errors import InputError
from ..guard import refuse_empty_stripe
from ..push import Sender
from ..ratelimit import global_bucket
from .stripe_events import CURSOR, current_cursor
from .stripe_files import land_stripe_files

CLOCK_MARGIN_SECONDS = 300

KINDS = ("product", "price")
DAY = 86_400
MAX_PROBE_DOUBLINGS = 16  # 2^16 days: any account's lifetime


def _list(kind: str, **kw: Any) -> sr.StripeRequest:
    return sr.list_products(**kw) if kind == "product" else sr.list_prices(**kw)


def _newest_created(sender: Sender) -> int | None:
    newest = None
    for kind in KINDS:
        for active in (True, False):
            page, _ = sender.send(_list(kind, active=active, limit=1))
            for obj in page.get("data") or []:
                newest = max(newest or 0, int(obj["created"]))
    return newest


def _oldest_bound(sender: Sender, hi: int) -> int:
    """A lower bound within 2x of the oldest product's age (exponential probe on products)."""
    span = DAY
    for _ in range(MAX_PROBE_DOUBLINGS):
        page, _ = sender.send(sr.list_products(limit=1, created_lt=hi - span))
        if not page.get("data"):
            return hi - span
        span *= 2
    return hi - span


def windows(sender: Sender, n: int) -> list[tuple[int | None, int | None]]:
    """``n`` [gte, lt) created windows; the first has no lower and the last no upper bound."""
    hi = _newest_created(sender)
    if hi is None or n <= 1:
        return [(None, None)]
    hi += 1
    lo = _oldest_bound(sender, hi)
    bounds = sorted({lo + (hi - lo) * i // n for i in range(1, n)})
    edges: list[int | None] = [None, *bounds, None]
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def _is_local(root: str) -> bool:
    return "://" not in root or root.startswith("file://")


def land_stripe_api(run: Any) -> dict[str, Any]:
    """Export through the API into the run folder, land it, check completeness; returns counts."""
    from ..stripe_client import build_client

    spark, cfg = run.spark, run.cfg
    out_dir = f"{cfg.storage.root.rstrip('/')}/runs/{run.run_id}/stripe_export"
    with run.stage("export_stripe_api") as st:
        sender = Sender(build_client(cfg), global_bucket(cfg.stripe.rate_limit_per_second), cfg.stripe.max_attempts)
        # the events cursor, taken before anything is listed: `--from-events` reads from here next time
        # (no event yet: now, less a margin for the clocks; reading an object again is harmless)
        cursor = current_cursor(sender)
        st.counts[CURSOR] = cursor if cursor is not None else int(time.time()) - CLOCK_MARGIN_SECONDS
        wins = windows(sender, cfg.stripe.export_windows)
        local = _is_local(cfg.storage.root)
        if local:
            os.makedirs(out_dir.removeprefix("file://"), exist_ok=True)
        lock = threading.Lock()
        remote_lines: list[str] = []
        exported = {k: 0 for k in KINDS}

        def task(kind: str, active: bool, i: int, gte: int | None, lt: int | None) -> None:
            lines = [json.dumps(obj, separators=(",", ":"), default=str)
                     for obj in sender.iter_list(_list(kind, active=active, created_gte=gte, created_lt=lt))]
            with lock:
                exported[kind] += len(lines)
                if not local:
                    remote_lines.extend(lines)
            if local and lines:
                path = os.path.join(out_dir.removeprefix("file://"), f"{kind}s-{'active' if active else 'archived'}"
                                    f"-w{i:03d}.jsonl")
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write("\n".join(lines) + "\n")

        with ThreadPoolExecutor(max_workers=cfg.stripe.threads, thread_name_prefix="export") as pool:
            futures = [pool.submit(task, kind, active, i, gte, lt)
                       for kind in KINDS for active in (True, False) for i, (gte, lt) in enumerate(wins)]
            for f in futures:
                f.result()  # re-raise the first failure (after retries) of any window
        total = sum(exported.values())
        if not local:
            spark.createDataFrame([(line,) for line in remote_lines], "value string").coalesce(1) \
                .write.mode("overwrite").text(out_dir)
        st.counts.update({"windows": len(wins), "requests": sender.requests, "retries": sender.retries,
                          **{f"exported.{k}s": v for k, v in exported.items()}})
        if total == 0:
            st.message = "the Stripe account has no products or prices"
        refuse_empty_stripe({f"{k}s": {"rows_in": v} for k, v in exported.items()}, "exported through the API",
                            cfg.sources.stripe.allow_empty)

        ex_fp = _fingerprints(spark.read.schema("object string, id string").json(out_dir)) if total else {}
        landed_cfg = cfg.with_overrides(f"sources.stripe.path={out_dir}", "sources.stripe.mode=files",
                                        "sources.stripe.format=jsonl")
        landed = land_stripe_files(dataclasses.replace(run, cfg=landed_cfg)) if total else {}
        silver = {
            "product": tables.read(spark, cfg, tables.SILVER_STRIPE_PRODUCTS).select(F.lit("product").alias("object"), "id"),
            "price": tables.read(spark, cfg, tables.SILVER_STRIPE_PRICES).select(F.lit("price").alias("object"), "id"),
        } if total else {}
        si_fp = _fingerprints(silver["product"].unionByName(silver["price"])) if total else {}
        problems = []
        for kind in KINDS:
            e, s = ex_fp.get(kind, (0, 0)), si_fp.get(kind, (0, 0))
            st.counts.update({f"export.{kind}s": e[0], f"export.{kind}s.fingerprint": e[1],
                              f"silver.{kind}s": s[0], f"silver.{kind}s.fingerprint": s[1]})
            if e != s:
                problems.append(f"{kind}s: exported {e[0]} ids (fingerprint {e[1]}), landed {s[0]} "
                                f"(fingerprint {s[1]})")
        if problems:
            raise InputError("Stripe API export incomplete after landing: " + "; ".join(problems)
                             + f". See gold.quarantine for this run and the files in {out_dir}.")
    return {"export_path": out_dir, "windows": len(wins), "exported": exported,
            "distinct": {k: v[0] for k, v in ex_fp.items()}, "landed": landed}


def _fingerprints(df: Any) -> dict[str, tuple[int, int]]:
    """{kind: (distinct ids, bit_xor of xxhash64 over the distinct ids)} in one aggregation."""
    rows = (df.filter(F.col("id").isNotNull()).distinct().groupBy("object")  # aggregate: one row per kind
            .agg(F.count("*").alias("n"), F.expr("bit_xor(xxhash64(id))").alias("fp")).collect())
    return {r["object"]: (int(r["n"]), int(r["fp"])) for r in rows}
