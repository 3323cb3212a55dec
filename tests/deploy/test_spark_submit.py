"""spark-submit on a real standalone cluster (master + one worker from the pip package), not local mode.

The packaged code ships as ``dist/stripe_recon.zip`` (``--py-files``), the jars through ``--packages``
(Delta + PostgreSQL, Ivy cache .cache/ivy); the driver runs in a folder outside the checkout, so the
configuration comes from inside the zip. The whole ``recon run`` (land, validate, detect, plan, push)
runs against the local Stripe emulator, and its Delta outputs are checked against the generator's
independent ground truth (truth.jsonl).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RUN_ID = "20260101T000000000Z-cluster"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _master_state(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as resp:
        return json.load(resp)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_GATEWAY", "RECON_", "SPARK_HOME"))}
    env.update(SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable, GX_ANALYTICS_ENABLED="false")
    return env


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """A master and one worker (1 core, 2g) on 127.0.0.1; both stopped afterwards, whatever happens."""
    work = tmp_path_factory.mktemp("cluster")
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    url = f"spark://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for name, args in [
            ("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                        "--webui-port", str(ui)]),
            ("worker", ["org.apache.spark.deploy.worker.Worker", url, "--cores", "1", "--memory", "2g",
                        "--webui-port", str(worker_ui), "--work-dir", str(work / "work")]),
        ]:
            log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - closed in finally
            logs.append(log)
            procs.append(subprocess.Popen([str(BIN / "spark-class"), *args], stdout=log, stderr=subprocess.STDOUT,
                                          env=_env(), cwd=work))
            if name == "master":
                _wait(lambda: _master_state(ui)["status"] == "ALIVE", 180, procs, work)
        _wait(lambda: _master_state(ui)["aliveworkers"] >= 1, 180, procs, work)
        yield {"url": url, "ui": ui, "work": work}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs:
            log.close()


def _wait(check, seconds: float, procs: list[subprocess.Popen], work: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"{p.args[1]} exited with {p.returncode}: see {work}/*.log")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"standalone cluster not ready after {seconds}s: see {work}/*.log")


def _packages() -> str:
    import pyspark

    scala = "2.13" if int(pyspark.__version__.split(".")[0]) >= 4 else "2.12"
    return f"io.delta:delta-spark_{scala}:{version('delta-spark')},org.postgresql:postgresql:42.7.4"


@pytest.mark.slow
@pytest.mark.cluster
def test_recon_run_on_a_standalone_cluster(standalone_cluster, spark, tmp_path):
    from stripe_recon import tables
    from stripe_recon.config import load_config
    from stripe_recon.emulator.server import EmulatorServer
    from stripe_recon.generate import generate

    dist = tmp_path / "dist"
    subprocess.run(["make", "-s", "dist", f"DIST={dist}"], cwd=REPO, check=True, capture_output=True, timeout=300)
    gen, root = tmp_path / "gen", tmp_path / "data"
    generate(spark, str(gen), products=120, seed=11, rate=0.02)  # input files only; the job runs on the cluster

    driver_dir = tmp_path / "driver"  # not the checkout: conf must come from the zip
    driver_dir.mkdir()
    with EmulatorServer(port=0, seed_from=str(gen / "stripe")) as emu:
        cmd = [
            str(BIN / "spark-submit"), "--master", standalone_cluster["url"], "--deploy-mode", "client",
            "--py-files", str(dist / "stripe_recon.zip"),
            "--packages", _packages(),
            "--conf", f"spark.jars.ivy={REPO / '.cache' / 'ivy'}",
            "--driver-memory", "1g", "--executor-memory", "1g",
            # small-data sizing for a 1-core worker; a real cluster keeps its own
            "--conf", "spark.sql.shuffle.partitions=2", "--conf", "spark.default.parallelism=2",
            "--conf", "spark.databricks.delta.snapshotPartitions=2", "--conf", "spark.ui.enabled=false",
            str(dist / "recon_job.py"), "run", "--config", "local.yaml", "--run-id", RUN_ID,
            "--set", f"storage.root={root}",
            "--set", f"sources.internal.products={gen}/internal/products.parquet",
            "--set", f"sources.internal.prices={gen}/internal/prices.parquet",
            "--set", "sources.stripe.mode=files", "--set", f"sources.stripe.path={gen}/stripe",
            "--set", f"stripe.api_base={emu.url}",
            "--set", "guard.max_change_ratio=1", "--set", "guard.max_archive_ratio=1",
        ]
        env = {**_env(), "STRIPE_API_KEY": "sk_test_cluster"}
        done = subprocess.run(cmd, cwd=driver_dir, env=env, capture_output=True, text=True, timeout=1200)
    (tmp_path / "submit.log").write_text(done.stdout + "\n" + done.stderr)
    assert done.returncode == 0, done.stderr[-4000:]

    # It ran on the cluster: the master lists the finished application, and it had an executor there.
    apps = _master_state(standalone_cluster["ui"])["completedapps"]
    assert [(a["name"], a["state"]) for a in apps] == [("stripe-recon", "FINISHED")]
    assert "Granted executor ID" in done.stderr

    cfg = load_config(REPO / "conf" / "local.yaml", [f"storage.root={root}"], environ={})
    runs = tables.read(spark, cfg, tables.GOLD_RUNS).filter(f"run_id = '{RUN_ID}'")
    assert sorted((r.stage, r.status) for r in runs.collect()) == sorted(
        (s, "ok") for s in ["land_internal", "land_stripe", "validate_inputs", "detect", "plan", "validate_plan", "push"]
    )
    found = {
        (r.entity, r.key, r.kind, r.attribute)
        for r in tables.read(spark, cfg, tables.GOLD_DISCREPANCIES).filter(f"run_id = '{RUN_ID}'").collect()
    }
    truth = {
        (t["entity"], t["key"], t["kind"], t.get("attribute"))
        for t in (json.loads(line) for f in sorted((gen / "truth.jsonl").glob("part-*")) for line in f.open())
    }
    assert truth and found == truth
    statuses = {r.status for r in tables.read(spark, cfg, tables.GOLD_CORRECTIONS).select("status").collect()}
    assert "applied" in statuses and not statuses & {"planned", "failed"}
