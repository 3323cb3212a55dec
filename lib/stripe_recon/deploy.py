"""``recon deploy glue``: the AWS Glue 5.0 job definition, and uploading the wheel and the script.

Nothing here touches Spark: deploying needs only boto3. What runs on the cluster is job_entry.py
(the scripts in jobs/ and the ``recon-job`` entry point), which hands over to the ``recon`` CLI.

Example::

    cfg = load_config("conf/glue.yaml", ["deploy.glue.s3_prefix=s3://my-bucket/recon"])
    deploy_glue(cfg, wheel="dist/stripe_recon-0.1.0-py3-none-any.whl", script="jobs/glue_job.py")
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .config import Config
from .errors import ConfigError, InputError

log = logging.getLogger(__name__)

GLUE_VERSION = "5.0"
# Glue takes a single --conf job parameter: further settings are chained inside its value.
DELTA_CONF_CHAIN = (
    "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension"
    " --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog"
)
# Job parameters our Glue script reads (getResolvedOptions wants underscores, no dashes).
GLUE_ARG_COMMAND = "recon_command"
GLUE_ARG_CONFIG = "recon_config"
GLUE_ARG_OVERRIDES = "recon_overrides"


# -- Glue job definition ----------------------------------------------------------------------

def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``; anything else is a config error."""
    if not uri or not uri.startswith(("s3://", "s3a://")):
        raise ConfigError(f"deploy.glue.s3_prefix must be an s3:// URI (got {uri!r}); e.g. "
                          "--set deploy.glue.s3_prefix=s3://my-bucket/stripe-recon")
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    if not bucket:
        raise ConfigError(f"deploy.glue.s3_prefix {uri!r} names no bucket")
    return bucket, key.strip("/")


def glue_default_arguments(cfg: Config, wheel_uri: str) -> dict[str, str]:
    """The job parameters of the Glue job: Delta on, our wheel installed, the recon command to run."""
    g = cfg.deploy.glue
    bucket, prefix = split_s3(g.s3_prefix or "")
    base = f"s3://{bucket}/{prefix}".rstrip("/")
    return {
        "--job-language": "python",
        "--datalake-formats": "delta",
        "--conf": DELTA_CONF_CHAIN,
        "--additional-python-modules": ",".join([wheel_uri, *g.additional_python_modules]),
        "--TempDir": f"{base}/tmp/",
        "--enable-continuous-cloudwatch-log": "true",
        "--enable-metrics": "true",
        f"--{GLUE_ARG_COMMAND}": g.command,
        f"--{GLUE_ARG_CONFIG}": g.config,
        f"--{GLUE_ARG_OVERRIDES}": json.dumps(list(g.overrides)),
    }


def glue_job_definition(cfg: Config, script_uri: str, wheel_uri: str) -> dict[str, Any]:
    """The ``create_job``/``update_job`` body (without the name)."""
    g = cfg.deploy.glue
    if not g.role_arn:
        raise ConfigError("deploy.glue.role_arn is not set: the IAM role the Glue job runs as "
                          "(README 'Deployment / AWS Glue 5.0' lists its permissions)")
    return {
        "Description": "stripe-recon: reconcile the internal product catalog with Stripe",
        "Role": g.role_arn,
        "Command": {"Name": "glueetl", "ScriptLocation": script_uri, "PythonVersion": "3"},
        "DefaultArguments": glue_default_arguments(cfg, wheel_uri),
        "GlueVersion": GLUE_VERSION,
        "WorkerType": g.worker_type,
        "NumberOfWorkers": g.number_of_workers,
        "Timeout": g.timeout_minutes,
        "MaxRetries": g.max_retries,
        "ExecutionProperty": {"MaxConcurrentRuns": 1},  # two runs at once would race on the outbox
    }


def _client(service: str, cfg: Config) -> Any:
    import boto3

    g = cfg.deploy.glue
    return boto3.client(service, region_name=g.region, endpoint_url=g.endpoint_url)


def find_wheel(dist: str | Path = "dist") -> Path:
    wheels = sorted(Path(dist).glob("stripe_recon-*.whl"))
    if not wheels:
        raise InputError(f"no stripe_recon wheel in {dist}/: run `make dist` first (or pass --wheel)")
    return wheels[-1]


def deploy_glue(cfg: Config, wheel: str | Path, script: str | Path) -> dict[str, Any]:
    """Upload the wheel and the entry script to ``deploy.glue.s3_prefix`` and create or update the
    Glue job (plus a scheduled trigger when ``deploy.glue.schedule`` is set). Returns what it did."""
    from botocore.exceptions import ClientError

    g = cfg.deploy.glue
    wheel, script = Path(wheel), Path(script)
    for p in (wheel, script):
        if not p.is_file():
            raise InputError(f"{p} does not exist: run `make dist` first (or pass --wheel/--script)")
    bucket, prefix = split_s3(g.s3_prefix or "")
    key = (prefix + "/") if prefix else ""
    wheel_key, script_key = f"{key}dist/{wheel.name}", f"{key}jobs/{script.name}"
    definition = glue_job_definition(cfg, f"s3://{bucket}/{script_key}", f"s3://{bucket}/{wheel_key}")

    s3 = _client("s3", cfg)
    s3.upload_file(str(wheel), bucket, wheel_key)
    s3.upload_file(str(script), bucket, script_key)

    glue = _client("glue", cfg)
    try:
        glue.get_job(JobName=g.job_name)
        glue.update_job(JobName=g.job_name, JobUpdate=definition)
        action = "updated"
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "EntityNotFoundException":
            raise
        glue.create_job(Name=g.job_name, **definition)
        action = "created"
    result: dict[str, Any] = {
        "job_name": g.job_name,
        "job": action,
        "script": f"s3://{bucket}/{script_key}",
        "wheel": f"s3://{bucket}/{wheel_key}",
    }
    if g.schedule:
        result["trigger"] = _schedule(glue, g.job_name, g.schedule)
    log.info("Glue job %s %s", g.job_name, action)
    return result


def _schedule(glue: Any, job_name: str, schedule: str) -> dict[str, str]:
    from botocore.exceptions import ClientError

    name = f"{job_name}-schedule"
    actions = [{"JobName": job_name}]
    try:
        glue.get_trigger(Name=name)
        glue.update_trigger(Name=name, TriggerUpdate={"Schedule": schedule, "Actions": actions})
        return {"name": name, "action": "updated", "schedule": schedule}
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "EntityNotFoundException":
            raise
    glue.create_trigger(Name=name, Type="SCHEDULED", Schedule=schedule, Actions=actions, StartOnCreation=True)
    return {"name": name, "action": "created", "schedule": schedule}
