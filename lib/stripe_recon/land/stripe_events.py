"""The incremental Stripe side: ``/v1/events`` (product.*, price.*) since a cursor, as export files.

``recon land stripe --from-events`` (wired by the landing stage) calls :func:`export_stripe_events`:

1. The cursor is the ``created`` of the newest event the last export saw: ledger count
   ``events.cursor_created`` of the newest ``ok`` row of stage ``export_stripe_events`` (this one) or
   ``export_stripe_api`` (a full export records :func:`current_cursor` taken before it lists anything,
   so the changes made during it are read again next time). No cursor, or one older than
   ``sources.stripe.events_retention_days`` (Stripe keeps 30 days) less an hour, returns
   ``fallback=True`` with the reason: run a full export instead (events already gone cannot be read).
2. Every product.* and price.* event with ``created >= cursor`` is listed (newest first, paged, under
   the one token bucket with the pusher's retries). The same second is read again on purpose: two
   events of one second tie, and re-reading an object twice is harmless.
3. Every object named in an event is read again from the API (an event's ``data.object`` is the
   object at the event's time, in that time's API version, without expandable fields): products in
   batches of 100 ids (``GET /v1/products?ids[]=...``), prices one by one. An object the API no longer
   has (``product.deleted``, or a 404) is written as the newest event's ``data.object`` with
   ``"deleted": true``, so its mapping key (``metadata.internal_id``, ``lookup_key``) is kept.
4. The objects go as JSON lines to ``{storage.root}/runs/{run_id}/stripe_events/`` (``products.jsonl``,
   ``prices.jsonl``), serialised exactly as the API export writes its files, one line per object.

Ledger (stage ``export_stripe_events``): ``events``, ``objects.products|prices``,
``deleted.products|prices``, ``requests``, ``retries``, ``fallback`` (0/1) and
``events.cursor_created`` (the new cursor: the newest event's ``created``, or the old cursor when no
event arrived); the message says the cursor used or why it fell back.

Example::

    out = export_stripe_events(run)
    if out.fallback:
        land_stripe_api(run)                  # and say so: out.reason
    else:
        land_changes_from(out.path)           # the landing stage's job
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import stripe
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from .. import ledger
from .. import stripe_requests as sr
from ..config import Config
from ..push import Sender
from ..ratelimit import global_bucket

STAGE = "export_stripe_events"
FULL_EXPORT_STAGE = "export_stripe_api"
CURSOR = "events.cursor_created"
EVENT_TYPES = ["product.created", "product.updated", "product.deleted",
               "price.created", "price.updated", "price.deleted"]
KINDS = ("product", "price")
RETENTION_MARGIN_SECONDS = 3600  # a cursor this close to the retention limit is treated as expired
_UNSET: Any = object()


@dataclass(frozen=True)
class EventsExport:
    """What :func:`export_stripe_events` did. ``path`` is None when it fell back."""

    fallback: bool
    reason: str
    path: str | None
    cursor: int | None
    counts: dict[str, int] = field(default_factory=dict)


def last_cursor(spark: SparkSession, cfg: Config) -> int | None:
    """The cursor the last ok events or full export recorded in gold.runs, or None."""
    cursor = F.col("counts")[CURSOR]
    row = ledger.latest_ok(spark, cfg, (STAGE, FULL_EXPORT_STAGE), [cursor], where=cursor.isNotNull())
    return int(row[0]) if row else None


def current_cursor(sender: Sender) -> int | None:
    """The ``created`` of the newest catalog event now (None when there is none): a full export
    records it, taken before it lists anything, as ``events.cursor_created``."""
    page, _ = sender.send(sr.list_events(types=EVENT_TYPES, limit=1))
    data = page.get("data") or []
    return int(data[0]["created"]) if data else None


def _expired(cursor: int, retention_days: int, now: float) -> bool:
    return cursor < now - retention_days * 86_400 + RETENTION_MARGIN_SECONDS


def newest_per_object(events: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """{(kind, id): the newest event naming it}; ``events`` newest first, as Stripe lists them."""
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        kind = event["type"].split(".", 1)[0]
        obj = (event.get("data") or {}).get("object") or {}
        if kind in KINDS and obj.get("id"):
            newest.setdefault((kind, obj["id"]), event)
    return newest


def _reread(sender: Sender, newest: dict[tuple[str, str], dict[str, Any]], threads: int
            ) -> dict[str, list[dict[str, Any]]]:
    """The current state of every object named in an event; gone ones as deleted."""
    def gone(kind: str, oid: str) -> dict[str, Any]:
        return {**newest[(kind, oid)]["data"]["object"], "deleted": True}

    out: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    products = sorted(oid for kind, oid in newest if kind == "product")
    for i in range(0, len(products), sr.MAX_PAGE):
        batch = products[i:i + sr.MAX_PAGE]
        page, _ = sender.send(sr.list_products(ids=batch, limit=sr.MAX_PAGE))
        found = {obj["id"]: obj for obj in page.get("data") or []}
        out["product"] += [found[oid] if oid in found else gone("product", oid) for oid in batch]

    def price(oid: str) -> dict[str, Any]:
        if newest[("price", oid)]["type"] == "price.deleted":
            return gone("price", oid)
        try:
            return sender.send(sr.retrieve_price(oid))[0]
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return gone("price", oid)
            raise

    prices = sorted(oid for kind, oid in newest if kind == "price")
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="events") as pool:
        out["price"] = list(pool.map(price, prices))
    return out


def _write(spark: SparkSession, out_dir: str, objects: dict[str, list[dict[str, Any]]]) -> None:
    """JSON lines as the API export writes them; through Spark when storage.root is not local."""
    local = "://" not in out_dir or out_dir.startswith("file://")
    lines = {k: [json.dumps(o, separators=(",", ":"), default=str) for o in objs] for k, objs in objects.items()}
    if local:
        folder = out_dir.removeprefix("file://")
        os.makedirs(folder, exist_ok=True)
        for kind, rows in lines.items():
            if rows:
                with open(os.path.join(folder, f"{kind}s.jsonl"), "w", encoding="utf-8") as fh:
                    fh.write("\n".join(rows) + "\n")
    else:
        every = [(line,) for rows in lines.values() for line in rows]
        spark.createDataFrame(every, "value string").coalesce(1).write.mode("overwrite").text(out_dir)


def export_stripe_events(run: Any, cursor: int | None = _UNSET, *, sender: Sender | None = None,
                         now: float | None = None) -> EventsExport:
    """List catalog events since ``cursor`` (default: :func:`last_cursor`), re-read their objects and
    write them under the run folder; see the module docstring. ``now`` (tests) is the clock the
    retention is measured on."""
    from ..stripe_client import build_client

    spark, cfg = run.spark, run.cfg
    if cursor is _UNSET:
        cursor = last_cursor(spark, cfg)
    retention = cfg.sources.stripe.events_retention_days
    now = time.time() if now is None else now
    out_dir = f"{cfg.storage.root.rstrip('/')}/runs/{run.run_id}/stripe_events"
    with run.stage(STAGE) as st:
        if cursor is None or _expired(cursor, retention, now):
            reason = ("no events cursor yet (no earlier events or full export recorded one)" if cursor is None else
                      f"the events cursor {cursor} is older than Stripe's {retention}-day event retention")
            st.counts.update({"fallback": 1, **({CURSOR: cursor} if cursor is not None else {})})
            st.message = f"fallback to a full export: {reason}"
            return EventsExport(True, reason, None, cursor, dict(st.counts))
        sender = sender or Sender(build_client(cfg), global_bucket(cfg.stripe.rate_limit_per_second),
                                  cfg.stripe.max_attempts)
        events = list(sender.iter_list(sr.list_events(types=EVENT_TYPES, created_gte=cursor)))
        newest = newest_per_object(events)
        objects = _reread(sender, newest, cfg.stripe.threads)
        _write(spark, out_dir, objects)
        new_cursor = max([cursor, *(int(e["created"]) for e in events)])
        st.counts.update({
            "events": len(events), "fallback": 0, CURSOR: new_cursor,
            "requests": sender.requests, "retries": sender.retries,
            **{f"objects.{k}s": len(objects[k]) for k in KINDS},
            **{f"deleted.{k}s": sum(1 for o in objects[k] if o.get("deleted")) for k in KINDS},
        })
        st.message = f"events since created >= {cursor}; new cursor {new_cursor}"
        return EventsExport(False, "", out_dir, new_cursor, dict(st.counts))


def land_stripe_events(run: Any) -> dict[str, Any]:
    """``land stripe --from-events`` (``sources.stripe.mode: events``): export the objects named by the
    events since the cursor (:func:`export_stripe_events`) and land them as changes
    (``land_stripe_files(changes=True)``); a full API export instead when the cursor is missing or
    past the retention (the export stage's ledger row says why)."""
    import dataclasses

    from .stripe_api import land_stripe_api
    from .stripe_files import land_stripe_files

    out = export_stripe_events(run)
    if out.fallback:
        return {**land_stripe_api(run), "fallback": out.reason}
    if not any(out.counts.get(f"objects.{k}s") for k in KINDS):
        with run.stage("land_stripe") as st:
            st.counts.update({"rows_in": 0, "landed": 0, "quarantined": 0})
            st.message = f"no catalog events since the cursor {out.cursor}: nothing to land"
        return {"rows_in": 0, "landed": 0, "quarantined": 0, "events": out.counts}
    landed_cfg = run.cfg.with_overrides(f"sources.stripe.path={out.path}", "sources.stripe.mode=files",
                                        "sources.stripe.format=jsonl")
    return {**land_stripe_files(dataclasses.replace(run, cfg=landed_cfg), changes=True), "events": out.counts}

