"""Apply Debezium change events to silver.internal_products / silver.internal_prices.

``recon land internal --cdc PATH`` or ``--kafka SERVERS --topic T`` (stage ``land_internal``):

1. **Ingest** the events into bronze.internal_cdc_events (land/cdc_ingest.py), then read every event
   not applied yet (``read_pending_events``: this run's, and those of runs that failed after ingesting).
2. **Decode** them (land/cdc_events.py): one change row per key, the newest in source order (lsn,
   then ts_ms); tombstones, truncates and messages skipped, malformed events quarantined.
3. **Stale?** ``control.cdc_positions`` holds, per key, the source position of the newest event
   applied. A change at or before it (a replay, an out-of-order older batch) changes nothing and is
   counted as ``stale``. A delete of a key silver has never held is counted as ``unknown_deletes``.
4. **Rows**: upserts take the event's ``after`` row; a column Debezium sent as unavailable (an
   unchanged TOASTed value, ``_unchanged``) keeps silver's value. A product delete keeps silver's row
   with ``deleted_at`` = the event's ``source.ts_ms``; a price (no ``deleted_at``) is kept with
   ``active = false``. The rows are typed and flagged by the same rules as a snapshot landing
   (internal.py's canonical pass and the GX suite's row rules), their derived columns (``_fp``,
   ``_hash``) computed by the same :func:`common.publish`, and MERGEd into silver in one MERGE per
   table that updates only rows whose ``_hash`` changed and deletes nothing; bad rows go to
   gold.quarantine and leave silver's row as it was.
5. **Positions**: every non-stale change's position is recorded (MERGE, newer positions only).

Counts (the ledger row): ``rows_in`` = events = ``landed + quarantined + skipped``, where skipped =
tombstones/truncates/messages + events superseded by a newer one of the same key in the batch +
stale + unknown deletes.

Example::

    land_internal_cdc(run, path="/data/cdc/")   # {'products': {'rows_in': 3, 'landed': 3, ...}, ...}
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .. import records, silver, tables
from ..errors import InputError
from ..ledger import Run
from .cdc_events import decode_events
from .cdc_ingest import SOURCE_FILE, SOURCE_KAFKA, ingest_files, ingest_kafka, read_pending_events
from .common import EntitySpec, landing_spec, manifest_row, publish, suite_rules, write_manifest, write_quarantine
from .internal import SPECS, _flagged

POSITIONS = tables.CONTROL_CDC_POSITIONS
_ISO = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"
_NO_POS = -(2**63)  # a missing lsn / ts_ms sorts first, as in cdc_events


def land_internal_cdc(run: Run, path: str | None = None, servers: str | None = None,
                      topic: str | None = None) -> dict[str, Any]:
    """Ingest, decode and apply change events; returns per-entity counts and the event counts.

    Kafka when ``servers``/``topic`` are given (or configured and no path is), else the files at
    ``path`` (default ``sources.internal.cdc.path``)."""
    cdc = run.cfg.sources.internal.cdc
    use_kafka = bool(servers or topic) or (not path and not cdc.path and bool(cdc.kafka.servers))
    with run.stage("land_internal") as st:
        if use_kafka:
            ingested = ingest_kafka(run, servers, topic)
            where = f"kafka {servers or cdc.kafka.servers} topic {topic or cdc.kafka.topic}"
        else:
            path = path or cdc.path
            if not path:
                raise InputError("no CDC input: pass --cdc PATH or --kafka SERVERS --topic T "
                                 "(sources.internal.cdc.path / sources.internal.cdc.kafka.*)")
            ingested = ingest_files(run, path)
            where = path
        source = SOURCE_KAFKA if use_kafka else SOURCE_FILE
        changes = decode_events(read_pending_events(run), cdc.tables, cdc.epoch_unit)
        changes.flagged.persist()
        frames = records.SmallFrames()
        try:
            events = changes.counts()
            spec_id = landing_spec(run, list(SPECS.values()), {"side": "internal", "input": "cdc"})
            rejected = [changes.quarantine_rows(run.run_id)] if events["quarantined"] else []
            result: dict[str, Any] = {}
            manifest_rows = []
            for plural, spec in SPECS.items():
                counts, pub = _apply(run, spec, changes.changes(plural), events[f"{plural}.rows"], source, spec_id,
                                     where, frames)
                counts["superseded"] = events[f"{plural}.changes"] - events[f"{plural}.rows"]
                result[plural] = counts
                if pub is not None:
                    if pub.rejected is not None:
                        rejected.append(pub.rejected)
                    manifest = {"rows": events[f"{plural}.rows"], "h_lo": 0, "h_hi": 0}
                    manifest_rows.append(manifest_row(run, "internal", plural, [where], manifest, 0,
                                                      pub.counts, pub.details))
        finally:
            frames.release()
            changes.flagged.unpersist()
        write_quarantine(run, "internal", rejected)
        if manifest_rows:
            write_manifest(run, "internal", manifest_rows)
        per_entity = {p: result[p] for p in SPECS}
        landed = sum(c["landed"] for c in per_entity.values())
        quarantined = events["quarantined"] + sum(c["quarantined"] for c in per_entity.values())
        skipped = events["skipped"] + sum(c["superseded"] + c["stale"] + c["unknown_deletes"]
                                          for c in per_entity.values())
        totals = {"rows_in": events["events"], "landed": landed, "quarantined": quarantined, "skipped": skipped}
        assert totals["rows_in"] == landed + quarantined + skipped, (totals, events, per_entity)
        for plural, counts in per_entity.items():
            st.counts.update({f"{plural}.{k}": v for k, v in counts.items()})
        st.counts.update({f"cdc.{k}": v for k, v in events.items() if "." not in k})
        st.counts.update(totals)
        st.message = (f"cdc from {where}: {ingested['events']} events ingested, {events['events']} pending; "
                      f"{landed} applied, {quarantined} quarantined, {skipped} skipped")
        result.update(totals, events=events, ingested=ingested, input=where)
    return result


def _position(lsn: Column, ts_ms: Column) -> Column:
    return F.struct(F.coalesce(lsn, F.lit(_NO_POS)).alias("lsn"), F.coalesce(ts_ms, F.lit(_NO_POS)).alias("ts_ms"))


def _as_text(df: DataFrame, name: str) -> Column:
    """A silver column as the text a CDC event would carry for it (what canonical parses back)."""
    dtype = df.schema[name].dataType
    col = F.col(f"`{name}`")
    if isinstance(dtype, (T.MapType, T.StructType, T.ArrayType)):
        return F.to_json(col)
    if isinstance(dtype, T.TimestampType):
        return F.date_format(col, _ISO)
    return col.cast("string")


def _apply(run: Run, spec: EntitySpec, change_rows: DataFrame, n_changes: int, source: str, spec_id: str,
           where: str, frames: records.SmallFrames) -> tuple[dict[str, int], Any]:
    """Apply one entity's change rows (one per key, ``n_changes`` of them); returns (counts, Published
    or None).

    Silver and the positions table are first cut to the keys the changes name
    (:func:`records.rows_named`, the keys broadcast while there are at most
    ``detect.broadcast_max_rows``): each is scanned once and never shuffled, so the cost of applying a
    few changes does not grow with the tables' size."""
    spark, cfg = run.spark, run.cfg
    key = spec.key
    columns = [c for c in change_rows.columns if not c.startswith("_")]
    hint = F.broadcast if n_changes <= cfg.detect.broadcast_max_rows else (lambda df: df)
    named = change_rows.select(key)
    positions = records.rows_named(
        tables.read_or_empty(spark, cfg, POSITIONS, tables.CDC_POSITIONS_SCHEMA).where(F.col("entity") == spec.entity),
        "key", named, hint,
    ).select(F.col("key").alias("_p_key"), F.col("lsn").alias("_p_lsn"), F.col("ts_ms").alias("_p_ts_ms"))
    held = (records.rows_named(tables.read(spark, cfg, spec.silver), key, named, hint)
            if tables.exists(spark, cfg, spec.silver) else None)
    rows = change_rows.join(positions, change_rows[key] == F.col("_p_key"), "left")
    if held is not None:
        rows = rows.join(held.select(F.col(key).alias("_s_key"), *[_as_text(held, c).alias(f"_s_{c}")
                                                                   for c in columns if c != key]),
                         F.col(key) == F.col("_s_key"), "left")
    else:
        rows = rows.select("*", F.lit(None).cast("string").alias("_s_key"),
                           *[F.lit(None).cast("string").alias(f"_s_{c}") for c in columns if c != key])
    stale = F.col("_p_key").isNotNull() & (_position(F.col("_lsn"), F.col("_ts_ms"))
                                           <= _position(F.col("_p_lsn"), F.col("_p_ts_ms")))
    unknown_delete = (F.col("_op") == "delete") & F.col("_s_key").isNull()
    rows = rows.withColumns({"_stale": stale, "_unknown_delete": ~stale & unknown_delete})
    got = rows.agg(F.count(F.lit(1)).alias("n"), F.count_if("_stale").alias("stale"),
                   F.count_if("_unknown_delete").alias("unknown")).first()  # aggregate
    n, n_stale, n_unknown = int(got["n"]), int(got["stale"]), int(got["unknown"])
    counts = {"rows_in": 0, "landed": 0, "quarantined": 0, "silver_rows": 0, "suite_quarantined": 0,
              "stale": n_stale, "unknown_deletes": n_unknown}
    pub = None
    if n - n_stale - n_unknown > 0:
        fresh = rows.where(~F.col("_stale") & ~F.col("_unknown_delete"))
        values = []
        for c in columns:
            if c == key:
                values.append(F.col(key))
                continue
            value = F.when(F.array_contains(F.col("_unchanged"), c), F.col(f"_s_{c}")).otherwise(F.col(f"`{c}`"))
            if c == "active" and "deleted_at" not in columns:  # a price has no deleted_at: archived
                value = F.when(F.col("_op") == "delete", F.lit("false")).otherwise(value)
            values.append(value.alias(c))
        arrived = fresh.select(
            *values, F.col("_event").alias("_raw"), F.lit(False).alias("_malformed"),
            F.lit(run.run_id).alias("_run_id"), F.lit(source).alias("_source"),
            F.col("_event_offset").alias("_source_file"), F.current_timestamp().alias("_ingested_at"))
        arrived = arrived.withColumn(silver.RAW_HASH, silver.row_hash([F.col(c) for c in columns]))
        flagged = _flagged(run, spec.plural, arrived)
        landing = silver.Landing(spec=spec_id, run_id=run.run_id, input={"cdc": where})
        pub = publish(run, spec, flagged, [r.name for r in suite_rules(run, spec)], frames, landing=landing,
                      changes_only=True, one_per_key=True)
        counts.update(pub.counts)
    if n - n_stale > 0:
        _record_positions(run, spec, change_rows)
    return counts, pub


def _record_positions(run: Run, spec: EntitySpec, change_rows: DataFrame) -> None:
    """Keep, per key, the newest source position seen (a stale row's is not newer: no update)."""
    from delta.tables import DeltaTable

    spark, cfg = run.spark, run.cfg
    pos = change_rows.select(F.lit(spec.entity).alias("entity"), F.col(spec.key).alias("key"),
                             F.col("_lsn").alias("lsn"), F.col("_ts_ms").alias("ts_ms"),
                             F.lit(run.run_id).alias("run_id"))
    if not tables.exists(spark, cfg, POSITIONS):
        tables.append(spark, cfg, POSITIONS, pos)
        return
    newer = _position(F.col("s.lsn"), F.col("s.ts_ms")) > _position(F.col("t.lsn"), F.col("t.ts_ms"))
    (DeltaTable.forPath(spark, tables.table_path(cfg, POSITIONS)).alias("t")
     .merge(pos.alias("s"), "t.entity = s.entity AND t.key = s.key")
     .whenMatchedUpdateAll(condition=newer).whenNotMatchedInsertAll().execute())
