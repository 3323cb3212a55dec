"""The runs ledger (``gold.runs``): one row per run and stage with counts, versions read, status.

Example::

    run = Run.new(spark, cfg)
    with run.stage("land_internal") as st:
        st.counts["rows_in"] = 1000
        st.versions_read["silver.internal_products"] = 3
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Row, SparkSession, Window
from pyspark.sql import functions as F

from . import tables
from .config import Config
from .errors import HeldError

log = logging.getLogger(__name__)


#: What :func:`recent_ok` returns: stage -> its newest successful ledger rows, newest first.
Recent = dict[str, list[Row]]


def newest_first() -> tuple[Column, Column]:
    """The ledger's one meaning of "newest": the later start first, then the later run id."""
    return F.col("started_at").desc(), F.col("run_id").desc()


def recent_ok(spark: SparkSession, cfg: Config, stages: Iterable[str], n: int = 2,
              run_id: str | None = None, held_too: Iterable[str] = ()) -> Recent:
    """The newest ``n`` successful ledger rows of each stage in ``stages`` (newest first), plus any
    successful row of ``run_id`` further back, in one read of ``gold.runs``: ``{stage: [Row(run_id,
    stage, started_at, counts, versions_read, status)]}``. A stage that needs the ledger several times (plan: its source
    detect run and the guard's landings) reads it once. For the stages in ``held_too`` a ``held`` row
    counts as successful too (a held plan wrote all its corrections).

    Example: ``recent_ok(spark, cfg, ["land_internal"])["land_internal"][0].counts``
    """
    stages = list(stages)
    found: Recent = {s: [] for s in stages}
    if not tables.exists(spark, cfg, tables.GOLD_RUNS):
        return found
    rank = F.row_number().over(Window.partitionBy("stage").orderBy(*newest_first()))
    keep = F.col("_rank") <= n
    if run_id is not None:
        keep = keep | (F.col("run_id") == run_id)
    succeeded = F.col("status") == "ok"
    held_too = list(held_too)
    if held_too:
        succeeded = succeeded | ((F.col("status") == "held") & F.col("stage").isin(held_too))
    rows = (
        tables.read(spark, cfg, tables.GOLD_RUNS)
        .where(F.col("stage").isin(stages) & succeeded)
        .withColumn("_rank", rank)
        .where(keep)
        .orderBy("stage", "_rank")
        .select("run_id", "stage", "started_at", "counts", "versions_read", "status")
        .collect()  # ledger rows: at most n per stage (+ the run's own)
    )
    for row in rows:
        found[row["stage"]].append(row)
    return found


def latest_ok(spark: SparkSession, cfg: Config, stages: str | Iterable[str], columns: Iterable[str | Column],
              other_than: str | None = None, where: Column | str | None = None) -> Row | None:
    """``columns`` of the newest (:func:`newest_first`) successful ledger row of ``stages`` (one stage or
    several), of a run other than ``other_than`` when given and matching ``where`` when given; None when
    there is none (or no ledger yet). One read of ``gold.runs``, one row back.

    Example: ``latest_ok(spark, cfg, "detect", ["run_id", "counts"], other_than=run.run_id)``
    """
    if not tables.exists(spark, cfg, tables.GOLD_RUNS):
        return None
    stages = [stages] if isinstance(stages, str) else list(stages)
    rows = tables.read(spark, cfg, tables.GOLD_RUNS).where(F.col("stage").isin(stages) & (F.col("status") == "ok"))
    if other_than is not None:
        rows = rows.where(F.col("run_id") != other_than)
    if where is not None:
        rows = rows.where(where)
    return rows.orderBy(*newest_first()).select(*columns).first()  # one ledger row


def new_run_id() -> str:
    """Sortable by time (later runs compare greater), unique across concurrent starts."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-" + secrets.token_hex(3)


@dataclass
class StageRecord:
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    versions_read: dict[str, int] = field(default_factory=dict)
    message: str = ""
    status: str = "ok"
    held: list[DataFrame] = field(default_factory=list, repr=False)  # persisted until the stage ends

    def hold(self, df: DataFrame) -> DataFrame:
        """``df`` persisted (memory, spilling to disk) until the stage ends, however it ends."""
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        self.held.append(df)
        return df


@dataclass
class Run:
    spark: SparkSession
    cfg: Config
    run_id: str
    records: list[StageRecord] = field(default_factory=list)
    fresh: bool = True  # the run id was made here: no earlier attempt of this run wrote anything
    #: What one stage computed that a later stage of the same run may reuse instead of computing it
    #: again (e.g. incremental.changed_keys: detect's changed keys, asked again by plan).
    memo: dict[Any, Any] = field(default_factory=dict, repr=False)
    #: Told when a stage starts and ends (the CLI's console.Console): ``stage_started(name)``,
    #: ``stage_finished(name, counts, status, message, seconds)``, ``progress(done, total, unit)``.
    observer: Any = None

    @classmethod
    def new(cls, spark: SparkSession, cfg: Config, run_id: str | None = None) -> Run:
        return cls(spark, cfg, run_id or new_run_id(), fresh=run_id is None)

    def read_version(self, record: StageRecord, name: str) -> dict:
        """Note the current Delta version of ``name`` as read by this stage; returns the metadata its
        writer attached to that commit (:func:`tables.commit_metadata`), read from the same commit file."""
        v, metadata = tables.last_commit(self.spark, self.cfg, name)
        if v is not None:
            record.versions_read[name] = v
        return metadata

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        """Time a stage and write its ledger row, whether it succeeds, fails or is held."""
        record = StageRecord(name)
        started = dt.datetime.now(dt.timezone.utc)
        t0 = time.monotonic()
        self._tell("stage_started", name)
        try:
            yield record
        except HeldError as exc:  # what the stage said of its work (e.g. how plan was built) stays, first
            record.status = "held"
            record.message = f"{record.message}. {exc}" if record.message else str(exc)
            raise
        except Exception as exc:
            record.status = "failed"
            record.message = f"{type(exc).__name__}: {exc}"[:2000]
            raise
        finally:
            seconds = time.monotonic() - t0
            for df in record.held:
                df.unpersist()
            self._write(record, started, seconds)
            self.records.append(record)
            self._tell("stage_finished", name, dict(record.counts), record.status, record.message, seconds)

    def _tell(self, event: str, *args: Any) -> None:
        if self.observer is not None:
            try:
                getattr(self.observer, event)(*args)
            except Exception:  # the console must never break a stage
                log.debug("observer %s failed", event, exc_info=True)

    def _write(self, record: StageRecord, started: dt.datetime, seconds: float) -> None:
        row = {
            "run_id": self.run_id,
            "stage": record.name,
            "status": record.status,
            "started_at": started,
            "finished_at": started + dt.timedelta(seconds=seconds),
            "duration_s": round(seconds, 3),
            "counts": {k: int(v) for k, v in record.counts.items()},
            "versions_read": {k: int(v) for k, v in record.versions_read.items()},
            "message": record.message or None,
        }
        try:
            tables.append(self.spark, self.cfg, tables.GOLD_RUNS, tables.local_rows(self.spark, [row], tables.RUNS_SCHEMA))
        except Exception:  # the ledger must never hide the stage's own error
            log.exception("could not write the runs ledger row for %s/%s", self.run_id, record.name)
