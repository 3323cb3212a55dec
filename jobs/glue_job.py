"""AWS Glue 5.0 entry for stripe-recon (``recon deploy glue`` uploads this script).

Job parameters (set by ``recon deploy glue`` from ``deploy.glue``; override per run):
``--recon_command`` (default ``run``), ``--recon_config`` (a packaged name like ``glue.yaml`` or an
``s3://`` YAML; default ``glue.yaml``), ``--recon_overrides`` (JSON list of ``key=value``).
Uses ``awsglue.utils.getResolvedOptions`` on Glue and argparse elsewhere, so the same script runs
locally: ``python jobs/glue_job.py --recon_command "run --dry-run" --recon_config local.yaml``.
"""

from __future__ import annotations

import argparse
import sys

OPTIONAL = {"recon_command": "run", "recon_config": "glue.yaml", "recon_overrides": "[]"}


def parse_args(argv: list[str]) -> dict[str, str]:
    try:
        from awsglue.utils import getResolvedOptions
    except ImportError:
        parser = argparse.ArgumentParser(prog="glue_job.py")
        parser.add_argument("--JOB_NAME", default="local")
        for name, default in OPTIONAL.items():
            parser.add_argument(f"--{name}", default=default)
        args, _ignored = parser.parse_known_args(argv[1:])  # Glue adds its own --TempDir, --job-bookmark-option ...
        return vars(args)
    # getResolvedOptions fails on a missing name, so ask only for those the run was given.
    present = [n for n in OPTIONAL if f"--{n}" in argv]
    return {**OPTIONAL, **getResolvedOptions(argv, ["JOB_NAME", *present])}


def main(argv: list[str]) -> int:
    from stripe_recon.job_entry import parse_overrides, recon_argv, run_recon

    opts = parse_args(argv)
    try:
        import awsglue  # noqa: F401
    except ImportError:
        pass
    else:  # start Glue's own session (Delta from --datalake-formats/--conf) so recon reuses it
        from pyspark.sql import SparkSession

        SparkSession.builder.getOrCreate()
    return run_recon(recon_argv(opts["recon_command"], opts["recon_config"], parse_overrides(opts["recon_overrides"])))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
