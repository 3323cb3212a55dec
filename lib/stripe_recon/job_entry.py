"""The entry of the job on a cluster: the scripts in jobs/ (spark-submit, Glue, Databricks) and the
``recon-job`` entry point run the ``recon`` CLI in the driver through :func:`run_recon`.

Kept apart from deploy.py (``recon deploy glue``, run on a workstation) so that the CLI and the
deployment code do not import each other: this module imports the CLI, the CLI imports deploy.py.

Example::

    run_recon(recon_argv("run --dry-run", "s3://bucket/conf/glue.yaml", ["guard.max_change_ratio=0.1"]))
"""

from __future__ import annotations

import json
import shlex
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .deploy import GLUE_ARG_COMMAND, GLUE_ARG_OVERRIDES
from .errors import ConfigError


def fetch_config(uri: str, endpoint_url: str | None = None) -> str:
    """A config given as ``s3://bucket/key.yaml`` is copied to a local temp file (Glue); other
    values (paths, packaged names like ``glue.yaml``) are returned as they are."""
    if not uri.startswith(("s3://", "s3a://")):
        return uri
    import boto3

    bucket, key = uri.split("://", 1)[1].split("/", 1)
    local = Path(tempfile.mkdtemp(prefix="recon_conf_")) / Path(key).name
    boto3.client("s3", endpoint_url=endpoint_url).download_file(bucket, key, str(local))
    return str(local)


def parse_overrides(raw: str | None) -> list[str]:
    """Glue job parameters cannot repeat: overrides come as a JSON list or ``;``-separated pairs."""
    raw = (raw or "").strip()
    if not raw:
        return []
    if raw.startswith("["):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--{GLUE_ARG_OVERRIDES} is not a JSON list: {exc}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f'--{GLUE_ARG_OVERRIDES} must be a JSON list of "key=value" strings')
        return value
    return [p.strip() for p in raw.split(";") if p.strip()]


def recon_argv(command: str, config: str | None, overrides: Sequence[str] = ()) -> list[str]:
    """``("run --dry-run", "glue.yaml", ["a=b"])`` -> the ``recon`` argument list."""
    words = shlex.split(command)
    if not words:
        raise ConfigError(f"--{GLUE_ARG_COMMAND} is empty: give a recon command such as 'run'")
    # --config/--set belong to the sub-command: they go after its positional words ("land internal").
    n = 0
    while n < len(words) and not words[n].startswith("-"):
        n += 1
    argv = words[:n]
    if config:
        argv += ["--config", fetch_config(config)]
    for pair in overrides:
        argv += ["--set", pair]
    return argv + words[n:]


def run_recon(argv: Sequence[str]) -> int:
    """Run the ``recon`` CLI in this process (the cluster's Python driver)."""
    from .cli import main

    return main(list(argv))


def job_entry() -> None:
    """``recon-job`` entry point: ``recon`` with ``sys.argv``, raising ``SystemExit`` on a non-zero
    exit code. Databricks' python_wheel_task calls the entry function and ignores what it returns,
    so a held (3) or failed (1) run must raise to fail the task."""
    import sys

    code = run_recon(sys.argv[1:])
    if code:
        raise SystemExit(code)
