"""The runs ledger writes one row per stage, with its outcome, whether the stage succeeds or fails."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from stripe_recon import tables
from stripe_recon.errors import HeldError
from stripe_recon.ledger import Run, latest_ok, new_run_id, recent_ok


def test_run_ids_sort_by_time_and_are_unique():
    ids = [new_run_id() for _ in range(50)]
    assert len(set(ids)) == 50
    assert sorted(ids, key=lambda i: i.split("-")[0]) == ids


def test_stage_rows_record_status_counts_and_versions(spark, cfg):
    run = Run.new(spark, cfg, run_id="r1")
    tables.append(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS, spark.range(1).selectExpr("'p' AS product_id"))
    with run.stage("land") as st:
        st.counts["rows_in"] = 7
        run.read_version(st, tables.SILVER_INTERNAL_PRODUCTS)
    with pytest.raises(HeldError):
        with run.stage("plan"):
            raise HeldError("too many changes")
    with pytest.raises(HeldError):
        with run.stage("plan_again") as st:
            st.message = "built on run r0"
            raise HeldError("too many changes")
    with pytest.raises(ValueError):
        with run.stage("push"):
            raise ValueError("boom")
    rows = {r.stage: r for r in tables.read(spark, cfg, tables.GOLD_RUNS).collect()}
    assert rows["land"].status == "ok"
    assert rows["land"].counts == {"rows_in": 7}
    assert rows["land"].versions_read == {tables.SILVER_INTERNAL_PRODUCTS: 0}
    assert (rows["plan"].status, rows["plan"].message) == ("held", "too many changes")
    assert (rows["plan_again"].status, rows["plan_again"].message) == ("held", "built on run r0. too many changes")
    assert (rows["push"].status, rows["push"].message) == ("failed", "ValueError: boom")
    assert {r.run_id for r in rows.values()} == {"r1"}


def test_recent_ok_reads_the_newest_ok_rows_of_each_stage_once(spark, cfg):
    assert recent_ok(spark, cfg, ["detect"]) == {"detect": []}  # no ledger yet
    for run_id in ("a", "b", "c"):
        with Run.new(spark, cfg, run_id=run_id).stage("detect") as st:
            st.counts["discrepancies"] = ord(run_id)
    with pytest.raises(ValueError):
        with Run.new(spark, cfg, run_id="d").stage("detect"):  # failed: never "newest"
            raise ValueError("boom")
    with Run.new(spark, cfg, run_id="e").stage("land_stripe"):
        pass
    recent = recent_ok(spark, cfg, ["detect", "land_stripe", "plan"])
    assert [r.run_id for r in recent["detect"]] == ["c", "b"]
    assert recent["detect"][0].counts == {"discrepancies": ord("c")}
    assert [r.run_id for r in recent["land_stripe"]] == ["e"]
    assert recent["plan"] == []
    # a run's own rows come along even when they are not among the newest n
    assert [r.run_id for r in recent_ok(spark, cfg, ["detect"], n=1, run_id="a")["detect"]] == ["c", "a"]


def test_latest_ok_is_the_newest_ok_row_of_its_stages_other_runs_and_condition(spark, cfg):
    assert latest_ok(spark, cfg, "detect", ["run_id"]) is None  # no ledger yet
    for run_id, stage, n in (("a", "detect", 1), ("b", "land_stripe", 2), ("c", "detect", None)):
        with Run.new(spark, cfg, run_id=run_id).stage(stage) as st:
            if n is not None:
                st.counts["n"] = n
    with pytest.raises(ValueError):
        with Run.new(spark, cfg, run_id="d").stage("detect"):  # failed: never the latest ok
            raise ValueError("boom")
    assert latest_ok(spark, cfg, "detect", ["run_id"]).run_id == "c"
    assert latest_ok(spark, cfg, "detect", ["run_id"], other_than="c").run_id == "a"
    assert latest_ok(spark, cfg, ("detect", "land_stripe"), ["run_id"]).run_id == "c"
    n = F.col("counts")["n"]
    assert tuple(latest_ok(spark, cfg, ("detect", "land_stripe"), ["run_id", n], where=n.isNotNull())) == ("b", 2)
    assert latest_ok(spark, cfg, "plan", ["run_id"]) is None


def test_local_rows_hold_every_value_exactly_and_refuse_a_wrong_type(spark):
    import datetime as dt

    from pyspark.sql import types as T

    at = dt.datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=dt.timezone.utc)
    rows = [
        {"run_id": "r-1", "side": "stripe", "entity": "products", "files": ["a \"b\".jsonl", "c\\d é"],
         "records": 2**40, "input_hash": [-1, 2**62], "counts": {"rows_in": 3, "landed": 0},
         "land_failed": {}, "created_at": at},
        {"run_id": "r-1", "side": "stripe", "entity": "prices", "files": [], "records": 0},  # absent = null
    ]
    got = [r.asDict() for r in tables.local_rows(spark, rows, tables.MANIFESTS_SCHEMA).collect()]
    naive_utc = at.astimezone().replace(tzinfo=None)  # Spark hands timestamps back as naive local time
    assert got[0] == {**{f: None for f in tables.MANIFESTS_SCHEMA.fieldNames()}, **rows[0], "created_at": naive_utc}
    assert got[1] == {**{f: None for f in tables.MANIFESTS_SCHEMA.fieldNames()}, **rows[1]}
    bad = T.StructType([T.StructField("n", T.LongType())])
    with pytest.raises(Exception, match="(?i)malformed|parse|FAILFAST"):
        tables.local_rows(spark, [{"n": "not a number"}], bad).collect()


def test_commit_metadata_is_read_from_the_log_as_delta_history_reports_it(spark, cfg, monkeypatch):
    """tables.last_commit / commit_at read the commit files themselves; Delta's history is the referee:
    every version (appends, an overwrite, a MERGE, a delete, a checkpoint), with and without metadata."""
    import json

    from delta.tables import DeltaTable

    name = tables.GOLD_RUNS.replace("runs", "commit_probe")
    assert tables.last_commit(spark, cfg, name) == (None, {})
    assert tables.commit_at(spark, cfg, name, 0) == {}
    rows = spark.range(3).selectExpr("CAST(id AS STRING) AS k", "id AS v")
    tables.overwrite(spark, cfg, name, rows, {"landing": {"run_id": "r0"}}, properties={"delta.checkpointInterval": "3"})
    tables.append(spark, cfg, name, rows.selectExpr("concat(k, 'x') AS k", "v"))
    tables.merge_rows(spark, cfg, name, rows.selectExpr("k", "v + 10 AS v"), ["k"])
    tables.delete_where(spark, cfg, name, "k = '0x'")
    tables.overwrite(spark, cfg, name, rows, {"n": 4, "text": "a \"quoted\" value"})
    history = {r.version: r.userMetadata for r in
               DeltaTable.forPath(spark, tables.table_path(cfg, name)).history().collect()}
    assert len(history) == 5
    assert tables.last_commit(spark, cfg, name) == (max(history), {"n": 4, "text": 'a "quoted" value'})
    for version, meta in history.items():
        assert tables.commit_at(spark, cfg, name, version) == (json.loads(meta) if meta else {})
    assert tables.commit_at(spark, cfg, name, max(history) + 1) == {}
    # a long log (more files than are walked from Python) gives the same answer through Delta's history
    monkeypatch.setattr(tables._DeltaLogFiles, "MAX_WALKED", 2)
    assert tables.last_commit(spark, cfg, name) == (max(history), {"n": 4, "text": 'a "quoted" value'})
