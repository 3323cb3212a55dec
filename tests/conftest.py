"""Shared fixtures: one SparkSession for the whole test session, and an isolated config per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)

from stripe_recon.config import Config, load_config  # noqa: E402
from stripe_recon.ledger import Run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _test_config(root: Path, *overrides: str) -> Config:
    return load_config(
        REPO / "conf" / "local.yaml",
        [
            f"storage.root={root}",
            "spark.shuffle_partitions=2",
            "spark.master=local[2]",
            f"spark.ivy_dir={REPO / '.cache' / 'ivy'}",
            "spark.driver_memory=3g",
            *overrides,
        ],
        environ={},
    )


@pytest.fixture(scope="session")
def spark(tmp_path_factory, request):
    from stripe_recon.spark import get_spark, hadoop_aws_package, kafka_package

    # A test module that sets NEEDS_HADOOP_AWS = True (s3a:// on the moto server) gets hadoop-aws on
    # the one shared session, NEEDS_KAFKA = True the Kafka source; jars can only be added at session
    # start, so decide from what was collected.
    def needed(flag: str) -> bool:
        return any(getattr(getattr(item, "module", None), flag, False) for item in request.session.items)

    extra = [p for flag, p in (("NEEDS_HADOOP_AWS", hadoop_aws_package), ("NEEDS_KAFKA", kafka_package)) if needed(flag)]
    overrides = []
    if extra:
        base = _test_config(REPO).spark.extra_packages
        overrides.append(f"spark.extra_packages={[*base, *(p() for p in extra)]}")
    cfg = _test_config(tmp_path_factory.mktemp("spark"), *overrides)
    session = get_spark(cfg)
    yield session
    session.stop()


@pytest.fixture
def cfg(tmp_path) -> Config:
    """A config whose storage.root is this test's own folder."""
    return _test_config(tmp_path / "data")


@pytest.fixture
def make_cfg(tmp_path):
    """Build a config for this test's folder with extra ``key=value`` overrides."""

    def _make(*overrides: str) -> Config:
        return _test_config(tmp_path / "data", *overrides)

    return _make


@pytest.fixture
def run(spark, cfg) -> Run:
    return Run.new(spark, cfg)


AWS_TEST_REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_endpoint():
    """A real moto server (HTTP on loopback) for S3 / Glue / Secrets Manager, with test credentials."""
    from moto.server import ThreadedMotoServer

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": AWS_TEST_REGION}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
