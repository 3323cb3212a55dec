"""Push claims (``control.push_claims``): a push sends only corrections it has claimed, so two pushes
never send the same correction at once, even when the storage root's lease was broken.

- Before sending anything, a push claims its pending corrections in ONE Delta MERGE. A correction
  is claimable when nobody claims it, or its claimer is stale or dead by the lease's rules
  (:class:`lease.Holder`: no heartbeat for ``lease.timeout_seconds``, or a process of this host that
  is gone). The MERGE reads every claim it overwrites, so of two pushes claiming at once one loses
  the Delta commit race, and its retry sees the other's claims.
- The push then re-reads the outbox and sends only what it claimed and is still pending (a push
  that finished meanwhile wrote its statuses before dropping its claims).
- While it runs its heartbeat file (``lease.heartbeat_path``) is rewritten; :meth:`Claims.may_write`
  turns false when no beat succeeded for half the timeout, and the pusher then stops writing
  (others may soon take the claims over).
- At the end, after its statuses are merged, the push deletes its claims. A killed push leaves them:
  the next push takes them over once they are stale or dead.

Example::

    with claiming(spark, cfg, run_id, pending.select("correction_id")) as claims:
        todo = pending.join(claims.mine(), "correction_id", "left_semi")
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import tables
from .config import Config
from .lease import HOST, Heartbeat, Holder, ensure_table, retry_conflicts, with_heartbeat

log = logging.getLogger(__name__)


@dataclass
class Claims:
    """The claims of one push (one token)."""

    spark: SparkSession
    cfg: Config
    run_id: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    claimed: int = 0
    elsewhere: int = 0  # pending corrections another live push holds
    holders: list[dict[str, Any]] = field(default_factory=list)
    heartbeat: Heartbeat | None = None

    def _path(self) -> str:
        return tables.table_path(self.cfg, tables.CONTROL_PUSH_CLAIMS)

    def _table(self) -> Any:
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, self._path())

    def _claimers(self) -> list[Holder]:
        """Every push holding claims (one row per token; a handful, not row data)."""
        rows = (tables.read(self.spark, self.cfg, tables.CONTROL_PUSH_CLAIMS)
                .groupBy("token").agg(F.first("run_id").alias("run_id"), F.first("host").alias("host"),
                                      F.first("pid").alias("pid"),
                                      F.max(F.unix_millis("claimed_at")).alias("claimed_ms"))
                .collect())
        return [Holder(r["token"], r["run_id"], "push", r["host"], r["pid"], r["claimed_ms"],
                       with_heartbeat(self.spark, self.cfg, r["token"], r["claimed_ms"])) for r in rows]

    def take(self, ids: DataFrame, n: int | None = None) -> None:
        """Claim ``ids`` (a frame of ``n`` distinct ``correction_id``) except those a live push holds.

        The first MERGE takes what nobody claims; only when some ids are claimed elsewhere are their
        claimers looked at, and a second MERGE takes over those of stale or dead claimers."""
        ensure_table(self.spark, self.cfg, tables.CONTROL_PUSH_CLAIMS, [], tables.PUSH_CLAIMS_SCHEMA)
        self.heartbeat = Heartbeat(self.spark, self.cfg, self.token)
        self.heartbeat.start()
        source = ids.select("correction_id").distinct()
        values = {"token": F.lit(self.token), "run_id": F.lit(self.run_id), "host": F.lit(HOST),
                  "pid": F.lit(os.getpid()).cast("int"), "claimed_at": F.current_timestamp()}
        free = [self.token]

        def merge() -> int | None:
            """The MERGE; the corrections it claimed, from its metrics (None: this Delta does not say)."""
            metrics = (self._table().alias("t").merge(source.alias("s"), "t.correction_id = s.correction_id")
                       .whenMatchedUpdate(condition=F.col("t.token").isin(free), set=values)
                       .whenNotMatchedInsert(values={"correction_id": F.col("s.correction_id"), **values})
                       .execute())
            if metrics is None or "num_inserted_rows" not in metrics.columns:
                return None
            row = metrics.first()  # one metrics row
            return int(row["num_updated_rows"]) + int(row["num_inserted_rows"])

        for _ in range(2):
            claimed = retry_conflicts(merge, "push claim")
            if claimed is None or n is None:
                self._count(source)
            else:
                self.claimed, self.elsewhere = claimed, n - claimed
            if not self.elsewhere:
                break
            gone = [h for h in self._claimers()
                    if h.token not in free and h.state(self.cfg.lease.timeout_seconds) != "live"]
            if not gone:
                break
            for h in gone:
                log.warning("taking over the claims of push run %s (host %s, pid %s): %s", h.run_id, h.host, h.pid,
                            h.state(self.cfg.lease.timeout_seconds))
            free += [h.token for h in gone]
        if self.elsewhere:
            self._holders(source)
            log.warning("%d pending corrections are claimed by another live push (%s): this push leaves them alone",
                        self.elsewhere, ", ".join(f"run {h['run_id']} on {h['host']} pid {h['pid']}"
                                                  for h in self.holders))

    def _count(self, source: DataFrame) -> None:
        claims = tables.read(self.spark, self.cfg, tables.CONTROL_PUSH_CLAIMS)
        row = (source.alias("s").join(claims.alias("c"), F.col("s.correction_id") == F.col("c.correction_id"), "left")
               .agg(F.count_if(F.col("c.token") == F.lit(self.token)).alias("mine"),
                    F.count_if(F.col("c.token") != F.lit(self.token)).alias("elsewhere"))
               .first())  # two counts
        self.claimed, self.elsewhere = int(row["mine"] or 0), int(row["elsewhere"] or 0)

    def _holders(self, source: DataFrame) -> None:
        others = (tables.read(self.spark, self.cfg, tables.CONTROL_PUSH_CLAIMS)
                  .where(F.col("token") != F.lit(self.token)).join(source, "correction_id", "left_semi")
                  .groupBy("run_id", "host", "pid").agg(F.count("*").alias("n")).collect())  # one row per claimer
        self.holders = [{"run_id": r["run_id"], "host": r["host"], "pid": r["pid"], "corrections": int(r["n"])}
                        for r in others]

    def mine(self) -> DataFrame:
        """``correction_id`` of every correction this push claims."""
        return (tables.read(self.spark, self.cfg, tables.CONTROL_PUSH_CLAIMS)
                .where(F.col("token") == F.lit(self.token)).select("correction_id"))

    def may_write(self) -> bool:
        """False once the heartbeat failed for half the timeout: stop writing, others may take over."""
        return self.heartbeat is None or self.heartbeat.fresh()

    def release(self) -> None:
        """Delete this push's claims (call it after its statuses are written) and stop the heartbeat."""
        try:
            if tables.exists(self.spark, self.cfg, tables.CONTROL_PUSH_CLAIMS):
                retry_conflicts(lambda: self._table().delete(F.col("token") == F.lit(self.token)), "claim release")
        finally:
            if self.heartbeat is not None:
                self.heartbeat.stop()


@contextlib.contextmanager
def claiming(spark: SparkSession, cfg: Config, run_id: str, ids: DataFrame) -> Iterator[Claims]:
    """Claim ``ids`` for the ``with`` block; the claims are deleted when it ends (error or not)."""
    claims = Claims(spark, cfg, run_id)
    try:
        claims.take(ids)
        yield claims
    finally:
        claims.release()
