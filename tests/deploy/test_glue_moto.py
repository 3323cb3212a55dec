"""AWS Glue 5.0 target against moto's server mode (real HTTP, real boto3, real Spark s3a).

- `recon deploy glue` uploads the wheel and script and creates the job definition Glue 5.0 needs.
- The Stripe key configured in conf/glue.yaml is read from Secrets Manager.
- The shared Spark session reads and writes Delta tables at s3a:// paths served by moto.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from stripe_recon.config import load_config
from stripe_recon.deploy import DELTA_CONF_CHAIN
from stripe_recon.job_entry import parse_overrides, recon_argv

# conftest adds org.apache.hadoop:hadoop-aws to the shared session when this module is collected.
NEEDS_HADOOP_AWS = True
REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"  # the moto_endpoint fixture (conftest) uses the same region


def _client(service: str, endpoint: str):
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


def test_deploy_glue_creates_the_job_definition(moto_endpoint, tmp_path, capsys):
    from stripe_recon.cli import main

    s3 = _client("s3", moto_endpoint)
    s3.create_bucket(Bucket="deploy-bucket")
    wheel = tmp_path / "stripe_recon-9.9.9-py3-none-any.whl"
    wheel.write_bytes(b"PK-not-really-a-wheel")
    code = main([
        "deploy", "glue", "--config", str(REPO / "conf" / "glue.yaml"),
        "--wheel", str(wheel), "--script", str(REPO / "jobs" / "glue_job.py"),
        "--set", "deploy.glue.s3_prefix=s3://deploy-bucket/recon",
        "--set", f"deploy.glue.endpoint_url={moto_endpoint}",
        "--set", "deploy.glue.role_arn=arn:aws:iam::123456789012:role/recon-test",
        "--set", "deploy.glue.job_name=recon-test",
        "--set", "deploy.glue.number_of_workers=3",
        "--set", "deploy.glue.additional_python_modules=[requests==2.32.3]",
        "--set", "deploy.glue.overrides=[storage.root=s3://data-bucket/recon]", "--json",
    ])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        "job_name": "recon-test",
        "job": "created",
        "script": "s3://deploy-bucket/recon/jobs/glue_job.py",
        "wheel": "s3://deploy-bucket/recon/dist/stripe_recon-9.9.9-py3-none-any.whl",
        "trigger": {"name": "recon-test-schedule", "action": "created", "schedule": "cron(0 3 * * ? *)"},
    }

    # Both files landed in S3 byte for byte.
    body = s3.get_object(Bucket="deploy-bucket", Key="recon/dist/stripe_recon-9.9.9-py3-none-any.whl")["Body"]
    assert body.read() == b"PK-not-really-a-wheel"
    script = s3.get_object(Bucket="deploy-bucket", Key="recon/jobs/glue_job.py")["Body"].read()
    assert script == (REPO / "jobs" / "glue_job.py").read_bytes()

    glue = _client("glue", moto_endpoint)
    job = glue.get_job(JobName="recon-test")["Job"]
    assert job["Role"] == "arn:aws:iam::123456789012:role/recon-test"
    assert job["GlueVersion"] == "5.0"
    assert job["Command"] == {
        "Name": "glueetl",
        "ScriptLocation": "s3://deploy-bucket/recon/jobs/glue_job.py",
        "PythonVersion": "3",
    }
    assert (job["WorkerType"], job["NumberOfWorkers"], job["Timeout"], job["MaxRetries"]) == ("G.1X", 3, 120, 0)
    assert job["DefaultArguments"] == {
        "--job-language": "python",
        "--datalake-formats": "delta",
        "--conf": "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension"
                  " --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "--additional-python-modules":
            "s3://deploy-bucket/recon/dist/stripe_recon-9.9.9-py3-none-any.whl,requests==2.32.3",
        "--TempDir": "s3://deploy-bucket/recon/tmp/",
        "--enable-continuous-cloudwatch-log": "true",
        "--enable-metrics": "true",
        "--recon_command": "run",
        "--recon_config": "glue.yaml",
        "--recon_overrides": '["storage.root=s3://data-bucket/recon"]',
    }
    assert DELTA_CONF_CHAIN == job["DefaultArguments"]["--conf"]

    trigger = glue.get_trigger(Name="recon-test-schedule")["Trigger"]
    assert (trigger["Type"], trigger["Schedule"]) == ("SCHEDULED", "cron(0 3 * * ? *)")
    assert [a["JobName"] for a in trigger["Actions"]] == ["recon-test"]


def test_deploy_glue_without_role_says_what_to_set(moto_endpoint, tmp_path, capsys):
    from stripe_recon.cli import main

    wheel = tmp_path / "stripe_recon-1.0.0-py3-none-any.whl"
    wheel.write_bytes(b"x")
    code = main([
        "deploy", "glue", "--config", str(REPO / "conf" / "glue.yaml"), "--wheel", str(wheel),
        "--script", str(REPO / "jobs" / "glue_job.py"), "--set", "deploy.glue.role_arn=",
        "--set", f"deploy.glue.endpoint_url={moto_endpoint}",
    ])
    assert code == 2  # a configuration error (design.md: exit 2 for usage and config errors)
    assert "deploy.glue.role_arn is not set" in capsys.readouterr().err


def test_glue_job_arguments_become_the_recon_command():
    """What jobs/glue_job.py hands to `recon` for the job parameters deploy sets."""
    overrides = parse_overrides('["storage.root=s3://b/r", "stripe.rate_limit_per_second=50"]')
    assert recon_argv("land internal --allow-empty", "glue.yaml", overrides) == [
        "land", "internal", "--config", "glue.yaml",
        "--set", "storage.root=s3://b/r", "--set", "stripe.rate_limit_per_second=50", "--allow-empty",
    ]
    assert parse_overrides("a=1; b=x=y ;") == ["a=1", "b=x=y"]
    assert parse_overrides("") == []


def test_stripe_key_from_secrets_manager_as_glue_yaml_configures_it(moto_endpoint):
    from stripe_recon.stripe_client import resolve_api_key

    cfg = load_config("glue.yaml", [f"stripe.aws_endpoint_url={moto_endpoint}"], environ={})
    assert (cfg.stripe.key_source, cfg.stripe.aws_secret_id) == ("aws_secrets_manager", "stripe-recon/stripe-api-key")
    _client("secretsmanager", moto_endpoint).create_secret(
        Name="stripe-recon/stripe-api-key", SecretString=json.dumps({"api_key": "sk_test_glue123"})
    )
    assert resolve_api_key(cfg) == "sk_test_glue123"


@pytest.mark.slow
def test_spark_reads_and_writes_delta_on_s3a(moto_endpoint, spark, make_cfg):
    from pyspark.sql import types as T

    from stripe_recon import tables
    from stripe_recon.ledger import Run

    bucket = "recon-s3a"
    _client("s3", moto_endpoint).create_bucket(Bucket=bucket)
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    # Per-bucket keys: only this bucket talks to moto; the shared session is otherwise untouched.
    for key, value in {
        "endpoint": moto_endpoint,
        "endpoint.region": REGION,
        "path.style.access": "true",
        "connection.ssl.enabled": "false",
        "access.key": "testing",
        "secret.key": "testing",
        "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
    }.items():
        hconf.set(f"fs.s3a.bucket.{bucket}.{key}", value)

    cfg = make_cfg(f"storage.root=s3a://{bucket}/recon")
    schema = T.StructType([T.StructField("id", T.StringType()), T.StructField("n", T.LongType())])
    tables.append(spark, cfg, "bronze.s3a_probe", spark.createDataFrame([("a", 1), ("b", 2)], schema))
    tables.append(spark, cfg, "bronze.s3a_probe", spark.createDataFrame([("c", 3)], schema))
    run = Run.new(spark, cfg, "r-s3a")
    with run.stage("probe") as st:
        st.counts["rows"] = 3

    rows = sorted(tuple(r) for r in tables.read(spark, cfg, "bronze.s3a_probe").collect())
    assert rows == [("a", 1), ("b", 2), ("c", 3)]
    assert tables.version(spark, cfg, "bronze.s3a_probe") == 1
    ledger = tables.read(spark, cfg, tables.GOLD_RUNS).select("run_id", "stage", "status", "counts").collect()
    assert [(r.run_id, r.stage, r.status, r.counts) for r in ledger] == [("r-s3a", "probe", "ok", {"rows": 3})]

    # The objects really are in moto's bucket, Delta log included.
    keys = {
        o["Key"]
        for o in _client("s3", moto_endpoint).list_objects_v2(Bucket=bucket, Prefix="recon/tables/")["Contents"]
    }
    assert "recon/tables/bronze/s3a_probe/_delta_log/00000000000000000000.json" in keys
    assert "recon/tables/bronze/s3a_probe/_delta_log/00000000000000000001.json" in keys
    assert "recon/tables/gold/runs/_delta_log/00000000000000000000.json" in keys


def test_update_job_request_matches_the_glue_api():
    """moto has no UpdateJob; check the request a redeploy sends against botocore's Glue service model."""
    from botocore.validate import ParamValidator

    from stripe_recon.deploy import glue_job_definition

    cfg = load_config("glue.yaml", environ={})
    op = boto3.client("glue", region_name=REGION).meta.service_model.operation_model("UpdateJob")
    body = {"JobName": "stripe-recon", "JobUpdate": glue_job_definition(cfg, "s3://b/jobs/glue_job.py", "s3://b/w.whl")}
    report = ParamValidator().validate(body, op.input_shape)
    assert not report.has_errors(), report.generate_report()
    create = boto3.client("glue", region_name=REGION).meta.service_model.operation_model("CreateJob")
    report = ParamValidator().validate({"Name": "stripe-recon", **body["JobUpdate"]}, create.input_shape)
    assert not report.has_errors(), report.generate_report()


def test_glue_entry_script_parses_glue_style_arguments():
    """jobs/glue_job.py outside Glue (argparse): Glue's own parameters are ignored, defaults apply."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("glue_job", REPO / "jobs" / "glue_job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["glue_job.py", "--JOB_NAME", "stripe-recon", "--TempDir", "s3://b/tmp/", "--job-bookmark-option",
            "job-bookmark-disable", "--recon_command", "run --dry-run", "--recon_overrides", '["a.b=1"]']
    assert module.parse_args(argv) == {
        "JOB_NAME": "stripe-recon", "recon_command": "run --dry-run", "recon_config": "glue.yaml",
        "recon_overrides": '["a.b=1"]',
    }
