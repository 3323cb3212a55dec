"""The Stripe round trip end to end: generated catalog -> emulator seeded with its Stripe side ->
land (internal files, Stripe through the API) -> detect -> plan -> push -> land + detect again.

Real SDK over HTTP, real Spark/Delta. Checks: no internal-owned discrepancy is left, the emulator
journal shows every correction's write applied exactly once (also with faults and after a SIGKILL
of `recon push` half-way), and a truncated internal snapshot is held with nothing pushed.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from stripe_recon import tables
from stripe_recon.detect import detect
from stripe_recon.emulator.faults import FaultConfig
from stripe_recon.emulator.server import EmulatorServer
from stripe_recon.errors import HeldError
from stripe_recon.generate import generate
from stripe_recon.land.internal import land_internal
from stripe_recon.land.stripe_api import land_stripe_api
from stripe_recon.ledger import Run
from stripe_recon.plan import plan
from stripe_recon.push import push

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
# discrepancies the job must fix (everything else is review/ignore/pull by design)
FIXABLE = "action IN ('push', 'create', 'replace', 'archive')"


@pytest.fixture(scope="module")
def catalog(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("catalog")
    generate(spark, str(out), products=120, seed=7, rate=0.05)
    return out


def _cfg(make_cfg, catalog, emu, *extra):
    return make_cfg(
        f"sources.internal.products={catalog}/internal/products.parquet",
        f"sources.internal.prices={catalog}/internal/prices.parquet",
        f"stripe.api_base={emu.url}", "stripe.rate_limit_per_second=400", "stripe.threads=8",
        "stripe.max_attempts=10", "stripe.export_windows=3", "stripe.status_chunk_size=25",
        "guard.max_change_ratio=1", "guard.max_archive_ratio=1", *extra,
    )


def _detect(spark, cfg) -> Run:
    run = Run.new(spark, cfg)
    land_internal(run)
    land_stripe_api(run)
    detect(run)
    return run


def _fixable(spark, cfg, run_id):
    return (tables.read(spark, cfg, tables.GOLD_DISCREPANCIES)
            .filter((F.col("run_id") == run_id) & F.expr(FIXABLE))
            .select("entity", "key", "kind", "attribute", "action").collect())


def _applied_writes(emu, since=0):
    return [e for e in emu.journal[since:] if e["method"] == "POST" and e["applied"]]


def _assert_exactly_once(spark, cfg, emu, since=0):
    """Every applied correction's writes hit Stripe once; no key was applied twice."""
    writes = _applied_writes(emu, since)
    per_key = collections.Counter(e["idempotency_key"] for e in writes)
    assert per_key and max(per_key.values()) == 1, [k for k, n in per_key.items() if n > 1]
    corr = tables.read(spark, cfg, tables.GOLD_CORRECTIONS).collect()
    by_key = {c.idempotency_key: c for c in corr}
    base = collections.Counter(k.rsplit("-", 1)[0] if k.endswith(("-create", "-default", "-archive")) else k
                               for k in per_key)
    assert set(base) <= set(by_key)
    creates = collections.Counter(c.operation for c in corr if c.status == "applied")
    price_creates = [e for e in writes if e["path"] == "/v1/prices"]
    product_creates = [e for e in writes if e["path"] == "/v1/products"]
    assert len(product_creates) <= creates["create_product"]
    assert len(price_creates) <= creates["create_price"] + creates["replace_price"]
    old_archives = [e for e in writes if e["idempotency_key"].endswith("-archive")]
    assert len(old_archives) <= creates["replace_price"]  # no double replacement
    return writes, creates


def _converge(spark, cfg, emu) -> dict:
    run1 = _detect(spark, cfg)
    before = _fixable(spark, cfg, run1.run_id)
    assert before, "the generated catalog should have fixable discrepancies"
    summary = plan(Run.new(spark, cfg))
    assert summary["corrections"] > 0
    return summary


def test_convergence_exactly_once(spark, make_cfg, catalog):
    with EmulatorServer(port=0, seed_from=str(catalog / "stripe")) as emu:
        cfg = _cfg(make_cfg, catalog, emu)
        os.environ["STRIPE_API_KEY"] = "sk_test_e2e"
        planned = _converge(spark, cfg, emu)
        result = push(Run.new(spark, cfg))
        assert result["failed"] == 0 and result["stale"] == 0, result
        writes, applied = _assert_exactly_once(spark, cfg, emu)
        assert sum(applied.values()) == result["applied"] == planned["corrections"] - result["skipped"]
        after = _detect(spark, cfg)
        assert _fixable(spark, cfg, after.run_id) == []


@pytest.mark.chaos  # faults / a SIGKILL: the chaos lane (`make test-chaos`), not `make test`
def test_convergence_with_faults(spark, make_cfg, catalog):
    faults = FaultConfig({"error_5xx": 0.10, "rate_limit": 0.05, "lost_response": 0.02}, seed=11)
    with EmulatorServer(port=0, seed_from=str(catalog / "stripe"), faults=faults) as emu:
        cfg = _cfg(make_cfg, catalog, emu)
        os.environ["STRIPE_API_KEY"] = "sk_test_e2e"
        _converge(spark, cfg, emu)
        # on top of the random rates, make sure writes are lost after being applied at least twice
        emu.faults.force("lost_response", times=1, method="POST", path_prefix="/v1/prices")
        emu.faults.force("lost_response", times=1, method="POST", path_prefix="/v1/products/")
        result = push(Run.new(spark, cfg))
        assert result["failed"] == 0 and result["retries"] > 0, result
        _assert_exactly_once(spark, cfg, emu)
        assert any(e["fault"] == "lost_response" for e in emu.journal)
        after = _detect(spark, cfg)
        assert _fixable(spark, cfg, after.run_id) == []


@pytest.mark.chaos  # faults / a SIGKILL: the chaos lane (`make test-chaos`), not `make test`
def test_sigkill_half_way_then_rerun(spark, make_cfg, catalog):
    with EmulatorServer(port=0, seed_from=str(catalog / "stripe")) as emu:
        cfg = _cfg(make_cfg, catalog, emu)
        os.environ["STRIPE_API_KEY"] = "sk_test_e2e"
        planned = _converge(spark, cfg, emu)
        n_target = planned["corrections"] // 2
        since = len(emu.journal)
        env = {**os.environ, "STRIPE_API_KEY": "sk_test_e2e", "GX_ANALYTICS_ENABLED": "false"}
        cmd = [sys.executable, "-m", "stripe_recon.cli", "push", "--config", str(REPO / "conf" / "local.yaml"),
               "--set", f"storage.root={cfg.storage.root}", "--set", f"stripe.api_base={emu.url}",
               "--set", "stripe.rate_limit_per_second=6", "--set", "stripe.threads=2",
               "--set", "stripe.status_chunk_size=5", "--set", f"spark.ivy_dir={REPO / '.cache' / 'ivy'}",
               "--set", "spark.driver_memory=1g"]
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 600
            while len(_applied_writes(emu, since)) < n_target and proc.poll() is None:
                assert time.monotonic() < deadline, "recon push made no progress"
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        killed_at = len(_applied_writes(emu, since))
        assert 0 < killed_at < planned["corrections"] + 10
        result = push(Run.new(spark, cfg))
        assert result["failed"] == 0, result
        _assert_exactly_once(spark, cfg, emu, since)
        after = _detect(spark, cfg)
        assert _fixable(spark, cfg, after.run_id) == []


def test_truncated_internal_input_is_held_and_nothing_pushed(spark, make_cfg, catalog, tmp_path):
    with EmulatorServer(port=0, seed_from=str(catalog / "stripe")) as emu:
        cfg = _cfg(make_cfg, catalog, emu, "guard.max_change_ratio=0.05", "guard.max_archive_ratio=0.01")
        os.environ["STRIPE_API_KEY"] = "sk_test_e2e"
        land_internal(Run.new(spark, cfg))  # the previous, complete snapshot
        cut = str(tmp_path / "products_10pct.parquet")
        spark.read.parquet(f"{catalog}/internal/products.parquet").filter("abs(hash(product_id)) % 10 = 0") \
            .write.parquet(cut)
        tcfg = cfg.with_overrides(f"sources.internal.products={cut}")
        run = Run.new(spark, tcfg)
        land_internal(run)
        land_stripe_api(run)
        detect(run)
        since = len(emu.journal)
        with pytest.raises(HeldError) as exc:
            plan(run)
        assert "max_shrink_ratio" in str(exc.value) and "recon push --approve" in str(exc.value)
        with pytest.raises(HeldError):
            push(Run.new(spark, tcfg))
        assert _applied_writes(emu, since) == []
        assert [e for e in emu.journal[since:] if e["method"] == "POST"] == []
        statuses = {r.status for r in tables.read(spark, tcfg, tables.GOLD_CORRECTIONS).collect()}
        assert statuses <= {"held"}
