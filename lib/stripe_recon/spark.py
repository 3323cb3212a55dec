"""The one place that builds (or reuses) the SparkSession.

Locally, Delta comes from the delta-spark pip package: ``configure_spark_with_delta_pip`` puts the
matching ``io.delta`` artifact in ``spark.jars.packages`` and Ivy resolves it (cached under
``spark.ivy_dir``), together with ``spark.extra_packages`` (the PostgreSQL JDBC driver by default).
On a cluster (spark-submit, Glue, Databricks) the running session is reused and its master, jars
and packages are never overridden.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyspark import SparkConf
from pyspark.sql import SparkSession

from .config import Config

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


# Spark 4 bundles icu4j (exact Unicode NFC in normalise.nfc); Spark 3.5 does not, so a local 3.5
# session adds the same version through spark.jars.packages and both lanes normalise identically.
ICU4J_PACKAGE = "com.ibm.icu:icu4j:76.1"


# Structured Streaming's Kafka source (land internal --kafka), per Spark line: a build whose whole
# dependency tree Maven Central serves here (4.0.1+ need spark-token-provider-kafka 4.0.1+, not served;
# 4.0.0 runs on every pyspark 4.0.x: the source API is stable within a line).
KAFKA_CONNECTOR = {"4.0": "org.apache.spark:spark-sql-kafka-0-10_2.13:4.0.0",
                   "3.5": "org.apache.spark:spark-sql-kafka-0-10_2.12:3.5.4"}


def kafka_package() -> str:
    """The spark-sql-kafka coordinate for the installed pyspark; a local session adds it when
    ``sources.internal.cdc.kafka.servers`` is set (on a cluster pass it with ``--packages``)."""
    import pyspark

    line = ".".join(pyspark.__version__.split(".")[:2])
    if line not in KAFKA_CONNECTOR:
        raise RuntimeError(f"no spark-sql-kafka coordinate declared for Spark {line}: add it to spark.KAFKA_CONNECTOR")
    return KAFKA_CONNECTOR[line]


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


def get_spark(cfg: Config) -> SparkSession:
    """Return the active session, the cluster's session, or a new local one with Delta enabled.

    Example::

        spark = get_spark(load_config("conf/local.yaml"))
        spark.range(3).write.format("delta").save("/tmp/t")
    """
    session = SparkSession.getActiveSession()
    if session is None:
        session = _cluster_session(cfg) if on_cluster() else _local_session(cfg)
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


def _local_session(cfg: Config) -> SparkSession:
    from delta import configure_spark_with_delta_pip

    root = Path(cfg.storage.root) if "://" not in cfg.storage.root else Path("./data")
    ivy = Path(cfg.spark.ivy_dir).resolve()
    ivy.mkdir(parents=True, exist_ok=True)
    builder = (
        SparkSession.builder.master(cfg.spark.master)
        .appName(cfg.spark.app_name)
        .config("spark.jars.ivy", str(ivy))
        .config("spark.ui.enabled", str(cfg.spark.ui_enabled).lower())
        .config("spark.sql.warehouse.dir", str((root / "warehouse").resolve()))
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={(root / 'derby').resolve()}")
        .config("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
        .config("spark.default.parallelism", str(max(2, cfg.spark.shuffle_partitions)))
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.sql.sources.parallelPartitionDiscovery.parallelism", "2")
        .config("spark.driver.memory", cfg.spark.driver_memory)
    )
    for key, value in {**DELTA_SQL_CONF, **RUNTIME_CONF}.items():
        builder = builder.config(key, value)
    for key, value in cfg.spark.conf.items():
        builder = builder.config(key, str(value))
    packages = list(cfg.spark.extra_packages)
    if spark_major() < 4 and not any(p.startswith("com.ibm.icu:icu4j:") for p in packages):
        packages.append(ICU4J_PACKAGE)
    if cfg.sources.internal.cdc.kafka.servers and not any(":spark-sql-kafka-" in p for p in packages):
        packages.append(kafka_package())
    builder = configure_spark_with_delta_pip(builder, extra_packages=packages)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
