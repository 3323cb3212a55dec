"""`make dist` builds what the clusters install, and the wheel installs into a clean virtual env.

How the clean install is checked (kept honest and fast): a new venv is created with ``python -m venv``
(no system site packages), the wheel goes in with ``pip install --no-deps``, and its third-party
imports (pydantic, PyYAML, ...) are borrowed from the project's .venv through PYTHONPATH, because
downloading great-expectations and friends again would take minutes. PYTHONPATH entries do not run
.pth files, so the project's editable install is NOT active there: the test asserts that stripe_recon
is imported from the new venv's own site-packages and that its conf/ comes from inside the wheel.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(["make", "-s", "dist", f"DIST={out}"], cwd=REPO, check=True, capture_output=True, timeout=300)
    return out


def test_dist_holds_wheel_zip_and_entry_scripts(dist):
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    version = (REPO / "lib/stripe_recon/__init__.py").read_text().split('__version__ = "')[1].split('"')[0]
    assert wheels == [f"stripe_recon-{version}-py3-none-any.whl"]
    assert sorted(p.name for p in dist.iterdir()) == sorted([*wheels, "stripe_recon.zip", "glue_job.py", "recon_job.py"])
    assert (dist / "recon_job.py").read_bytes() == (REPO / "jobs/recon_job.py").read_bytes()

    with zipfile.ZipFile(dist / wheels[0]) as whl:
        names = set(whl.namelist())
        meta = whl.read(f"stripe_recon-{version}.dist-info/METADATA").decode()
        entry_points = whl.read(f"stripe_recon-{version}.dist-info/entry_points.txt").decode()
    for conf in ("base.yaml", "local.yaml", "glue.yaml", "databricks.yaml"):
        assert f"stripe_recon/conf/{conf}" in names
        assert whl_text(dist / wheels[0], f"stripe_recon/conf/{conf}") == (REPO / "conf" / conf).read_text()
    assert {"stripe_recon/cli.py", "stripe_recon/deploy.py", "stripe_recon/job_entry.py", "stripe_recon/spark.py"} <= names
    # Clusters bring their own Spark: pyspark/delta-spark only under the [spark] extra.
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    assert not [r for r in requires if ("pyspark" in r or "delta-spark" in r) and "extra ==" not in r]
    assert any(r.startswith("Requires-Dist: pyspark") and 'extra == "spark"' in r for r in requires)
    assert "recon = stripe_recon.cli:main" in entry_points
    assert "recon-job = stripe_recon.job_entry:job_entry" in entry_points


def whl_text(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as z:
        return z.read(name).decode()


def test_wheel_installs_into_a_clean_venv_and_recon_runs(dist, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    vpy, recon = venv / "bin" / "python", venv / "bin" / "recon"
    wheel = next(dist.glob("*.whl"))
    subprocess.run([str(vpy), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=120, capture_output=True)
    assert recon.exists() and (venv / "bin" / "recon-job").exists()

    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    env.pop("RECON_CONFIG", None)
    outside = tmp_path / "elsewhere"  # not the checkout: conf must come from the wheel
    outside.mkdir()
    helped = subprocess.run([str(recon), "--help"], cwd=outside, env=env, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
    for command in ("generate", "land", "run", "push", "report", "deploy"):
        assert command in helped.stdout

    probe = (
        "import stripe_recon, stripe_recon.config as c;"
        "cfg = c.load_config('glue.yaml', environ={});"
        "print(stripe_recon.__file__); print(c.conf_dir()); print(cfg.stripe.key_source)"
    )
    out = subprocess.run([str(vpy), "-c", probe], cwd=outside, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    module_file, conf_dir, key_source = out.stdout.split()
    site = str(venv / "lib")
    assert module_file.startswith(site) and conf_dir.startswith(site)
    assert conf_dir.endswith("stripe_recon/conf")
    assert key_source == "aws_secrets_manager"

    # recon-job turns a failing command into a non-zero process exit (Databricks wheel tasks).
    failed = subprocess.run([str(venv / "bin" / "recon-job"), "report", "--config", "nope.yaml"],
                            cwd=outside, env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 2  # a configuration error
    assert "config file not found: nope.yaml" in failed.stderr


def test_databricks_bundle_runs_entry_points_and_conf_the_wheel_has(dist):
    """Every task of databricks.yml calls an entry point the wheel declares, with a conf it packages."""
    import yaml

    from stripe_recon.config import load_config

    bundle = yaml.safe_load((REPO / "databricks.yml").read_text())
    wheel = next(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        eps = next(whl.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    declared = {line.split("=")[0].strip() for line in eps.splitlines() if "=" in line}
    jobs = bundle["resources"]["jobs"]
    assert set(jobs) == {"stripe_recon_run", "stripe_recon_stages"}
    stages = [t["task_key"] for t in jobs["stripe_recon_stages"]["tasks"]]
    assert stages == ["land_internal", "land_stripe", "validate", "detect", "plan", "push"]
    for job in jobs.values():
        for task in job["tasks"]:
            wt = task["python_wheel_task"]
            assert wt["package_name"] == "stripe_recon" and wt["entry_point"] in declared
            params = wt["parameters"]
            conf = params[params.index("--config") + 1]
            assert f"stripe_recon/conf/{conf}" in names
            assert params[params.index("--run-id") + 1] == "${var.run_id}"
            assert task["libraries"] == [{"whl": "./dist/*.whl"}]
    assert jobs["stripe_recon_run"]["schedule"]["quartz_cron_expression"] == "0 0 3 * * ?"
    cfg = load_config("databricks.yaml", environ={})
    assert (cfg.stripe.key_source, cfg.stripe.databricks_scope, cfg.stripe.databricks_key) == (
        "databricks", "stripe-recon", "api-key")


def _imported_modules(path: Path) -> set[str]:
    """The stripe_recon modules a file imports, at any depth (lazy imports inside functions too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_cli_and_deploy_do_not_import_each_other():
    """The job's entry (job_entry.py) imports the CLI; the CLI's `recon deploy glue` imports deploy.py."""
    lib = REPO / "lib" / "stripe_recon"
    assert "deploy" in _imported_modules(lib / "cli.py")
    assert "cli" not in _imported_modules(lib / "deploy.py")
    assert "cli" in _imported_modules(lib / "job_entry.py")
