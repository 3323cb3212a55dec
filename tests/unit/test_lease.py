"""The storage root's writer lease: a second writer exits 1 naming the holder; stale and dead holders
are taken over; `recon lease show|break`; readers never take it; one of many concurrent takers wins.

Real Delta tables and the real CLI (``cli.main`` in this process, sharing the session); a holder
"elsewhere" is a lease row written by hand, as another host's process would have left it."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stripe_recon import lease, tables
from stripe_recon.cli import main
from stripe_recon.ledger import Run

CONF = Path(__file__).resolve().parents[2] / "conf" / "local.yaml"
UTC = dt.timezone.utc


def recon(root, *args: str) -> int:
    return main([*args, "--config", str(CONF), "--set", f"storage.root={root}"])


def write_holder(spark, cfg, token="tok-other", run_id="R-OTHER", host="other-host", pid=4242,
                 started=None, heartbeat=None) -> None:
    """A lease row as another process left it (``heartbeat`` defaults to now)."""
    now = dt.datetime.now(UTC)
    row = (token, run_id, "push", host, pid, started or now, heartbeat or now)
    tables.overwrite(spark, cfg, tables.CONTROL_LEASE, spark.createDataFrame([row], tables.LEASE_SCHEMA))


def small_internal(tmp_path: Path) -> list[str]:
    (tmp_path / "in").mkdir(exist_ok=True)
    products, prices = tmp_path / "in" / "products.csv", tmp_path / "in" / "prices.csv"
    products.write_text("product_id,name,active\nP1,Alpha,true\nP2,Beta,true\n")
    prices.write_text("price_id,product_id,currency,amount\nPR1,P1,usd,9.99\n")
    return ["--products", str(products), "--prices", str(prices), "--format", "csv"]


def test_second_writer_exits_1_with_one_line_naming_the_holder(spark, cfg, tmp_path, capsys):
    root = cfg.storage.root
    with Run.new(spark, cfg).stage("detect") as st:  # something for the reader below
        st.counts["discrepancies"] = 0
    held = lease.take(spark, cfg, "R-HOLDER", "push")
    try:
        assert recon(root, "land", "internal", *small_internal(tmp_path)) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        line = err[0]
        assert line.startswith(f"recon: storage root {root} is in use by run R-HOLDER (recon push, host "
                               f"{lease.HOST}, pid {os.getpid()}) since 20")
        for part in ("last heartbeat 20", "`recon lease show`", "lease.timeout_seconds (120s) is stale",
                     "`recon lease break` frees the root now"):
            assert part in line, part
        # the refused writer wrote nothing: no ledger row of its own, no silver table
        stages = [r.stage for r in tables.read(spark, cfg, tables.GOLD_RUNS).collect()]
        assert stages == ["detect"]
        assert not tables.exists(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS)

        # readers never wait: the lease holder is shown, and the ledger can be read
        assert recon(root, "lease", "show") == 0
        shown = json.loads(capsys.readouterr().out)
        assert (shown["holder"]["run_id"], shown["holder"]["command"], shown["state"]) == ("R-HOLDER", "push", "live")
    finally:
        held.heartbeat.stop()  # a holder that stops beating (its lease is broken below)

    assert recon(root, "lease", "break") == 0
    assert json.loads(capsys.readouterr().out)["broken"]["run_id"] == "R-HOLDER"
    assert recon(root, "land", "internal", *small_internal(tmp_path), "--run-id", "R-NEXT") == 0
    assert lease.read_holder(spark, cfg) is None  # released when the command ended
    runs = {(r.run_id, r.stage, r.status) for r in tables.read(spark, cfg, tables.GOLD_RUNS).collect()}
    assert ("R-NEXT", "land_internal", "ok") in runs


def test_stale_and_dead_holders_are_taken_over_live_ones_are_not(spark, cfg, caplog):
    old = dt.datetime.now(UTC) - dt.timedelta(seconds=121)
    write_holder(spark, cfg, heartbeat=old, started=old)  # another host, silent for 121 s > 120 s
    with lease.hold(spark, cfg, "R-A", "detect"):
        assert lease.read_holder(spark, cfg).run_id == "R-A"
    assert "taking over the stale lease of run R-OTHER" in caplog.text

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_holder(spark, cfg, host=lease.HOST, pid=gone.pid)  # this host, fresh heartbeat, process gone
    with lease.hold(spark, cfg, "R-B", "plan"):
        pass
    assert f"taking over the dead lease of run R-OTHER (recon push, host {lease.HOST}, pid {gone.pid})" in caplog.text

    write_holder(spark, cfg, heartbeat=dt.datetime.now(UTC) - dt.timedelta(seconds=60))  # silent 60 s: live
    with pytest.raises(lease.LeaseHeldError, match="in use by run R-OTHER .* host other-host, pid 4242"):
        lease.take(spark, cfg, "R-C", "plan")
    assert lease.read_holder(spark, cfg).token == "tok-other"


def test_heartbeat_file_keeps_the_lease_live(spark, make_cfg):
    cfg = make_cfg("lease.heartbeat_seconds=0.3", "lease.timeout_seconds=1.2")
    held = lease.take(spark, cfg, "R-HB", "push")
    try:
        time.sleep(2.0)  # longer than the timeout: only the heartbeat keeps it live
        holder = lease.read_holder(spark, cfg)
        assert holder.state(cfg.lease.timeout_seconds) == "live" and holder.age_seconds() < 1.2
        with pytest.raises(lease.LeaseHeldError):
            lease.take(spark, cfg, "R-LATE", "plan")
    finally:
        held.release()
    assert lease.last_beat_ms(spark, cfg, held.token) is None  # the heartbeat file is gone
    assert lease.read_holder(spark, cfg) is None


def test_exactly_one_of_concurrent_takers_wins(spark, cfg):
    lease.ensure_table(spark, cfg, tables.CONTROL_LEASE, [(None,) * len(tables.LEASE_SCHEMA)], tables.LEASE_SCHEMA)
    barrier = threading.Barrier(3)
    won: list[str] = []
    refused: list[str] = []

    def taker(name: str) -> None:
        barrier.wait()
        try:
            won.append(lease.take(spark, cfg, name, "run").run_id)
        except lease.LeaseHeldError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=taker, args=(f"R-{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 2
    assert all(f"in use by run {won[0]} (recon run" in msg for msg in refused)
    assert lease.read_holder(spark, cfg).run_id == won[0]


def test_a_relative_storage_root_takes_and_releases_the_lease(spark, tmp_path):
    """`make run` uses storage.root=data: the conditional write names the table by its absolute path
    (SQL resolves no relative path table), and the lease is taken, seen and given back."""
    from stripe_recon.config import load_config

    jvm_cwd = spark.sparkContext._jvm.java.lang.System.getProperty("user.dir")  # what Hadoop resolves against
    root = os.path.relpath(tmp_path / "data", jvm_cwd)
    assert not os.path.isabs(root)
    rel = load_config(CONF, [f"storage.root={root}"], environ={})
    held = lease.take(spark, rel, "R-REL", "run")
    try:
        assert lease.read_holder(spark, rel).run_id == "R-REL"
    finally:
        held.release()
    assert lease.read_holder(spark, rel) is None
    assert (tmp_path / "data" / "tables" / "control" / "lease" / "_delta_log").is_dir()
