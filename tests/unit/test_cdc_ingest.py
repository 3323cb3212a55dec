"""CDC events from JSON-lines files into bronze.internal_cdc_events: every event keeps its file:line,
blank lines are no events, .gz is read, and landing the same run again replaces its rows."""

from __future__ import annotations

import gzip
import json

import pytest

from stripe_recon import tables
from stripe_recon.errors import InputError
from stripe_recon.land.cdc_events import decode_events
from stripe_recon.land.cdc_ingest import (
    checkpoint_path,
    ingest_files,
    ingest_kafka,
    read_events,
    read_pending_events,
)
from stripe_recon.ledger import Run


def _event(op: str, pid: str, lsn: int, name: str | None = None) -> str:
    row = {"product_id": pid, "name": name}
    return json.dumps({"op": op, "before": row if op == "d" else None, "after": None if op == "d" else row,
                       "source": {"table": "products", "lsn": lsn, "ts_ms": 1704103200000 + lsn}})


def test_files_to_bronze_with_file_and_line(spark, cfg, tmp_path):
    folder = tmp_path / "cdc"
    (folder / "day2").mkdir(parents=True)
    (folder / "a.jsonl").write_text(_event("c", "p1", 1, "A") + "\n\n" + _event("u", "p1", 2, "A2") + "\n")
    with gzip.open(folder / "day2" / "b.jsonl.gz", "wt") as fh:
        fh.write(_event("d", "p1", 3) + "\r\nnot json\n")
    run = Run.new(spark, cfg, "run-f1")
    assert ingest_files(run, str(folder)) == {"events": 4}

    got = sorted((r["file"].rsplit("/", 2)[-1], r["line"], r["_source"], r["_source_file"].rsplit("/", 1)[-1],
                  r["value"][:12]) for r in read_events(run).collect())
    assert got == [
        ("a.jsonl", 1, "internal:cdc_file", "a.jsonl:1", '{"op": "c", '),
        ("a.jsonl", 3, "internal:cdc_file", "a.jsonl:3", '{"op": "u", '),
        ("b.jsonl.gz", 1, "internal:cdc_file", "b.jsonl.gz:1", '{"op": "d", '),
        ("b.jsonl.gz", 2, "internal:cdc_file", "b.jsonl.gz:2", "not json"),
    ]
    assert read_events(run).columns == tables.BRONZE_CDC_EVENTS_SCHEMA.fieldNames()

    # the same run landed again replaces its rows; another run's rows stay
    assert ingest_files(run, str(folder / "a.jsonl")) == {"events": 2}
    ingest_files(Run.new(spark, cfg, "run-f2"), str(folder / "day2"))
    assert tables.read(spark, cfg, tables.BRONZE_INTERNAL_CDC_EVENTS).count() == 4

    changes = decode_events(read_events(Run.new(spark, cfg, "run-f2")), cfg.sources.internal.cdc.tables)
    changes.flagged.cache()
    assert [(r["product_id"], r["_op"], r["deleted_at"]) for r in changes.changes("products").collect()] == [
        ("p1", "delete", "2024-01-01T10:00:00.003000Z")]
    assert [(r["source_file"].rsplit("/", 1)[-1], r["reasons"]) for r in changes.quarantine_rows("run-f2").collect()] \
        == [("b.jsonl.gz:2", ["malformed_json"])]


def test_missing_path_and_missing_kafka_settings_are_input_errors(spark, cfg, tmp_path):
    run = Run.new(spark, cfg)
    with pytest.raises(InputError, match="does not exist"):
        ingest_files(run, str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="needs servers and a topic"):
        ingest_kafka(run)
    assert checkpoint_path(cfg, "recon.catalog,other") == f"{cfg.storage.root}/checkpoints/internal_cdc/recon.catalog_other"


def test_pending_events_are_those_after_the_last_applied_run(spark, cfg, tmp_path):
    (tmp_path / "e.jsonl").write_text(_event("c", "p1", 1, "A") + "\n")
    r1, r2, r3 = (Run.new(spark, cfg, f"20260101T00000{i}000Z-abc") for i in (1, 2, 3))
    for r in (r1, r2, r3):
        ingest_files(r, str(tmp_path / "e.jsonl"))
    assert read_pending_events(r3).count() == 3          # nothing applied yet
    with r1.stage("land_internal"):
        pass                                              # r1 applied its events (ok)
    try:
        with r2.stage("land_internal"):
            raise RuntimeError("failed after ingesting")  # r2's events stay pending
    except RuntimeError:
        pass
    assert sorted(r["_run_id"] for r in read_pending_events(r3).collect()) == [r2.run_id, r3.run_id]
