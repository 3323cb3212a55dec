"""The safe pusher: the latest plan's corrections -> Stripe, statuses merged back into the outbox.

- Streams the pending corrections (``planned``, ``failed``, ``skipped``) of the latest plan in
  ``seq`` order with ``toLocalIterator``; all corrections of one ``seq`` finish before the next
  starts (products before their prices); a correction whose ``depends_on`` is not applied is
  ``skipped`` (retried on the next push).
- A ThreadPoolExecutor of ``stripe.threads`` workers shares ONE global token bucket
  (``stripe.rate_limit_per_second``, :mod:`ratelimit`), spent on every request, reads included.
- Retries: 429, 409, 5xx and connection errors, jittered exponential backoff, ``Stripe-Should-Retry``
  honoured (``false`` = never retry, ``true`` = retry), at most ``stripe.max_attempts`` per request.
  Each write carries the correction's own Idempotency-Key (``-create``/``-default``/``-archive``
  suffixes for the three writes of a replace_price), so a retry after a lost response is replayed.
- Verify before write: the object is re-read; already in the target state -> ``applied`` without
  a write (this makes reruns after a crash converge; such a correction is counted as
  ``already_applied``, not ``applied``: the summary's ``applied`` is what this push wrote); no
  longer holding the ``observed`` values -> ``stale``; for creates, our deterministic product id /
  the price's lookup_key already present with the planned attributes -> ``applied`` (already).
- Claims (claims.py): the pending corrections are claimed in one Delta commit before anything is
  sent, and only this push's claims are sent, so two pushes never send one correction at once
  (``claimed_elsewhere`` counts those another live push holds); a push whose heartbeat fails
  stops writing (the rest is ``skipped``, retried by the next push).
- Statuses are MERGEd into gold.corrections every ``stripe.status_chunk_size`` results by a writer
  thread; ``applied`` is never re-sent.
- Held plans are pushed only with ``approve=<plan_hash>`` or ``force``. ``dry_run`` verifies and
  reports what would be written, writing nothing (no Stripe writes, no table writes).

Example::

    summary = push(run, dry_run=False)   # {"applied": 10, "already_applied": 2, "failed": 0, "stale": 1, ...}
"""

from __future__ import annotations

import json
import logging
import queue
import random
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import stripe
from pyspark.sql import functions as F

from . import stripe_requests as sr
from . import tables
from .claims import Claims
from .errors import HeldError, InputError
from .ratelimit import TokenBucket, global_bucket

log = logging.getLogger(__name__)

PENDING = ("planned", "failed", "skipped")
STATUS_SCHEMA = "correction_id string, status string, attempts int, last_error string, result_id string"
BACKOFF_BASE = 0.25
BACKOFF_CAP = 8.0


@dataclass
class Outcome:
    correction_id: str
    status: str  # applied | failed | stale | skipped | would_apply (dry run): the outbox status
    attempts: int = 0
    last_error: str | None = None
    result_id: str | None = None
    wrote: bool = False  # this push sent a write for it (False for an ``applied`` found in place)

    @property
    def counter(self) -> str:
        """The summary count it adds to: ``found_applied`` for an ``applied`` that needed no write."""
        return "found_applied" if self.status == "applied" and not self.wrote else self.status


class Stale(Exception):
    """Stripe no longer holds the values observed at detection: do not write."""


class Fenced(Exception):
    """This push may no longer write (its claims' heartbeat failed): leave the correction for later."""


# -- sending with the budget and retries ------------------------------------------------------------

def _header(exc: stripe.StripeError, name: str) -> str | None:
    headers = getattr(exc, "headers", None) or {}
    for key, value in dict(headers).items():
        if key.lower() == name.lower():
            return str(value)
    return None


def retryable(exc: Exception) -> bool:
    """429, 409, 5xx and connection errors are retried unless Stripe-Should-Retry says false."""
    if not isinstance(exc, stripe.StripeError):
        return False
    should = _header(exc, "Stripe-Should-Retry")
    if should is not None:
        return should.lower() == "true"
    if isinstance(exc, (stripe.RateLimitError, stripe.APIConnectionError)):
        return True
    status = exc.http_status or 0
    return status == 409 or status >= 500


def backoff_seconds(attempt: int, rng: random.Random | None = None) -> float:
    """Jittered exponential backoff: uniform in [half, full] of min(cap, base * 2^(attempt-1))."""
    full = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
    return full * (0.5 + 0.5 * (rng or random).random())


class Sender:
    """Sends :class:`stripe_requests.StripeRequest`s under the bucket with retries; counts requests."""

    def __init__(self, client: stripe.StripeClient, bucket: TokenBucket, max_attempts: int,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.bucket = bucket
        self.max_attempts = max_attempts
        self.sleep = sleep
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0

    def send(self, req: sr.StripeRequest, idempotency_key: str | None = None) -> tuple[dict[str, Any], int]:
        """(response dict, attempts used); the last error is raised when retries are exhausted."""
        attempt = 0
        while True:
            attempt += 1
            self.bucket.acquire()
            with self._lock:
                self.requests += 1
            try:
                return sr.execute(self.client, req, idempotency_key=idempotency_key), attempt
            except stripe.StripeError as exc:
                if attempt >= self.max_attempts or not retryable(exc):
                    exc.attempts = attempt  # type: ignore[attr-defined]
                    raise
                with self._lock:
                    self.retries += 1
                self.sleep(backoff_seconds(attempt))

    def iter_list(self, req: sr.StripeRequest) -> Any:
        """Every object of a list request, page by page, each page under the budget with retries."""
        params = dict(req.params)
        while True:
            page, _ = self.send(sr.StripeRequest(req.method, req.path, req.resource, "list", None, params))
            data = page.get("data") or []
            yield from data
            if not page.get("has_more") or not data:
                return
            params = {**params, "starting_after": data[-1]["id"]}


# -- verify-before-write helpers ------------------------------------------------------------------

def _txt(value: Any) -> Any:
    """null and "" are the same for optional text."""
    return None if value == "" else value


def _meta_equal(current: dict[str, Any] | None, key: str, value: Any) -> bool:
    return _txt((current or {}).get(key)) == _txt(value)


def _create_price_request(create: dict[str, Any], transfer_lookup_key: bool = False) -> sr.StripeRequest:
    """The create_price request of a planned price (create_price's payload, replace_price's ``create``)."""
    rec = create.get("recurring") or {}
    return sr.create_price(create["product"], create["currency"], create["unit_amount"],
                           interval=rec.get("interval"), interval_count=rec.get("interval_count"),
                           lookup_key=create.get("lookup_key"), transfer_lookup_key=transfer_lookup_key,
                           nickname=create.get("nickname"))


def _holds(obj: dict[str, Any], values: dict[str, Any]) -> bool:
    """True when ``obj`` has every field of ``values`` (metadata key by key; null == "")."""
    for key, value in values.items():
        if key == "metadata":
            if not all(_meta_equal(obj.get("metadata"), k, v) for k, v in (value or {}).items()):
                return False
        elif _txt(obj.get(key)) != _txt(value):
            return False
    return True


def _observed_part(observed: dict[str, Any] | None, payload: dict[str, Any]) -> dict[str, Any]:
    """The observed values of just the fields the payload changes."""
    if observed is None:
        return {}
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if key == "metadata":
            out["metadata"] = {k: (observed.get("metadata") or {}).get(k) for k in (value or {})}
        else:
            out[key] = observed.get(key)
    return out


def _price_matches(price: dict[str, Any], create: dict[str, Any]) -> bool:
    """A Stripe price has the planned product, currency, amount and recurrence."""
    rec = price.get("recurring") or {}
    want = create.get("recurring") or {}
    return (
        price.get("product") == create.get("product")
        and str(price.get("currency", "")).lower() == create.get("currency")
        and price.get("unit_amount") == create.get("unit_amount")
        and rec.get("interval") == want.get("interval")
        and (not want or int(rec.get("interval_count") or 1) == int(want.get("interval_count") or 1))
    )


def _object_id(value: Any) -> str | None:
    """An id field as Stripe returns it: the id string, or the object itself when expanded."""
    return value.get("id") if isinstance(value, dict) else value


def _missing(exc: stripe.StripeError) -> bool:
    return isinstance(exc, stripe.InvalidRequestError) and (exc.http_status == 404 or exc.code == "resource_missing")


class Applier:
    """Applies one correction (a dict of a gold.corrections row) with verify-before-write."""

    def __init__(self, sender: Sender, dry_run: bool = False, prefetched: dict[str, Any] | None = None,
                 may_write: Callable[[], bool] | None = None) -> None:
        self.s = sender
        self.dry_run = dry_run
        # the object as just read by a batched list (see push()); None = read it here
        self.prefetched = prefetched
        self.may_write = may_write  # checked before every write (claims.Claims.may_write)

    def apply(self, row: dict[str, Any]) -> Outcome:
        cid = row["correction_id"]
        self._attempts = 0
        self._wrote = False
        try:
            handler = getattr(self, "_" + row["operation"])
            status, result_id = handler(row, json.loads(row["payload"]),
                                        json.loads(row["observed"]) if row.get("observed") else None)
            return Outcome(cid, status, self._attempts, None, result_id, wrote=self._wrote)
        except Stale as exc:
            return Outcome(cid, "stale", self._attempts, str(exc)[:1000])
        except Fenced as exc:
            return Outcome(cid, "skipped", self._attempts, str(exc)[:1000], wrote=self._wrote)
        except stripe.StripeError as exc:
            self._attempts += getattr(exc, "attempts", 1)
            code = exc.code or type(exc).__name__
            return Outcome(cid, "failed", self._attempts, f"{code}: {exc.user_message or exc}"[:1000])
        except (ValueError, TypeError, KeyError) as exc:  # a payload the builders refuse
            return Outcome(cid, "failed", self._attempts, f"invalid correction: {exc}"[:1000])

    def _send(self, req: sr.StripeRequest, idem: str | None = None) -> dict[str, Any]:
        try:
            out, n = self.s.send(req, idem)
        except stripe.StripeError as exc:
            self._attempts += getattr(exc, "attempts", 1) - 1  # the last one is counted by the caller
            raise
        self._attempts += n
        return out

    def _write(self, req: sr.StripeRequest, idem: str) -> dict[str, Any]:
        if self.may_write is not None and not self.may_write():
            raise Fenced("not sent: this push's claim heartbeat is failing (another push may take the "
                         "correction over); the next push retries it")
        self._wrote = True
        return self._send(req, idem)

    def _retrieve(self, req: sr.StripeRequest) -> dict[str, Any] | None:
        try:
            return self._send(req)
        except stripe.StripeError as exc:
            if _missing(exc):
                self._attempts += 1
                return None
            raise

    def _verified_update(self, row: dict[str, Any], entity: str, current: dict[str, Any] | None,
                         payload: dict[str, Any], observed: Any, request: Callable[[], sr.StripeRequest],
                         before_write: Callable[[dict[str, Any]], None] | None = None) -> tuple[str, str | None]:
        """An update (or archive) of one Stripe object, verified against ``current`` (the object as
        Stripe holds it now) before anything is sent: already holding ``payload`` -> applied (a rerun
        sends nothing); no longer holding what detect observed -> Stale (someone changed it since);
        else ``before_write`` (given the object) and the write of ``request()`` (built only here, so a
        payload the builder refuses fails only a correction that would really be sent)."""
        sid = row["stripe_id"]
        if current is None:
            raise Stale(f"{entity} {sid} no longer exists")
        if _holds(current, payload):
            return "applied", sid
        if not _holds(current, _observed_part(observed, payload)):
            raise Stale(f"{entity} {sid} changed in Stripe since detection")
        if self.dry_run:
            return "would_apply", sid
        if before_write is not None:
            before_write(current)
        self._write(request(), row["idempotency_key"])
        return "applied", sid

    # -- products ---------------------------------------------------------------------------------

    def _create_product(self, row: dict[str, Any], payload: dict[str, Any], _obs: Any) -> tuple[str, str | None]:
        pid = payload["id"]
        current = self._retrieve(sr.retrieve_product(pid))
        if current is not None:
            return self._ours(current, row), pid
        if self.dry_run:
            return "would_apply", pid
        req = sr.create_product(payload["name"], product_id=pid, description=payload.get("description"),
                                metadata=payload.get("metadata"))
        try:
            self._write(req, row["idempotency_key"])
        except stripe.InvalidRequestError as exc:
            if exc.code != "resource_already_exists":
                raise
            self._attempts += 1
            current = self._retrieve(sr.retrieve_product(pid))
            if current is None:
                raise
            self._wrote = False  # it was there before this push's create: already applied
            return self._ours(current, row), pid
        return "applied", pid

    @staticmethod
    def _ours(current: dict[str, Any], row: dict[str, Any]) -> str:
        internal_id = (current.get("metadata") or {}).get("internal_id")
        if internal_id in (None, row["key"]) or current.get("id") == row["key"]:
            return "applied"
        raise Stale(f"product id {current.get('id')} already exists for internal_id {internal_id!r}")

    def _update_product(self, row: dict[str, Any], payload: dict[str, Any], observed: Any) -> tuple[str, str | None]:
        sid = row["stripe_id"]
        current = self.prefetched or self._retrieve(sr.retrieve_product(sid))
        return self._verified_update(row, "product", current, payload, observed,
                                     lambda: sr.update_product(sid, **payload))

    _archive_product = _update_product

    # -- prices -----------------------------------------------------------------------------------

    def _holder(self, lookup_key: str) -> dict[str, Any] | None:
        """The active price holding ``lookup_key``, if any."""
        page = self._send(sr.list_prices(lookup_keys=[lookup_key], limit=1))
        data = page.get("data") or []
        return data[0] if data else None

    def _create_price(self, row: dict[str, Any], payload: dict[str, Any], _obs: Any) -> tuple[str, str | None]:
        lookup_key = payload.get("lookup_key")
        if lookup_key:
            holder = self._holder(lookup_key)
            if holder is not None:
                if _price_matches(holder, payload):
                    return "applied", holder["id"]
                raise Stale(f"lookup_key {lookup_key!r} is already held by {holder['id']} with other attributes")
        if self.dry_run:
            return "would_apply", None
        out = self._write(_create_price_request(payload), row["idempotency_key"])
        return "applied", out.get("id")

    def _update_price(self, row: dict[str, Any], payload: dict[str, Any], observed: Any) -> tuple[str, str | None]:
        sid = row["stripe_id"]

        def release_default(current: dict[str, Any]) -> None:
            if payload.get("active") is False and current.get("active"):
                self._release_default(current, row["idempotency_key"])

        return self._verified_update(row, "price", self._retrieve(sr.retrieve_price(sid)), payload, observed,
                                     lambda: sr.update_price(sid, **payload), before_write=release_default)

    _archive_price = _update_price

    def _release_default(self, price: dict[str, Any], idem: str, successor: str | None = None) -> None:
        """Stripe refuses to archive the default price of a product ("This price cannot be archived
        because it is the default price of its product"): point the product at ``successor`` (a price of
        the same product) or unset its default_price first. Read live, so a rerun does nothing twice."""
        product_id = _object_id(price.get("product"))
        if not product_id:
            return
        product = self._retrieve(sr.retrieve_product(product_id))
        if product is None or _object_id(product.get("default_price")) != price["id"]:
            return
        self._write(sr.update_product(product_id, default_price=successor or ""), idem + "-default")

    def _replace_price(self, row: dict[str, Any], payload: dict[str, Any], observed: Any) -> tuple[str, str | None]:
        """Create the new price (taking the lookup key), move or unset default_price, archive the old one.
        Every step first checks whether it is already done, so a rerun never replaces twice."""
        old_id, create = payload["archive"], payload["create"]
        lookup_key = create["lookup_key"]
        idem = row["idempotency_key"]
        old = self._retrieve(sr.retrieve_price(old_id))
        if old is None:
            raise Stale(f"price {old_id} no longer exists")
        holder = self._holder(lookup_key)
        if holder is not None and holder["id"] != old_id and _price_matches(holder, create):
            new_id = holder["id"]  # created by an earlier (interrupted) push
        else:
            obs = observed or {}
            if old.get("lookup_key") != obs.get("lookup_key") or bool(old.get("active")) != bool(obs.get("active")):
                raise Stale(f"price {old_id} changed in Stripe since detection (lookup_key/active)")
            if self.dry_run:
                return "would_apply", None
            new_id = self._write(_create_price_request(create, transfer_lookup_key=True), idem + "-create")["id"]
        if self.dry_run:
            return "applied", new_id
        # The old price's product keeps a default price only when the new price stays on it; a price
        # moved to another product (price_product_mismatch) leaves its old product without a default.
        same_product = create["product"] == _object_id(old.get("product"))
        self._release_default(old, idem, new_id if same_product else None)
        if old.get("active"):
            self._write(sr.archive_price(old_id), idem + "-archive")
        return "applied", new_id


# -- the stage ------------------------------------------------------------------------------------

#: Operations whose verify read is batched: one ``GET /v1/products?ids[]=..`` per 100 corrections,
#: so a correction costs ~1.01 requests instead of 2 (the budget goes to writes).
BATCH_VERIFY_OPS = ("update_product", "archive_product")


def prefetch_products(sender: Sender, ids: list[str]) -> dict[str, dict[str, Any]]:
    """{id: product} for ``ids`` (<= 100) in one list request; {} when it fails (each correction then
    reads its own object)."""
    try:
        page, _ = sender.send(sr.list_products(ids=ids, limit=len(ids)))
    except stripe.StripeError:
        log.warning("batched verify read of %d products failed; reading them one by one", len(ids))
        return {}
    return {obj["id"]: obj for obj in page.get("data") or []}


def latest_plan(run: Any) -> dict[str, Any]:
    """The newest gold.plans row as a dict; InputError when there is none."""
    spark, cfg = run.spark, run.cfg
    if not tables.exists(spark, cfg, tables.GOLD_PLANS):
        raise InputError("no plan to push (gold.plans does not exist): run `recon plan` first")
    row = (tables.read(spark, cfg, tables.GOLD_PLANS)
           .orderBy(F.col("created_at").desc(), F.col("run_id").desc()).limit(1).first())
    if row is None:
        raise InputError("gold.plans is empty: run `recon plan` first")
    return row.asDict()


def release(run: Any, plan_row: dict[str, Any]) -> None:
    """Mark a held plan approved and its held corrections planned."""
    spark, cfg = run.spark, run.cfg
    h = plan_row["plan_hash"]
    approved = spark.createDataFrame([(h, plan_row["run_id"])], "plan_hash string, run_id string")
    tables.merge_rows(spark, cfg, tables.GOLD_PLANS, approved, ["plan_hash", "run_id"],
                      update={"status": "'approved'", "approved_at": "current_timestamp()"}, insert=False)
    held = (tables.read(spark, cfg, tables.GOLD_CORRECTIONS)
            .filter((F.col("plan_hash") == h) & (F.col("status") == "held")).select("correction_id"))
    tables.merge_rows(spark, cfg, tables.GOLD_CORRECTIONS, held, ["correction_id"],
                      update={"status": "'planned'", "updated_at": "current_timestamp()"}, insert=False)


class _StatusWriter(threading.Thread):
    """Merges outcomes into gold.corrections in chunks, off the worker threads."""

    def __init__(self, run: Any, chunk: int) -> None:
        super().__init__(name="push-status-writer", daemon=True)
        self.run_ = run
        self.chunk = chunk
        self.q: queue.Queue[Outcome | None] = queue.Queue()
        self.error: BaseException | None = None
        self.flushed = 0

    def run(self) -> None:  # noqa: D102 - Thread API
        buf: list[Outcome] = []
        while True:
            item = self.q.get()
            if item is not None:
                buf.append(item)
            if buf and (item is None or len(buf) >= self.chunk or self.q.empty() and len(buf) >= self.chunk):
                self._flush(buf)
                buf = []
            if item is None:
                return

    def _flush(self, buf: list[Outcome]) -> None:
        try:
            spark, cfg = self.run_.spark, self.run_.cfg
            rows = {o.correction_id: (o.correction_id, o.status, o.attempts, o.last_error, o.result_id) for o in buf}
            df = spark.createDataFrame(list(rows.values()), STATUS_SCHEMA)
            tables.merge_rows(spark, cfg, tables.GOLD_CORRECTIONS, df, ["correction_id"], update={
                "status": "s.status", "attempts": "coalesce(t.attempts, 0) + s.attempts",
                "last_error": "s.last_error", "result_id": "coalesce(s.result_id, t.result_id)",
                "updated_at": "current_timestamp()",
            }, insert=False)
            self.flushed += len(rows)
        except BaseException as exc:  # noqa: BLE001 - surfaced by push() after the workers stop
            log.exception("could not merge %d statuses into gold.corrections", len(buf))
            self.error = exc


class _Progress:
    """Corrections done of ``total``: told to the run's observer (the console's live line) when there
    is one, else printed to stderr every ``every`` seconds."""

    def __init__(self, total: int, stream: Any = None, every: float = 2.0, observer: Any = None) -> None:
        self.total, self.stream, self.every, self.observer = total, stream, every, observer
        self.done = 0
        self.t0 = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def tick(self, final: bool = False) -> None:
        with self._lock:
            if not final:
                self.done += 1
            if self.observer is not None:
                self.observer.progress(self.done, self.total, "corrections")
                return
            now = time.monotonic()
            if not final and now - self._last < self.every:
                return
            self._last = now
            el = max(now - self.t0, 1e-6)
            rate = self.done / el
            left = self.total - self.done
            eta = f"ETA {left / rate:.0f}s" if rate > 0 and left > 0 else ("done" if left <= 0 else "ETA unknown")
            print(f"push: {self.done}/{self.total} ({self.done / max(self.total, 1):.0%}) {rate:.1f}/s {eta}",
                  file=self.stream or sys.stderr, flush=True)


def push(run: Any, dry_run: bool = False, approve: str | None = None, force: bool = False,
         client: stripe.StripeClient | None = None) -> dict[str, Any]:
    """Push the latest plan. Raises :class:`HeldError` for a held plan without a matching approval."""
    spark, cfg = run.spark, run.cfg
    with run.stage("push") as st:
        plan_row = latest_plan(run)
        h = plan_row["plan_hash"]
        statuses = list(PENDING)
        if plan_row["status"] == "held":
            if approve is not None and approve != h:
                raise HeldError(f"--approve {approve} does not match the held plan {h}. Check the hash in "
                                f"gold.plans, then run: recon push --approve {h}")
            if approve == h or force:
                if not dry_run:
                    release(run, plan_row)
                else:
                    statuses.append("held")
            elif dry_run:
                statuses.append("held")
            else:
                reasons = "; ".join(plan_row.get("reasons") or []) or "see gold.plans"
                raise HeldError(f"plan {h} is held by the blast-radius guard ({reasons}); nothing was pushed. "
                                f"Review it, then run: recon push --approve {h} (or --force)")
        run.read_version(st, tables.GOLD_CORRECTIONS)
        corr = tables.read(spark, cfg, tables.GOLD_CORRECTIONS).filter(F.col("plan_hash") == h)
        before = _status_counts(corr)
        claims = None
        if not dry_run and any(before.get(k) for k in statuses):
            claims = Claims(spark, cfg, run.run_id)
        try:
            if claims is not None:
                claims.take(corr.filter(F.col("status").isin(statuses)), sum(before.get(k, 0) for k in statuses))
                # read again after claiming: a push that ended meanwhile merged its statuses first
                corr = tables.read(spark, cfg, tables.GOLD_CORRECTIONS).filter(F.col("plan_hash") == h)
                before = _status_counts(corr)
            summary = _send(run, corr, statuses, before, claims, dry_run, client)
        finally:
            if claims is not None:
                claims.release()
        summary = {"plan_hash": h, "dry_run": dry_run, **summary}
        st.counts.update({k: int(v) for k, v in summary.items() if isinstance(v, int) and not isinstance(v, bool)})
    return summary


def _status_counts(corr: Any) -> dict[str, int]:
    """{status: corrections} of one plan (one aggregation)."""
    return {r["status"]: int(r["n"]) for r in corr.groupBy("status").agg(F.count("*").alias("n")).collect()}


def _send(run: Any, corr: Any, statuses: list[str], before: dict[str, int], claims: Claims | None,
          dry_run: bool, client: stripe.StripeClient | None) -> dict[str, Any]:
    """Send the pending corrections of ``corr`` (only those ``claims`` holds); returns the counts."""
    from .stripe_client import build_client

    cfg = run.cfg
    deps = corr.select(F.col("correction_id").alias("dep_id"), F.col("status").alias("dep_status"))
    todo = corr.filter(F.col("status").isin(statuses))
    if claims is not None:
        todo = todo.join(claims.mine(), "correction_id", "left_semi")
    pending = (
        todo.alias("c")
        .join(deps.alias("d"), F.expr("c.depends_on = d.dep_id"), "left")
        .select("c.correction_id", "c.seq", "c.entity", "c.key", "c.stripe_id", "c.operation", "c.payload",
                "c.observed", "c.idempotency_key", "c.depends_on", "d.dep_status")
        .orderBy("seq", "correction_id")
    )
    total = sum(v for k, v in before.items() if k in statuses)
    elsewhere = claims.elsewhere if claims is not None else 0
    may_write = claims.may_write if claims is not None else None

    bucket = global_bucket(cfg.stripe.rate_limit_per_second)
    sender = Sender(client or build_client(cfg), bucket, cfg.stripe.max_attempts)
    progress = _Progress(total - elsewhere, observer=getattr(run, "observer", None))
    writer = None if dry_run else _StatusWriter(run, cfg.stripe.status_chunk_size)
    if writer:
        writer.start()
    results: dict[str, str] = {}
    counts = {"applied": 0, "found_applied": 0, "failed": 0, "stale": 0, "skipped": 0, "would_apply": 0}
    lock = threading.Lock()
    slots = threading.BoundedSemaphore(cfg.stripe.threads * 4)

    def record(outcome: Outcome) -> None:
        with lock:
            results[outcome.correction_id] = outcome.status
            counts[outcome.counter] = counts.get(outcome.counter, 0) + 1
        if writer:
            writer.q.put(outcome)
        progress.tick()

    def work(row: dict[str, Any], current: dict[str, Any] | None) -> None:
        try:  # one Applier per correction: attempts are its own
            record(Applier(sender, dry_run=dry_run, prefetched=current, may_write=may_write).apply(row))
        finally:
            slots.release()

    batch: list[dict[str, Any]] = []

    def submit(row: dict[str, Any], current: dict[str, Any] | None = None) -> None:
        slots.acquire()
        futures.append(pool.submit(work, row, current))

    def flush_batch() -> None:
        if not batch:
            return
        found = prefetch_products(sender, [r["stripe_id"] for r in batch])
        for r in batch:
            submit(r, found.get(r["stripe_id"]))
        batch.clear()

    t0 = time.monotonic()
    futures: list[Future[None]] = []
    current_seq = None
    try:
        with ThreadPoolExecutor(max_workers=cfg.stripe.threads, thread_name_prefix="push") as pool:
            for r in pending.toLocalIterator(prefetchPartitions=True):
                row = r.asDict()
                if current_seq is not None and row["seq"] != current_seq:
                    flush_batch()
                    wait(futures)  # dependency barrier: products before their prices
                    futures.clear()
                current_seq = row["seq"]
                dep = row.get("depends_on")
                if dep:
                    dep_status = results.get(dep, row.get("dep_status"))
                    if dep_status != "applied" and not (dry_run and dep_status == "would_apply"):
                        record(Outcome(row["correction_id"], "skipped", 0,
                                       f"depends on {dep} which is {dep_status}"))
                        continue
                if row["operation"] in BATCH_VERIFY_OPS and row.get("stripe_id"):
                    batch.append(row)
                    if len(batch) >= sr.MAX_PAGE:
                        flush_batch()
                else:
                    submit(row)
            flush_batch()
            wait(futures)
    finally:
        if writer:
            writer.q.put(None)
            writer.join()
    seconds = time.monotonic() - t0
    progress.tick(final=True)
    if writer and writer.error is not None:
        raise writer.error
    done = sum(counts.values())
    return {
        "total": total, **counts,
        # had landed before this push: applied in the outbox already, or found in place by the verify read
        "already_applied": int(before.get("applied", 0)) + counts["found_applied"],
        "claimed_elsewhere": elsewhere, "held": 0,
        "requests": sender.requests, "retries": sender.retries,
        "seconds": round(seconds, 3), "ops_per_s": round(done / seconds, 2) if seconds > 0 else 0.0,
        "requests_per_s": round(sender.requests / seconds, 2) if seconds > 0 else 0.0,
    }
