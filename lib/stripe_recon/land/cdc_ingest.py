"""Debezium change events into ``bronze.internal_cdc_events``, from JSON-lines files or from Kafka.

Both write bronze rows of ``tables.BRONZE_CDC_EVENTS_SCHEMA`` tagged with the run; land/cdc_events.py
turns them into change rows (``decode_events(read_events(run), ...)``).

- Files (``--cdc PATH``, ``sources.internal.cdc.path``): every file under the path (recursively; .gz
  read transparently) is read whole and split into lines, so each event keeps its exact ``file:line``.
  (One file is one task: split very large exports into several files.) Blank lines hold no event and
  are dropped. A second landing of the same run replaces that run's rows.
- Kafka (``--kafka SERVERS --topic T``): Structured Streaming with ``trigger(availableNow=True)``:
  everything that arrived since the last run, in micro-batches, then stop. Offsets live in the
  query's checkpoint, ``{storage.root}/checkpoints/internal_cdc/<topic>``, so each run takes what
  arrived since the last. Each batch is appended with Delta's ``txnAppId`` = the streaming query's id
  (kept by the checkpoint) and ``txnVersion`` = the batch id: a batch replayed after a crash between
  the Delta commit and the checkpoint commit is skipped by Delta instead of appended twice. Deleting
  the checkpoint starts a new query id, so its batches are not mistaken for replays.

Example::

    ingest_kafka(run, "127.0.0.1:9092", "recon.catalog")   # {'events': 12, 'batches': 1, ...}
    changes = decode_events(read_events(run), cfg.sources.internal.cdc.tables)
    # or, so that a run that failed after ingesting loses nothing: read_pending_events(run)
"""

from __future__ import annotations

import re
import threading
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .. import tables
from ..errors import InputError
from ..ledger import Run
from .common import check_path, read_input, sql_str

SOURCE_FILE = "internal:cdc_file"
SOURCE_KAFKA = "internal:kafka"
BRONZE = tables.BRONZE_INTERNAL_CDC_EVENTS


def checkpoint_path(cfg: Any, topic: str) -> str:
    """Where the Kafka query of ``topic`` keeps its offsets (one checkpoint per topic list)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", topic)
    return f"{cfg.storage.root.rstrip('/')}/checkpoints/internal_cdc/{safe}"


def _bronze_columns(df: DataFrame) -> DataFrame:
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in tables.BRONZE_CDC_EVENTS_SCHEMA.fields])


def file_events(run: Run, path: str) -> DataFrame:
    """The events of the JSON-lines files at ``path`` as bronze rows (not written)."""
    check_path(run.spark, path, "CDC events")
    # text()'s own wholetext argument overrides an .option("wholetext"), so it is passed here.
    text = read_input("CDC events", path, lambda: run.spark.read.option("recursiveFileLookup", "true")
                      .text(path, wholetext=True))
    lines = text.select(F.col("_metadata.file_path").alias("file"),
                        F.posexplode(F.split(F.col("value"), r"\r?\n")).alias("_i", "value"))
    return _bronze_columns(lines.filter(F.trim("value") != "").select(
        "value", F.lit(None).alias("key"), F.lit(None).alias("topic"), F.lit(None).alias("partition"),
        F.lit(None).alias("offset"), F.lit(None).alias("kafka_timestamp"), "file",
        (F.col("_i") + 1).alias("line"),
        F.lit(run.run_id).alias("_run_id"), F.lit(SOURCE_FILE).alias("_source"),
        F.concat_ws(":", "file", (F.col("_i") + 1).cast("string")).alias("_source_file"),
        F.current_timestamp().alias("_ingested_at"),
    ))


def ingest_files(run: Run, path: str) -> dict[str, int]:
    """Write the events at ``path`` to bronze for this run (replacing the run's earlier file rows);
    returns ``{events}``, the run's file events."""
    cond = f"_run_id = {sql_str(run.run_id)} AND _source = {sql_str(SOURCE_FILE)}"
    tables.replace_where(run.spark, run.cfg, BRONZE, file_events(run, path), cond)
    return {"events": read_events(run, SOURCE_FILE).count()}


def kafka_records(run: Run, records: DataFrame) -> DataFrame:
    """Kafka source rows (key, value, topic, partition, offset, timestamp) -> bronze rows."""
    return _bronze_columns(records.select(
        F.col("value").cast("string").alias("value"), F.col("key").cast("string").alias("key"),
        "topic", "partition", "offset", F.col("timestamp").alias("kafka_timestamp"),
        F.lit(None).alias("file"), F.lit(None).alias("line"),
        F.lit(run.run_id).alias("_run_id"), F.lit(SOURCE_KAFKA).alias("_source"),
        F.concat_ws("/", "topic", F.col("partition").cast("string"), F.col("offset").cast("string"))
        .alias("_source_file"),
        F.current_timestamp().alias("_ingested_at"),
    ))


def ingest_kafka(run: Run, servers: str | None = None, topic: str | None = None) -> dict[str, Any]:
    """Append to bronze every record of ``topic`` that arrived since the last run; returns
    ``{events, batches, checkpoint, query_id}``. Defaults come from ``sources.internal.cdc.kafka``.

    Needs spark-sql-kafka on the session (spark.kafka_package(), added when the config names servers).
    """
    kcfg = run.cfg.sources.internal.cdc.kafka
    servers, topic = servers or kcfg.servers, topic or kcfg.topic
    if not servers or not topic:
        raise InputError("Kafka CDC input needs servers and a topic: --kafka SERVERS --topic T "
                         "(sources.internal.cdc.kafka.servers / .topic)")
    checkpoint = checkpoint_path(run.cfg, topic)
    reader = (run.spark.readStream.format("kafka").option("kafka.bootstrap.servers", servers)
              .option("subscribe", topic).option("startingOffsets", kcfg.starting_offsets))
    if kcfg.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", kcfg.max_offsets_per_trigger)
    for key, value in kcfg.options.items():
        reader = reader.option(key, value)
    try:
        stream = reader.load()
    except Exception as exc:  # no Kafka source on the classpath, a bad option
        if "kafka" in str(exc).lower() and "data source" in str(exc).lower():
            raise InputError("the Kafka source is not on the Spark classpath: set sources.internal.cdc.kafka.servers "
                             "before the session starts, or pass --packages " + _kafka_package_hint()) from None
        raise

    query_id: dict[str, str] = {}
    started = threading.Event()
    batches: list[int] = []

    def write_batch(batch: DataFrame, batch_id: int) -> None:
        started.wait()  # the query id is known once start() returned
        tables.append(run.spark, run.cfg, BRONZE, kafka_records(run, batch), txn=(query_id["id"], int(batch_id)))
        batches.append(int(batch_id))

    query = (stream.writeStream.queryName(f"recon_cdc_{run.run_id}").trigger(availableNow=True)
             .option("checkpointLocation", checkpoint).foreachBatch(write_batch).start())
    query_id["id"] = f"recon-cdc-{query.id}"
    started.set()
    try:
        query.awaitTermination()
    except Exception as exc:  # StreamingQueryException: the broker, the topic, a failed batch write
        first = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
        raise InputError(f"Kafka CDC ingestion from {topic} at {servers} failed: {first} "
                         f"(checkpoint {checkpoint})") from exc
    return {"events": read_events(run, SOURCE_KAFKA).count(), "batches": len(batches), "checkpoint": checkpoint,
            "query_id": query_id["id"]}


def _kafka_package_hint() -> str:
    from ..spark import kafka_package

    return kafka_package()


def read_pending_events(run: Run, applied_stage: str = "land_internal") -> DataFrame:
    """Every bronze event not applied yet: those of runs later than the newest run whose
    ``applied_stage`` ledger row is ``ok`` (run ids sort by start time), this run's included.

    A run that ingested from Kafka (its offsets committed) but failed before applying the changes
    leaves its events to the next run, which reads them here; everything of a run at or before the
    last ok one was read by that run. The filter is on ``_run_id`` alone, so Delta skips old files.
    """
    spark, cfg = run.spark, run.cfg
    if not tables.exists(spark, cfg, BRONZE):
        return spark.createDataFrame([], tables.BRONZE_CDC_EVENTS_SCHEMA)
    events = tables.read(spark, cfg, BRONZE)
    last = None
    if tables.exists(spark, cfg, tables.GOLD_RUNS):
        row = (tables.read(spark, cfg, tables.GOLD_RUNS)
               .where(f"stage = {sql_str(applied_stage)} AND status = 'ok' AND run_id <> {sql_str(run.run_id)}")
               .agg(F.max("run_id")).first())  # aggregate
        last = row[0] if row else None
    return events if last is None else events.where(f"_run_id > {sql_str(last)}")


def read_events(run: Run, source: str | None = None) -> DataFrame:
    """This run's bronze events (optionally of one source: ``internal:cdc_file`` / ``internal:kafka``)."""
    if not tables.exists(run.spark, run.cfg, BRONZE):
        return run.spark.createDataFrame([], tables.BRONZE_CDC_EVENTS_SCHEMA)
    df = tables.read(run.spark, run.cfg, BRONZE).where(f"_run_id = {sql_str(run.run_id)}")
    return df if source is None else df.where(f"_source = {sql_str(source)}")
