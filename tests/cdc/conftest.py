"""The real CDC stack as a fixture: a running PostgreSQL -> Debezium -> Kafka (scripts/cdc_services.sh),
with helpers to change rows in PostgreSQL and to read Debezium's topic.

``make test-cdc`` starts the stack, sets RECON_CDC_REQUIRED=1 (a missing stack then fails instead of
skipping) and stops it afterwards. By hand: ``bash scripts/cdc_services.sh start``, then
``.venv/bin/python -m pytest -m cdc tests/cdc``, then ``bash scripts/cdc_services.sh stop``.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class CdcStack:
    env: dict[str, str]

    @property
    def servers(self) -> str:
        return self.env["RECON_CDC_KAFKA"]

    @property
    def topic(self) -> str:
        return self.env["RECON_CDC_TOPIC"]

    def sql(self, statements: str) -> str:
        """Run SQL in the captured database as its owner; returns psql's unaligned output."""
        e = self.env
        out = subprocess.run(
            ["psql", "-h", e["RECON_CDC_PG_HOST"], "-p", e["RECON_CDC_PG_PORT"], "-U", e["RECON_CDC_PG_USER"],
             "-d", e["RECON_CDC_PG_DB"], "-qtAX", "-v", "ON_ERROR_STOP=1", "-c", statements],
            env={**os.environ, "PGPASSWORD": e["RECON_CDC_PG_PASSWORD"]}, capture_output=True, text=True, check=False)
        if out.returncode:
            raise AssertionError(f"psql failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def now_ms(self) -> int:
        """The database's clock (Debezium's source.ts_ms is a commit time on it), in epoch millis."""
        return int(float(self.sql("SELECT extract(epoch FROM clock_timestamp()) * 1000")))

    def records(self, spark):
        """Every record of the topic now (a batch read: key, value, topic, partition, offset, timestamp)."""
        return (spark.read.format("kafka").option("kafka.bootstrap.servers", self.servers)
                .option("subscribe", self.topic).option("startingOffsets", "earliest")
                .option("endingOffsets", "latest").load())

    def wait_for_records(self, spark, count: int, timeout: float = 90.0) -> int:
        """Wait until the topic holds at least ``count`` records (Debezium publishes asynchronously)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            seen = self.records(spark).count()
            if seen >= count:
                return seen
            time.sleep(1.0)
        raise AssertionError(f"the topic {self.topic} holds {seen} records after {timeout} s, expected {count}")


def _read_env() -> dict[str, str] | None:
    state = Path(os.environ.get("RECON_CDC_DIR", "/tmp/recon-cdc")) / "env"
    if not state.is_file():
        return None
    return dict(line.split("=", 1) for line in state.read_text().splitlines() if "=" in line)


@pytest.fixture(scope="session")
def cdc_stack() -> CdcStack:
    env = _read_env()
    if env is None:
        msg = "the CDC stack is not running: bash scripts/cdc_services.sh start (or make test-cdc)"
        if os.environ.get("RECON_CDC_REQUIRED") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return CdcStack(env)
