"""The one place that builds (or reuses) the SparkSession.

Locally, Delta comes from the delta-spark pip package and its jar (with ``spark.extra_packages``, the
PostgreSQL JDBC driver by default) is resolved from Maven once (:mod:`jars`) and put on ``spark.jars``
as local paths, so no session start runs Ivy. Log4j is configured by the ``log4j2.properties`` shipped
in this package; a quiet session (the CLI's default console) sends the JVM's own output (log4j, JVM
warnings) to a log file instead of the terminal (:func:`jvm_log_path`). On a cluster (spark-submit,
Glue, Databricks) the running session is reused and its master, jars, packages and logging are never
overridden.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from pyspark import SparkConf
from pyspark.sql import SparkSession

from . import jvm_archive
from .config import Config
from .jars import ICU4J_PACKAGE, KAFKA_CONNECTOR, kafka_package, local_jars  # noqa: F401 - re-exported (were declared here)

DELTA_SQL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
# Settings that only change how a query runs; safe to set on a session we did not create.
RUNTIME_CONF = {
    # Spark 4 turns ANSI on by default, Spark 3.5 (Glue 5.0, the compat lane) has it off: pin it so
    # overflow and bad casts behave the same on every lane (the code uses try_cast where it may fail).
    "spark.sql.ansi.enabled": "true",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.databricks.delta.schema.autoMerge.enabled": "false",
    # Tables this job creates get a checkpoint every 100 commits, not every 10: the ledger and the gold
    # tables take a small commit per stage, and a checkpoint costs several seconds each time.
    "spark.databricks.delta.properties.defaults.checkpointInterval": "100",
}

#: Log4j 2 configuration of local sessions (root level WARN, known start-up noise quieter).
LOG4J2_CONF = Path(__file__).resolve().parent / "log4j2.properties"


# Structured Streaming's Kafka source (land internal --kafka), per Spark line: a build whose whole
# dependency tree Maven Central serves here (4.0.1+ need spark-token-provider-kafka 4.0.1+, not served;
# 4.0.0 runs on every pyspark 4.0.x: the source API is stable within a line).
def spark_major() -> int:
    import pyspark

    return int(pyspark.__version__.split(".")[0])


def hadoop_aws_package() -> str:
    """The ``org.apache.hadoop:hadoop-aws`` coordinate matching the Hadoop inside pyspark's jars
    (3.4.1 for pyspark 4.0, 3.3.4 for 3.5): add it to ``spark.extra_packages`` for s3a:// locally."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    for jar in sorted(jars.glob("hadoop-client-api-*.jar")):
        return "org.apache.hadoop:hadoop-aws:" + jar.name[len("hadoop-client-api-"):-len(".jar")]
    raise RuntimeError(f"no hadoop-client-api jar under {jars}: is pyspark installed from pip?")


def on_cluster() -> bool:
    """True when a launcher (spark-submit, Glue, Databricks) owns the JVM and its configuration."""
    return any(
        os.environ.get(var)
        for var in ("PYSPARK_GATEWAY_PORT", "DATABRICKS_RUNTIME_VERSION", "GLUE_VERSION", "AWS_GLUE_JOB_NAME")
    )


def get_spark(cfg: Config, quiet: bool = False, announce: Callable[[str], None] | None = None) -> SparkSession:
    """Return the active session, the cluster's session, or a new local one with Delta enabled.

    ``quiet`` (a new local session only): the JVM's stdout and stderr go to :func:`jvm_log_path` and
    Spark's console progress bars are off. ``announce`` is told when the Maven jars are resolved
    (the first local session on a machine, see :mod:`jars`).

    Example::

        spark = get_spark(load_config("conf/local.yaml"))
        spark.range(3).write.format("delta").save("/tmp/t")
    """
    session = SparkSession.getActiveSession()
    if session is None:
        session = _cluster_session(cfg) if on_cluster() else _local_session(cfg, quiet, announce)
    for key, value in {**RUNTIME_CONF, "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions)}.items():
        if key == "spark.sql.shuffle.partitions" and on_cluster():
            continue  # a cluster's own sizing wins
        session.conf.set(key, value)
    return session


def _cluster_session(cfg: Config) -> SparkSession:
    builder = SparkSession.builder.appName(cfg.spark.app_name)
    existing = SparkConf()
    for key, value in DELTA_SQL_CONF.items():
        if not existing.contains(key):
            builder = builder.config(key, value)
    return builder.getOrCreate()


def jvm_log_path(cfg: Config) -> Path:
    """Where a quiet local session's JVM output goes: ``spark.log_file``, else
    ``{storage.root}/logs/spark.log`` (a local root) or ``<temp>/stripe-recon/spark.log``."""
    if cfg.spark.log_file:
        return Path(cfg.spark.log_file).resolve()
    root = cfg.storage.root.removeprefix("file:")
    if "://" in root:
        import tempfile

        return Path(tempfile.gettempdir()) / "stripe-recon" / "spark.log"
    return Path(root).resolve() / "logs" / "spark.log"


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Point this process's stdout/stderr (file descriptors 1 and 2) at ``path`` while the JVM is
    launched: the JVM inherits them for its lifetime; this process gets its own back afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"== stripe-recon local Spark session, pid {os.getpid()}, "
                  f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}\n")
        log.flush()
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _local_session(cfg: Config, quiet: bool = False, announce: Callable[[str], None] | None = None) -> SparkSession:
    root = Path(cfg.storage.root) if "://" not in cfg.storage.root else Path("./data")
    ivy = Path(cfg.spark.ivy_dir).resolve()
    ivy.mkdir(parents=True, exist_ok=True)
    jars = local_jars(cfg, announce)
    java_opts = " ".join(filter(None, [
        f"-Dderby.system.home={(root / 'derby').resolve()} -Dlog4j2.configurationFile={LOG4J2_CONF.as_uri()}",
        jvm_archive.java_options(cfg, jars)]))
    builder = (
        SparkSession.builder.master(cfg.spark.master)
        .appName(cfg.spark.app_name)
        .config("spark.jars.ivy", str(ivy))
        .config("spark.jars", ",".join(jars))
        .config("spark.ui.enabled", str(cfg.spark.ui_enabled).lower())
        .config("spark.sql.warehouse.dir", str((root / "warehouse").resolve()))
        .config("spark.driver.extraJavaOptions", java_opts)
        .config("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
        .config("spark.default.parallelism", str(max(2, cfg.spark.shuffle_partitions)))
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.sql.sources.parallelPartitionDiscovery.parallelism", "2")
        .config("spark.driver.memory", cfg.spark.driver_memory)
    )
    if quiet:
        builder = builder.config("spark.ui.showConsoleProgress", "false")
    for key, value in {**DELTA_SQL_CONF, **RUNTIME_CONF}.items():
        builder = builder.config(key, value)
    for key, value in cfg.spark.conf.items():
        builder = builder.config(key, str(value))
    with _output_to(jvm_log_path(cfg)) if quiet else contextlib.nullcontext():
        session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
