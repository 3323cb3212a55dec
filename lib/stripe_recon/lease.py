"""One writer per storage root: the lease every writing command holds (``control.lease``).

Why a Delta table: it is the one store every target already has with an atomic conditional
commit (local disk, HDFS, DBFS / Unity Catalog volumes, S3 with Delta's log store). Taking the
lease is a compare-and-swap on its one row: read the row, decide, then ``UPDATE ... WHERE token <=>
<the token read>``. The UPDATE reads the row's file and rewrites it, so two takers that read the
same row cannot both commit: Delta's optimistic concurrency fails the second commit with a
concurrent-modification exception (:func:`is_conflict`; which one is pinned by
tests/unit/test_lease.py), and the retried UPDATE finds the row taken. Exactly one taker wins.

Liveness: the row records the holder (run id, command, host, pid, started, first heartbeat); a
daemon thread then rewrites ``{storage.root}/control/heartbeats/<token>`` every
``lease.heartbeat_seconds`` through Hadoop's FileSystem from the driver (no Spark job, so a
heartbeat never queues behind a long stage). The file's modification time is the holder's last sign
of life. A lease is taken over when it is free, *stale* (last heartbeat older than
``lease.timeout_seconds``) or *dead* (its holder ran on this host and its pid is gone, e.g. after a
SIGKILL); ``recon lease break`` frees it whatever its state. Readers (``recon report``) never take it.

On S3 outside Databricks, Delta's put-if-absent commit needs the DynamoDB log store
(``spark.delta.logStore.s3a.impl=io.delta.storage.S3DynamoDBLogStore``) for writers on more than one
driver; that holds for the lease as for every Delta table.

Example::

    with hold(spark, cfg, run_id="20260101T...", command="push"):
        push(run)            # a second writer on this root now exits 1 naming this run
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from . import tables
from .config import Config
from .errors import ReconError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Simple names of Delta's commit-conflict exceptions (Python classes when delta.exceptions converted
#: the Java one, else only the text of a Py4JJavaError names them).
CONFLICTS = (
    "ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
    "ConcurrentWriteException", "ConcurrentTransactionException", "MetadataChangedException",
    "ProtocolChangedException", "DeltaConcurrentModificationException",
)
MAX_CONFLICT_RETRIES = 20


class LeaseHeldError(ReconError):
    """Another live writer holds the storage root (exit 1); the message names it and the way out."""


def conflict_name(exc: BaseException) -> str | None:
    """The Delta conflict ``exc`` is (e.g. ``ConcurrentAppendException``), None if it is none."""
    text = f"{type(exc).__name__} {str(exc)[:2000]}"
    return next((name for name in CONFLICTS if name in text), None)


def is_conflict(exc: BaseException) -> bool:
    """True for a Delta commit that lost against a concurrent commit (retry it)."""
    return conflict_name(exc) is not None


def retry_conflicts(fn: Callable[[], T], what: str) -> T:
    """Run ``fn`` (one Delta commit), again after a short jittered pause while it loses to a
    concurrent commit; the last conflict is raised after :data:`MAX_CONFLICT_RETRIES`."""
    for attempt in range(1, MAX_CONFLICT_RETRIES + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_conflict(exc) or attempt == MAX_CONFLICT_RETRIES:
                raise
            log.debug("%s lost a Delta commit race (%s); retrying", what, conflict_name(exc))
            time.sleep(random.uniform(0.05, 0.3) * min(attempt, 5))
    raise AssertionError("unreachable")  # pragma: no cover


# -- liveness: heartbeat files and the holder's state ----------------------------------------------

def heartbeat_path(cfg: Config, token: str) -> str:
    """Where the holder of ``token`` (a lease or a push's claims) shows it is alive."""
    return f"{cfg.storage.root.rstrip('/')}/control/heartbeats/{token}"


def _fs(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def beat(spark: SparkSession, cfg: Config, token: str) -> None:
    """Rewrite the heartbeat file of ``token`` (its modification time is the heartbeat)."""
    fs, hpath = _fs(spark, heartbeat_path(cfg, token))
    out = fs.create(hpath, True)
    try:
        out.write(bytearray(f"{_now_ms()}\n".encode()))
    finally:
        out.close()


def last_beat_ms(spark: SparkSession, cfg: Config, token: str) -> int | None:
    """Epoch milliseconds of the last heartbeat of ``token``; None when it never beat (or ended)."""
    fs, hpath = _fs(spark, heartbeat_path(cfg, token))
    try:
        return int(fs.getFileStatus(hpath).getModificationTime())
    except Exception as exc:  # FileNotFoundException arrives as a Py4JJavaError
        if "FileNotFound" in str(exc) or "No such file" in str(exc):
            return None
        raise


def drop_beat(spark: SparkSession, cfg: Config, token: str) -> None:
    fs, hpath = _fs(spark, heartbeat_path(cfg, token))
    try:
        fs.delete(hpath, False)
    except Exception:  # noqa: BLE001 - a leftover file only looks like an old, stale heartbeat
        log.debug("could not delete heartbeat %s", hpath, exc_info=True)


def _now_ms() -> int:
    return int(time.time() * 1000)


def pid_gone(pid: int | None) -> bool:
    """True when no process ``pid`` runs on this host (a zombie counts as gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


HOST = socket.gethostname()


@dataclass(frozen=True)
class Holder:
    """Who holds a lease (or a set of claims), and its last sign of life."""

    token: str
    run_id: str | None
    command: str | None
    host: str | None
    pid: int | None
    started_ms: int | None
    heartbeat_ms: int  # the later of the row's heartbeat and the heartbeat file

    def state(self, timeout_seconds: float, now_ms: int | None = None) -> str:
        """``live``, ``stale`` (no heartbeat for ``timeout_seconds``) or ``dead`` (its process, on this
        host, is gone)."""
        if self.host == HOST and pid_gone(self.pid):
            return "dead"
        if (now_ms or _now_ms()) - self.heartbeat_ms > timeout_seconds * 1000:
            return "stale"
        return "live"

    def age_seconds(self, now_ms: int | None = None) -> float:
        return max(0.0, ((now_ms or _now_ms()) - self.heartbeat_ms) / 1000)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "command": self.command, "host": self.host, "pid": self.pid,
                "since": _iso(self.started_ms), "last_heartbeat": _iso(self.heartbeat_ms),
                "heartbeat_age_s": round(self.age_seconds(), 1)}


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_heartbeat(spark: SparkSession, cfg: Config, token: str, row_ms: int | None) -> int:
    """The later of a row's recorded time and the token's heartbeat file."""
    filed = last_beat_ms(spark, cfg, token)
    return max(v for v in (row_ms, filed, 0) if v is not None)


class Heartbeat(threading.Thread):
    """Beats for ``token`` every ``lease.heartbeat_seconds`` until :meth:`stop`; remembers when the
    last beat succeeded, so its owner can stop writing once others may consider it stale."""

    def __init__(self, spark: SparkSession, cfg: Config, token: str) -> None:
        super().__init__(name=f"heartbeat-{token[:8]}", daemon=True)
        self.spark, self.cfg, self.token = spark, cfg, token
        self._stop_event = threading.Event()
        self.last_ok = time.monotonic()

    def run(self) -> None:  # noqa: D102 - Thread API
        wait = 0.0  # the first beat at once: the file shows the holder from the start
        while not self._stop_event.wait(wait):
            wait = self.cfg.lease.heartbeat_seconds
            try:
                beat(self.spark, self.cfg, self.token)
                self.last_ok = time.monotonic()
            except Exception:  # noqa: BLE001 - keep trying; fresh() tells the owner
                log.warning("heartbeat %s failed", heartbeat_path(self.cfg, self.token), exc_info=True)

    def fresh(self) -> bool:
        """False once no beat succeeded for half the timeout: others may soon take over."""
        return time.monotonic() - self.last_ok < self.cfg.lease.timeout_seconds / 2

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=10)
        drop_beat(self.spark, self.cfg, self.token)


# -- the lease table ---------------------------------------------------------------------------

def ensure_table(spark: SparkSession, cfg: Config, name: str, rows: list[tuple], schema: Any) -> None:
    """Create a control table with ``rows`` unless it exists; a concurrent creator winning is fine.

    Two processes creating it at once: the loser's commit of version 0 fails with
    ``ProtocolChangedException`` (tests/chaos shows it), and its cached Delta log may still say "no
    table" for a moment, so a conflict itself is taken as proof that the table now exists."""
    if tables.exists(spark, cfg, name):
        return
    try:
        spark.createDataFrame(rows, schema).write.format("delta").mode("errorifexists") \
            .save(tables.table_path(cfg, name))
    except Exception as exc:
        if not is_conflict(exc) and not tables.exists(spark, cfg, name):
            raise
        log.debug("%s was created by a concurrent writer (%s)", name, conflict_name(exc) or type(exc).__name__)


def read_holder(spark: SparkSession, cfg: Config) -> Holder | None:
    """The lease's holder, None when the lease is free (or was never taken)."""
    if not tables.exists(spark, cfg, tables.CONTROL_LEASE):
        return None
    row = (tables.read(spark, cfg, tables.CONTROL_LEASE)
           .where(F.col("token").isNotNull())
           .select("token", "run_id", "command", "host", "pid",
                   F.unix_millis("started_at").alias("started_ms"),
                   F.unix_millis("heartbeat_at").alias("heartbeat_ms"))
           .first())  # one control row, not row data
    if row is None:
        return None
    return Holder(row["token"], row["run_id"], row["command"], row["host"], row["pid"], row["started_ms"],
                  with_heartbeat(spark, cfg, row["token"], row["heartbeat_ms"]))


def sql_literal(value: Any) -> str:
    """A Spark SQL literal for a str / int / None (strings escaped for the default parser)."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _swap(spark: SparkSession, cfg: Config, expected: str | None, values: dict[str, str]) -> bool | None:
    """The conditional write: set ``values`` (SQL expressions) on the row whose token is still
    ``expected``. True/False: whether it changed the row (None: this Delta does not say)."""
    # SQL names a path table only by an absolute path (a relative storage.root such as `make run`'s
    # `data` would not resolve): qualified by its file system, `data/...` -> `file:/abs/data/...`.
    fs, hpath = _fs(spark, tables.table_path(cfg, tables.CONTROL_LEASE))
    path = str(fs.makeQualified(hpath).toString()).replace("`", "``")
    cond = "token IS NULL" if expected is None else f"token = {sql_literal(expected)}"
    sets = ", ".join(f"{k} = {v}" for k, v in values.items())
    result = spark.sql(f"UPDATE delta.`{path}` SET {sets} WHERE {cond}")
    row = result.first() if "num_affected_rows" in result.columns else None  # one metrics row
    return None if row is None else int(row["num_affected_rows"]) > 0


def held_message(cfg: Config, holder: Holder) -> str:
    """One line: who holds the root, since when, its last heartbeat, how to wait or break it."""
    h = holder.as_dict()
    return (
        f"storage root {cfg.storage.root} is in use by run {h['run_id']} (recon {h['command']}, host {h['host']}, "
        f"pid {h['pid']}) since {h['since']}, last heartbeat {h['last_heartbeat']} ({h['heartbeat_age_s']:.0f}s ago). "
        f"Wait for it to finish (`recon lease show` prints the holder); a lease with no heartbeat for "
        f"lease.timeout_seconds ({cfg.lease.timeout_seconds:g}s) is stale and taken over by the next writer; "
        f"if that process is gone, `recon lease break` frees the root now."
    )


@dataclass
class Lease:
    """A taken lease; :meth:`release` (or leaving :func:`hold`) gives it back."""

    spark: SparkSession
    cfg: Config
    token: str
    run_id: str
    heartbeat: Heartbeat | None = None

    def release(self) -> None:
        """Free the lease if it is still ours (a lease broken meanwhile is left to its new holder)."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
        retry_conflicts(lambda: _swap(self.spark, self.cfg, self.token, {"token": "NULL"}), "lease release")


def take(spark: SparkSession, cfg: Config, run_id: str, command: str) -> Lease:
    """Take the storage root's lease for ``run_id`` or raise :class:`LeaseHeldError` naming the holder.

    A stale or dead holder is taken over (said on stderr); a live one is never waited for.
    """
    ensure_table(spark, cfg, tables.CONTROL_LEASE, [(None,) * len(tables.LEASE_SCHEMA)], tables.LEASE_SCHEMA)
    token = uuid.uuid4().hex
    values = {
        "token": sql_literal(token), "run_id": sql_literal(run_id), "command": sql_literal(command),
        "host": sql_literal(HOST), "pid": sql_literal(os.getpid()), "started_at": "current_timestamp()",
        "heartbeat_at": "current_timestamp()",
    }
    expected: str | None = None  # optimistic: a root's lease is usually free
    for _ in range(MAX_CONFLICT_RETRIES):
        try:
            swapped = _swap(spark, cfg, expected, values)
        except Exception as exc:
            if not is_conflict(exc):
                raise
            log.debug("lease take lost a Delta commit race (%s); trying again", conflict_name(exc))
            time.sleep(random.uniform(0.05, 0.3))
            continue
        holder = None if swapped else read_holder(spark, cfg)
        if swapped or (holder is not None and holder.token == token):
            lease = Lease(spark, cfg, token, run_id, Heartbeat(spark, cfg, token))
            lease.heartbeat.start()
            return lease
        if holder is None:  # freed since our swap looked: try again
            expected = None
            continue
        state = holder.state(cfg.lease.timeout_seconds)
        if state == "live":
            raise LeaseHeldError(held_message(cfg, holder))
        why = ("its process is gone" if state == "dead" else
               f"no heartbeat for {holder.age_seconds():.0f}s > lease.timeout_seconds {cfg.lease.timeout_seconds:g}s")
        log.warning("taking over the %s lease of run %s (recon %s, host %s, pid %s): %s", state, holder.run_id,
                    holder.command, holder.host, holder.pid, why)
        expected = holder.token
    holder = read_holder(spark, cfg)
    raise LeaseHeldError(held_message(cfg, holder) if holder else
                         f"could not take the lease of {cfg.storage.root} after {MAX_CONFLICT_RETRIES} tries")


@contextlib.contextmanager
def hold(spark: SparkSession, cfg: Config, run_id: str, command: str) -> Iterator[Lease]:
    """Hold the storage root's lease for the ``with`` block (released on error or interrupt too)."""
    lease = take(spark, cfg, run_id, command)
    try:
        yield lease
    finally:
        lease.release()


def break_lease(spark: SparkSession, cfg: Config) -> Holder | None:
    """Free the lease whoever holds it; returns the holder it evicted (None: it was free). A holder
    still running goes on, but a push it runs keeps its claims (claims.py): nothing is sent twice."""
    holder = read_holder(spark, cfg)
    if holder is None:
        return None
    retry_conflicts(lambda: _swap(spark, cfg, holder.token, {"token": "NULL"}), "lease break")
    return holder
