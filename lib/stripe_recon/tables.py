"""Delta table names, locations, schemas and write helpers.

Every table lives at ``{storage.root}/tables/{layer}/{name}`` (path-based Delta tables: no
metastore needed locally, on Glue or on Databricks). The schemas below are the contract between
stages: a stage reads its inputs only through :func:`read` and writes only through the helpers here.

Example::

    df = read(spark, cfg, SILVER_INTERNAL_PRODUCTS)
    append(spark, cfg, GOLD_DISCREPANCIES, discrepancies_df)
"""

from __future__ import annotations

import datetime as dt
import json

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from .config import Config
from .errors import InputError

BRONZE_INTERNAL_PRODUCTS = "bronze.internal_products"
BRONZE_INTERNAL_PRICES = "bronze.internal_prices"
# Stripe exports mix products and prices in one input: one bronze table, partitioned by `_entity`.
BRONZE_STRIPE_OBJECTS = "bronze.stripe_objects"
BRONZE_MANIFESTS = "bronze.manifests"
BRONZE_INTERNAL_CDC_EVENTS = "bronze.internal_cdc_events"
SILVER_INTERNAL_PRODUCTS = "silver.internal_products"
SILVER_INTERNAL_PRICES = "silver.internal_prices"
SILVER_STRIPE_PRODUCTS = "silver.stripe_products"
SILVER_STRIPE_PRICES = "silver.stripe_prices"
GOLD_QUARANTINE = "gold.quarantine"
GOLD_DISCREPANCIES = "gold.discrepancies"
GOLD_CORRECTIONS = "gold.corrections"
GOLD_INTERNAL_CORRECTIONS = "gold.internal_corrections"
GOLD_PLANS = "gold.plans"
GOLD_RUNS = "gold.runs"
# Coordination between processes sharing one storage root (lease.py, claims.py); not catalog data.
CONTROL_LEASE = "control.lease"
CONTROL_PUSH_CLAIMS = "control.push_claims"
CONTROL_CDC_POSITIONS = "control.cdc_positions"

# Lineage columns carried by bronze and silver rows.
LINEAGE = [
    T.StructField("_run_id", T.StringType()),
    T.StructField("_source", T.StringType()),
    T.StructField("_source_file", T.StringType()),
    T.StructField("_ingested_at", T.TimestampType()),
]
LINEAGE_NAMES = [f.name for f in LINEAGE]
MAP_SS = T.MapType(T.StringType(), T.StringType())

# Debezium change events as they arrived (land/cdc_ingest.py), one row per event or Kafka record:
# from JSON-lines files (file, line) or from Kafka (topic, partition, offset, timestamp). ``_source`` is
# ``internal:cdc_file`` or ``internal:kafka``; ``_source_file`` the event's address (``path:line`` or
# ``topic/partition/offset``), which gold.quarantine.source_file and the change rows' ``_event_offset``
# repeat. land/cdc_events.py turns these rows into change rows.
BRONZE_CDC_EVENTS_SCHEMA = T.StructType(
    [
        T.StructField("value", T.StringType()),  # the event JSON as text; null = a Kafka tombstone
        T.StructField("key", T.StringType()),  # the Kafka record key as text (null for files)
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("kafka_timestamp", T.TimestampType()),
        T.StructField("file", T.StringType()),
        T.StructField("line", T.LongType()),  # 1-based line number in the file
        *LINEAGE,
    ]
)

# Decimal used for internal major-unit amounts: 3-decimal currencies and sub-minor inputs both fit.
AMOUNT_TYPE = T.DecimalType(24, 6)

# Silver tables written by land carry derived columns after these schemas: ``_fp`` (detect's
# fingerprint), on the Stripe tables ``_key``, ``_primary``, ``_active_ids`` (and ``_product_key`` on
# prices), then ``_rh`` and ``_hash``; see silver.py. Readers select the columns they need.
# Silver tables have the Change Data Feed and deletion vectors on (a re-landing MERGEs only changes).
SILVER_PROPERTIES = {"delta.enableChangeDataFeed": "true", "delta.enableDeletionVectors": "true"}
# Delta collects min/max statistics of the first 32 columns of every file it writes: on wide rows (a
# JSON string, arrays) that is as costly as the write itself, and the stats serve data skipping only
# on the columns readers filter by. So each layer names those (measured: a 2M-row bronze write took
# 19 s with the default, 11 s with one stats column, single core).
STATS_COLUMNS = {"bronze": "_run_id", "gold": "run_id"}
SILVER_INTERNAL_PRODUCTS_SCHEMA = T.StructType(
    [
        T.StructField("product_id", T.StringType(), False),
        T.StructField("name", T.StringType()),
        T.StructField("description", T.StringType()),
        T.StructField("active", T.BooleanType()),  # as stored; detect treats deleted_at as inactive
        T.StructField("deleted_at", T.TimestampType()),
        T.StructField("tax_code", T.StringType()),
        T.StructField("metadata", MAP_SS),
        T.StructField("updated_at", T.TimestampType()),
        *LINEAGE,
    ]
)

SILVER_INTERNAL_PRICES_SCHEMA = T.StructType(
    [
        T.StructField("price_id", T.StringType(), False),
        T.StructField("product_id", T.StringType()),
        T.StructField("currency", T.StringType()),  # lower-case ISO 4217, trimmed
        T.StructField("amount", AMOUNT_TYPE),  # major units as given (19.99)
        T.StructField("unit_amount", T.LongType()),  # minor units (1999), exact: else quarantined
        T.StructField("interval", T.StringType()),  # day|week|month|year, null = one-time
        T.StructField("interval_count", T.IntegerType()),
        T.StructField("active", T.BooleanType()),
        T.StructField("nickname", T.StringType()),
        T.StructField("updated_at", T.TimestampType()),
        *LINEAGE,
    ]
)

# Stripe silver: one row per Stripe object id (duplicates across ids are kept: detect reports them).
SILVER_STRIPE_PRODUCTS_SCHEMA = T.StructType(
    [
        T.StructField("id", T.StringType(), False),
        T.StructField("name", T.StringType()),
        T.StructField("description", T.StringType()),
        T.StructField("active", T.BooleanType()),
        T.StructField("tax_code", T.StringType()),
        T.StructField("metadata", MAP_SS),
        T.StructField("default_price", T.StringType()),
        T.StructField("livemode", T.BooleanType()),
        T.StructField("created", T.TimestampType()),
        T.StructField("updated", T.TimestampType()),
        T.StructField("is_deleted", T.BooleanType()),
        *LINEAGE,
    ]
)

SILVER_STRIPE_PRICES_SCHEMA = T.StructType(
    [
        T.StructField("id", T.StringType(), False),
        T.StructField("product", T.StringType()),  # Stripe product id
        T.StructField("lookup_key", T.StringType()),
        T.StructField("currency", T.StringType()),
        T.StructField("unit_amount", T.LongType()),
        T.StructField("type", T.StringType()),  # one_time | recurring
        T.StructField("interval", T.StringType()),
        T.StructField("interval_count", T.IntegerType()),
        T.StructField("active", T.BooleanType()),
        T.StructField("nickname", T.StringType()),
        T.StructField("metadata", MAP_SS),
        T.StructField("livemode", T.BooleanType()),
        T.StructField("created", T.TimestampType()),
        T.StructField("is_deleted", T.BooleanType()),
        *LINEAGE,
    ]
)

QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("stage", T.StringType()),  # land | validate | plan
        T.StructField("source", T.StringType()),  # internal | stripe | plan
        T.StructField("entity", T.StringType()),  # product | price | correction | unknown
        T.StructField("key", T.StringType()),
        T.StructField("reasons", T.ArrayType(T.StringType())),
        T.StructField("record", T.StringType()),  # the rejected row as JSON (or the raw line)
        T.StructField("source_file", T.StringType()),
        T.StructField("quarantined_at", T.TimestampType()),
    ]
)

DISCREPANCIES_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("entity", T.StringType()),  # product | price
        T.StructField("key", T.StringType()),  # internal key (product_id / price_id); null if none
        T.StructField("stripe_id", T.StringType()),
        T.StructField("kind", T.StringType()),
        T.StructField("attribute", T.StringType()),  # field_mismatch only ("metadata.color" style)
        T.StructField("internal_value", T.StringType()),
        T.StructField("stripe_value", T.StringType()),
        T.StructField("owner", T.StringType()),
        T.StructField("action", T.StringType()),  # push | pull | review | ignore | create | archive | replace
        T.StructField("detected_at", T.TimestampType()),
    ]
)

CORRECTIONS_SCHEMA = T.StructType(
    [
        T.StructField("correction_id", T.StringType(), False),
        T.StructField("run_id", T.StringType()),
        T.StructField("plan_hash", T.StringType()),
        T.StructField("seq", T.IntegerType()),  # dependency order: products (0) before prices (1) ...
        T.StructField("entity", T.StringType()),
        T.StructField("key", T.StringType()),
        T.StructField("stripe_id", T.StringType()),
        T.StructField("operation", T.StringType()),
        T.StructField("payload", T.StringType()),  # JSON of the request parameters
        T.StructField("observed", T.StringType()),  # JSON of the Stripe values seen at detection
        T.StructField("idempotency_key", T.StringType()),
        T.StructField("status", T.StringType()),  # planned|applied|failed|stale|skipped|held
        T.StructField("attempts", T.IntegerType()),
        T.StructField("last_error", T.StringType()),
        T.StructField("result_id", T.StringType()),  # id of the object created/updated in Stripe
        T.StructField("created_at", T.TimestampType()),
        T.StructField("updated_at", T.TimestampType()),
        # correction_id this one needs applied first (a price whose product is being created)
        T.StructField("depends_on", T.StringType()),
    ]
)

# One row per planning run (gold.plans): the guard's verdict and the approval.
PLANS_SCHEMA = T.StructType(
    [
        T.StructField("plan_hash", T.StringType(), False),  # sha256 of the sorted correction ids
        T.StructField("run_id", T.StringType(), False),
        T.StructField("status", T.StringType()),  # planned | held | approved
        T.StructField("counts", T.MapType(T.StringType(), T.LongType())),
        T.StructField("reasons", T.ArrayType(T.StringType())),  # why the guard held it (empty if not)
        T.StructField("created_at", T.TimestampType()),
        T.StructField("approved_at", T.TimestampType()),
        T.StructField("source_run_id", T.StringType()),  # the detect run whose discrepancies were planned
    ]
)

INTERNAL_CORRECTIONS_SCHEMA = T.StructType(
    [
        T.StructField("correction_id", T.StringType(), False),
        T.StructField("run_id", T.StringType()),
        T.StructField("entity", T.StringType()),
        T.StructField("key", T.StringType()),
        T.StructField("attribute", T.StringType()),
        T.StructField("current_value", T.StringType()),
        T.StructField("new_value", T.StringType()),
        T.StructField("stripe_id", T.StringType()),
        T.StructField("created_at", T.TimestampType()),
    ]
)

# One row per landing and entity (bronze.manifests): what arrived and what was written.
MANIFESTS_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("side", T.StringType(), False),  # internal | stripe
        T.StructField("entity", T.StringType(), False),  # products | prices
        T.StructField("files", T.ArrayType(T.StringType())),  # input files (or tables) read
        T.StructField("records", T.LongType()),  # records that arrived (the side's input for Stripe)
        T.StructField("input_hash", T.ArrayType(T.LongType())),  # order-free hash of the arrived records
        T.StructField("bronze_rows", T.LongType()),  # new or changed records appended to bronze
        T.StructField("counts", T.MapType(T.StringType(), T.LongType())),  # rows_in, landed, quarantined, ...
        T.StructField("land_failed", T.MapType(T.StringType(), T.LongType())),  # land rule -> records
        T.StructField("suite_failed", T.MapType(T.StringType(), T.LongType())),  # suite row rule -> records
        T.StructField("id_set_hash", T.LongType()),  # bit_xor(xxhash64(key)) over the silver keys
        T.StructField("silver_version", T.LongType()),  # the silver version this landing left
        T.StructField("unchanged_since", T.StringType()),  # run id of the landing it repeats (nothing written)
        T.StructField("created_at", T.TimestampType()),
    ]
)

RUNS_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("stage", T.StringType()),
        T.StructField("status", T.StringType()),  # ok | failed | held
        T.StructField("started_at", T.TimestampType()),
        T.StructField("finished_at", T.TimestampType()),
        T.StructField("duration_s", T.DoubleType()),
        T.StructField("counts", T.MapType(T.StringType(), T.LongType())),
        T.StructField("versions_read", T.MapType(T.StringType(), T.LongType())),
        T.StructField("message", T.StringType()),
    ]
)

# control.lease: ONE row, the storage root's writer lease (lease.py). token null = free.
LEASE_SCHEMA = T.StructType(
    [
        T.StructField("token", T.StringType()),  # random per take; the compare-and-swap value
        T.StructField("run_id", T.StringType()),
        T.StructField("command", T.StringType()),  # e.g. "push", "land internal"
        T.StructField("host", T.StringType()),
        T.StructField("pid", T.IntegerType()),
        T.StructField("started_at", T.TimestampType()),
        T.StructField("heartbeat_at", T.TimestampType()),  # at take; later beats: lease.heartbeat_path
    ]
)

# control.cdc_positions: per internal key, the source position (Debezium source.lsn, ts_ms) of the
# newest change event applied to silver (land/internal_cdc.py); an event at or before it changes nothing.
CDC_POSITIONS_SCHEMA = T.StructType(
    [
        T.StructField("entity", T.StringType(), False),  # product | price
        T.StructField("key", T.StringType(), False),
        T.StructField("lsn", T.LongType()),
        T.StructField("ts_ms", T.LongType()),
        T.StructField("run_id", T.StringType()),  # the run that applied it
    ]
)

# control.push_claims: one row per correction a push is sending (claims.py); deleted when it ends.
PUSH_CLAIMS_SCHEMA = T.StructType(
    [
        T.StructField("correction_id", T.StringType(), False),
        T.StructField("token", T.StringType()),  # the claiming push's token (its heartbeat file's name)
        T.StructField("run_id", T.StringType()),
        T.StructField("host", T.StringType()),
        T.StructField("pid", T.IntegerType()),
        T.StructField("claimed_at", T.TimestampType()),
    ]
)


def table_path(cfg: Config, name: str) -> str:
    """``gold.runs`` -> ``{storage.root}/tables/gold/runs`` (local path or Hadoop URI)."""
    layer, _, table = name.partition(".")
    if not table:
        raise ValueError(f"table name must be layer.name, got {name!r}")
    return f"{cfg.storage.root.rstrip('/')}/tables/{layer}/{table}"


def exists(spark: SparkSession, cfg: Config, name: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, table_path(cfg, name))


def read(spark: SparkSession, cfg: Config, name: str, hint: str | None = None) -> DataFrame:
    """Read a table; a missing table is an error that says which command creates it."""
    if not exists(spark, cfg, name):
        what = hint or "run the stage that writes it first (see `recon --help`)"
        raise InputError(f"table {name} does not exist at {table_path(cfg, name)}: {what}")
    return spark.read.format("delta").load(table_path(cfg, name))


def read_or_empty(spark: SparkSession, cfg: Config, name: str, schema: T.StructType) -> DataFrame:
    if exists(spark, cfg, name):
        return spark.read.format("delta").load(table_path(cfg, name))
    return spark.createDataFrame([], schema)


def last_commit(spark: SparkSession, cfg: Config, name: str) -> tuple[int | None, dict]:
    """(current Delta version, the JSON object a stripe-recon writer attached to that commit);
    (None, {}) when the table is missing. See :func:`commit_metadata`.

    Read from the transaction log itself (the newest ``_delta_log/<version>.json`` and its
    ``commitInfo`` line), not with ``DeltaTable.history(1)``: the history is a Spark job over the
    log (0.15-0.9 s here, and every stage asks this of four or five tables), while a listing and
    one small file read are a few milliseconds, locally and on object stores alike."""
    if not exists(spark, cfg, name):
        return None, {}
    log = _DeltaLogFiles(spark, table_path(cfg, name))
    latest = log.latest_version()
    if latest is None:
        return None, {}
    return latest, log.user_metadata(latest)


def commit_at(spark: SparkSession, cfg: Config, name: str, version: int) -> dict:
    """The JSON object a stripe-recon writer attached to ``version`` of ``name`` ({} when the table,
    the version or its log entry is gone: Delta removes log files past ``delta.logRetentionDuration``)."""
    if not exists(spark, cfg, name):
        return {}
    return _DeltaLogFiles(spark, table_path(cfg, name)).user_metadata(int(version))


class _DeltaLogFiles:
    """A Delta table's ``_delta_log`` read through Hadoop's FileSystem (any URI Spark reads).

    A version exists when its commit file ``%020d.json`` does (path-based tables, no coordinated
    commits); each commit file holds one JSON action per line, ``commitInfo`` among them (Delta
    writes it with every commit; ``userMetadata`` is the writer's option of that name)."""

    #: Above this many files in ``_delta_log`` the listing is not walked from Python (each file costs
    #: py4j calls: 0.61 s for a log of 4,320 versions, against 0.12 s for Delta's ``history(1)``).
    MAX_WALKED = 400

    def __init__(self, spark: SparkSession, path: str) -> None:
        jvm = spark._jvm
        self._spark, self._path, self._jvm = spark, path, jvm
        self._dir = jvm.org.apache.hadoop.fs.Path(f"{path.rstrip('/')}/_delta_log")
        self._fs = self._dir.getFileSystem(spark._jsc.hadoopConfiguration())

    def latest_version(self) -> int | None:
        statuses = self._fs.listStatus(self._dir)
        if len(statuses) > self.MAX_WALKED:  # a long-lived table: one Spark job is cheaper than the walk
            from delta.tables import DeltaTable

            row = DeltaTable.forPath(self._spark, self._path).history(1).select("version").first()
            return int(row[0]) if row else None
        names = (status.getPath().getName() for status in statuses)
        versions = [int(n[:20]) for n in names if len(n) == 25 and n.endswith(".json") and n[:20].isdigit()]
        return max(versions, default=None)

    def user_metadata(self, version: int) -> dict:
        path = self._jvm.org.apache.hadoop.fs.Path(self._dir, f"{version:020d}.json")
        try:
            stream = self._fs.open(path)
        except Exception:  # py4j wraps the FileNotFoundException of a version whose log is gone
            return {}
        try:
            text = self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()
        for line in text.splitlines():
            if line.lstrip().startswith('{"commitInfo"'):
                raw = json.loads(line)["commitInfo"].get("userMetadata")
                try:
                    meta = json.loads(raw) if raw else {}
                except ValueError:
                    return {}
                return meta if isinstance(meta, dict) else {}
        return {}


def version(spark: SparkSession, cfg: Config, name: str) -> int | None:
    """The table's current Delta version (recorded in the runs ledger as 'versions read')."""
    return last_commit(spark, cfg, name)[0]


def table_properties(name: str, columns: list[str]) -> dict[str, str]:
    """The ``delta.*`` properties a table (of ``columns``) gets when this job creates it
    (STATS_COLUMNS, SILVER_PROPERTIES)."""
    layer = name.partition(".")[0]
    if layer == "silver":
        return {**SILVER_PROPERTIES, "delta.dataSkippingNumIndexedCols": "1"}  # the key
    if STATS_COLUMNS.get(layer) in columns:
        return {"delta.dataSkippingStatsColumns": STATS_COLUMNS[layer]}
    return {}


def _creating(writer, spark: SparkSession, cfg: Config, name: str, df: DataFrame):
    """``writer`` with the table's properties when the write creates the table."""
    if not exists(spark, cfg, name):
        for key, value in table_properties(name, df.columns).items():
            writer = writer.option(key, value)
    return writer


def append(spark: SparkSession, cfg: Config, name: str, df: DataFrame, txn: tuple[str, int] | None = None) -> None:
    """Append; with ``txn=(app_id, version)`` a repeat of the same pair is skipped by Delta."""
    writer = _creating(df.write.format("delta").mode("append").option("mergeSchema", "true"), spark, cfg, name, df)
    if txn is not None:
        writer = writer.option("txnAppId", txn[0]).option("txnVersion", txn[1])
    writer.save(table_path(cfg, name))


def commit_metadata(spark: SparkSession, cfg: Config, name: str) -> dict:
    """The JSON object a stripe-recon writer attached to the table's latest commit (``userMetadata``);
    empty when the table is missing or the latest commit carries none (e.g. written by another tool)."""
    return last_commit(spark, cfg, name)[1]


def overwrite(spark: SparkSession, cfg: Config, name: str, df: DataFrame, metadata: dict | None = None,
              properties: dict[str, str] | None = None) -> None:
    """Replace the table; ``metadata`` (a JSON object) is recorded with the commit, see
    :func:`commit_metadata`; ``properties`` (``delta.*`` table properties) are set on it."""
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    for key, value in {**table_properties(name, df.columns), **(properties or {})}.items():
        writer = writer.option(key, value)
    if metadata:
        writer = writer.option("userMetadata", json.dumps(metadata, sort_keys=True))
    writer.save(table_path(cfg, name))


def replace_where(spark: SparkSession, cfg: Config, name: str, df: DataFrame, condition: str,
                  partition_by: str | None = None) -> None:
    """Atomically replace the rows matching ``condition`` (e.g. one run's rows) with ``df``."""
    if not exists(spark, cfg, name):
        writer = _creating(df.write.format("delta").mode("append"), spark, cfg, name, df)
        if partition_by:
            writer = writer.partitionBy(partition_by)
        writer.save(table_path(cfg, name))
        return
    df.write.format("delta").mode("overwrite").option("replaceWhere", condition).save(table_path(cfg, name))


def delete_where(spark: SparkSession, cfg: Config, name: str, condition: str) -> None:
    """Delete the rows matching ``condition`` (nothing when the table does not exist)."""
    from delta.tables import DeltaTable

    if exists(spark, cfg, name):
        DeltaTable.forPath(spark, table_path(cfg, name)).delete(condition)


def update_where(spark: SparkSession, cfg: Config, name: str, condition: str, values: dict[str, str]) -> None:
    """Set columns (SQL expressions over the row, by column name) on the rows matching ``condition``."""
    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, table_path(cfg, name)).update(condition, values)


def merge_snapshot(spark: SparkSession, cfg: Config, name: str, source: DataFrame, key: str, hash_col: str,
                   metadata: dict | None = None, delete_missing: bool = True) -> None:
    """Make the table equal ``source`` (unique on ``key``) writing only what changed: rows whose
    ``hash_col`` differs are updated, new keys inserted, keys absent from ``source`` deleted (unless
    ``delete_missing=False``: a set of changes). With deletion vectors on, unchanged rows are neither
    rewritten nor fed to the Change Data Feed."""
    from delta.tables import DeltaTable

    conf_key = "spark.databricks.delta.commitInfo.userMetadata"
    if metadata:
        spark.conf.set(conf_key, json.dumps(metadata, sort_keys=True))
    try:
        builder = (
            DeltaTable.forPath(spark, table_path(cfg, name)).alias("t")
            .merge(source.alias("s"), f"t.`{key}` = s.`{key}`")
            .whenMatchedUpdateAll(condition=f"NOT (t.`{hash_col}` <=> s.`{hash_col}`)")
            .whenNotMatchedInsertAll()
        )
        (builder.whenNotMatchedBySourceDelete() if delete_missing else builder).execute()
    finally:
        if metadata:
            spark.conf.unset(conf_key)


def remove_path(spark: SparkSession, path: str) -> None:
    """Delete a folder (local or any Hadoop URI) through the driver's Hadoop FileSystem."""
    jvm = spark._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    hpath.getFileSystem(spark._jsc.hadoopConfiguration()).delete(hpath, True)


#: How :func:`local_rows` writes a timestamp into its JSON document (always UTC, microseconds).
_JSON_TIMESTAMP = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"


def _json_value(value: object) -> object:
    """A Python value as :func:`local_rows` puts it in JSON (datetimes as UTC text; naive ones are local
    time, as Spark reads a naive datetime)."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def local_rows(spark: SparkSession, rows: list[dict], schema: T.StructType) -> DataFrame:
    """A small frame of ``rows`` (dicts by field name; absent = null): one JSON literal parsed by
    ``from_json`` in the JVM. Unlike ``createDataFrame`` of a Python list it needs no Python worker
    (each one costs a process start), and unlike a literal per value it is one call into the JVM
    however many values the rows hold (a manifest row has dozens)."""
    from pyspark.sql import functions as F

    if not rows:
        return spark.createDataFrame([], schema)
    doc = json.dumps([{f.name: _json_value(r.get(f.name)) for f in schema.fields} for r in rows], allow_nan=True)
    parsed = F.from_json(F.lit(doc), T.ArrayType(schema), {"timestampFormat": _JSON_TIMESTAMP, "mode": "FAILFAST"})
    return spark.range(1).select(F.inline(parsed))


def landing_manifests(spark: SparkSession, cfg: Config, run_id: str, side: str) -> dict[str, dict]:
    """The bronze.manifests rows of one landing of one side, by entity (a few rows, not row data)."""
    if not exists(spark, cfg, BRONZE_MANIFESTS):
        return {}
    from pyspark.sql import functions as F

    rows = read(spark, cfg, BRONZE_MANIFESTS).where((F.col("run_id") == run_id) & (F.col("side") == side)).collect()
    return {r["entity"]: r.asDict() for r in rows}


def merge_upsert(spark: SparkSession, cfg: Config, name: str, df: DataFrame, keys: list[str]) -> None:
    """Insert new keys and update changed rows; ``df`` must be unique on ``keys``."""
    from delta.tables import DeltaTable

    if not exists(spark, cfg, name):
        append(spark, cfg, name, df)
        return
    cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    (
        DeltaTable.forPath(spark, table_path(cfg, name))
        .alias("t")
        .merge(df.alias("s"), cond)
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )


def latest_run_id(spark: SparkSession, cfg: Config, name: str) -> str | None:
    """The run_id of the newest rows of a gold table (by the runs ledger order)."""
    if not exists(spark, cfg, name):
        return None
    row = read(spark, cfg, name).selectExpr("max(run_id)").first()
    return row[0] if row else None


def merge_rows(
    spark: SparkSession,
    cfg: Config,
    name: str,
    df: DataFrame,
    keys: list[str],
    update: dict[str, str] | None = None,
    insert: bool = True,
) -> None:
    """MERGE ``df`` (unique on ``keys``) into ``name``: matched rows get the ``update`` SQL
    expressions (``t.`` = target, ``s.`` = source; ``None`` = every column from the source);
    unmatched source rows are inserted when ``insert``. A missing table is created from ``df``.

    Example: ``merge_rows(spark, cfg, GOLD_CORRECTIONS, statuses, ["correction_id"],
    update={"status": "s.status", "attempts": "t.attempts + s.attempts"}, insert=False)``
    """
    from delta.tables import DeltaTable

    if not exists(spark, cfg, name):
        if insert:
            append(spark, cfg, name, df)
        return
    cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    builder = DeltaTable.forPath(spark, table_path(cfg, name)).alias("t").merge(df.alias("s"), cond)
    builder = builder.whenMatchedUpdateAll() if update is None else builder.whenMatchedUpdate(set=update)
    if insert:
        builder = builder.whenNotMatchedInsertAll()
    builder.execute()
