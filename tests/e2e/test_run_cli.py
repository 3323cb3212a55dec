"""`recon run` through the CLI: one line per stage, the closing table, and --force / --approve meaning
on `run` what they mean on `push` (the guard's verdict is recorded, then the plan is pushed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from stripe_recon import tables
from stripe_recon.cli import main
from stripe_recon.config import load_config
from stripe_recon.emulator.server import EmulatorServer
from stripe_recon.generate import generate

REPO = Path(__file__).resolve().parents[2]
CONF = str(REPO / "conf" / "local.yaml")
TIME = r"\s+(\d+\.\ds|\d+m\d\ds)$"


@pytest.fixture(scope="module")
def catalog(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("catalog")
    generate(spark, str(out), products=40, seed=11, rate=0.05)
    return out


def _run(capsys, root: Path, catalog: Path, emu: EmulatorServer, run_id: str, *flags: str) -> tuple[int, str, list[str]]:
    code = main([
        "run", *flags, "--run-id", run_id, "--config", CONF, "--set", f"storage.root={root}",
        "--set", f"sources.internal.products={catalog}/internal/products.parquet",
        "--set", f"sources.internal.prices={catalog}/internal/prices.parquet",
        "--set", "sources.stripe.mode=files", "--set", f"sources.stripe.path={catalog}/stripe",
        "--set", f"stripe.api_base={emu.url}", "--set", "stripe.rate_limit_per_second=400",
        "--set", "guard.max_change_ratio=0.001",  # every plan of this catalog is held by the guard
        "--set", "validation.enabled=false",  # the gates have their own tests; this one is about the guard
        "--set", "console.plain_progress_seconds=0",  # no timed progress lines in what is compared
    ])
    cap = capsys.readouterr()
    return code, cap.out, cap.err.splitlines()


def _posts(emu: EmulatorServer) -> list[dict]:
    return [e for e in emu.journal if e["method"] == "POST" and e["applied"]]


def test_run_force_and_approve_push_a_guard_held_plan(spark, capsys, tmp_path, catalog, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_run_cli")
    root = tmp_path / "root"
    cfg = load_config(CONF, [f"storage.root={root}"], environ={})
    with EmulatorServer(port=0, seed_from=str(catalog / "stripe")) as emu:
        # A wrong --approve hash stops the run at the plan: exit 3, one line, nothing pushed.
        code, out, err = _run(capsys, root, catalog, emu, "20260301T000000000Z-aaaaa1", "--approve", "deadbeef")
        plan1 = tables.read(spark, cfg, tables.GOLD_PLANS).where("run_id = '20260301T000000000Z-aaaaa1'").first()
        assert code == 3 and plan1.status == "held" and _posts(emu) == []
        assert err == [f"recon: --approve deadbeef does not match the held plan {plan1.plan_hash}; nothing was pushed. "
                       f"Check the hash in gold.plans, then run: recon run --approve {plan1.plan_hash}"]
        held = [ln for ln in out.splitlines() if ln.startswith("held ")]
        assert [" ".join(ln.split()) for ln in held] == [
            f"held plan {plan1.plan_hash[:12]} held: {'; '.join(plan1.reasons)}; release it with: "
            f"recon push --approve {plan1.plan_hash}"]
        assert [ln for ln in out.splitlines() if ln.startswith("corrections ")][0].split()[1:] == [
            str(plan1.counts["corrections"]), "held"]

        # --force: the guard still holds (and says why), the plan is released and pushed.
        run_id = "20260301T000100000Z-aaaaa2"
        code, out, err = _run(capsys, root, catalog, emu, run_id, "--force")
        assert (code, err) == (0, [])
        applied = len(_posts(emu))
        assert applied > 0

    plan = tables.read(spark, cfg, tables.GOLD_PLANS).where(f"run_id = '{run_id}'").first()
    assert plan.status == "approved" and plan.approved_at is not None
    assert any(r.startswith("change ratio") and "max_change_ratio 0.10%" in r for r in plan.reasons)
    ledger = {r.stage: r for r in tables.read(spark, cfg, tables.GOLD_RUNS).where(f"run_id = '{run_id}'").collect()}
    assert ledger["plan"].status == "held" and "max_change_ratio" in ledger["plan"].message
    assert ledger["release_plan"].status == "ok"
    assert ledger["release_plan"].message.startswith(f"plan {plan.plan_hash} released by --force; held for: change ratio")
    corrections = tables.read(spark, cfg, tables.GOLD_CORRECTIONS).where(F.col("plan_hash") == plan.plan_hash)
    by_status = {r.status: r["count"] for r in corrections.groupBy("status").count().collect()}
    assert by_status == {"applied": plan.counts["corrections"]}
    assert ledger["push"].counts["applied"] == plan.counts["corrections"]

    # What the console printed: one line per stage, in order, each with its time; then the table.
    stage_lines = [ln for ln in out.splitlines() if re.search(TIME, ln)]
    assert [ln.split()[0] for ln in stage_lines] == ["land_internal", "land_stripe", "detect", "plan", "release_plan", "push"]
    assert re.sub(TIME, "", stage_lines[3]).startswith(f"plan              HELD: {plan.counts['corrections']} corrections planned (")
    n = plan.counts["corrections"]
    assert re.sub(TIME, "", stage_lines[5]) == f"push              {n} applied, 0 failed, 0 stale, 0 skipped of {n}; " \
        f"{ledger['push'].counts['requests']} requests"
    disc = tables.read(spark, cfg, tables.GOLD_DISCREPANCIES).where(f"run_id = '{run_id}'")
    total = disc.count()
    table = out.splitlines()[out.splitlines().index("") + 1:]
    assert table[0].split()[0] == "discrepancies" and table[0].split()[-1] == "total"
    assert [ln for ln in table if ln.startswith("total ")][0].split()[-1] == f"{total:,}"
    assert [" ".join(ln.split()) for ln in table[-2:]] == [
        f"corrections {n} applied", f"report {root}/reports/{run_id}/report.html"]
