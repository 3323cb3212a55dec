"""Real parts end to end: rows changed in PostgreSQL -> Debezium (Kafka Connect) -> Kafka ->
``ingest_kafka`` (Structured Streaming, availableNow, checkpointed) -> bronze -> ``decode_events``.

Each phase is a new run over the same storage root and checkpoint: a run takes only what arrived
since the last, a replayed micro-batch is not appended twice. The second test goes on to silver
(``land_internal_cdc`` from Kafka) and to the discrepancies of ``detect --incremental``, each run
checked row for row against a full detect over the same silver.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from stripe_recon import tables
from stripe_recon.land.cdc_events import decode_events
from stripe_recon.land.cdc_ingest import ingest_kafka, read_events
from stripe_recon.ledger import Run

pytestmark = pytest.mark.cdc
NEEDS_KAFKA = True

PRODUCT_COLS = ["product_id", "name", "description", "active", "deleted_at", "tax_code", "metadata", "updated_at", "_op",
                "_unchanged"]
PRICE_COLS = ["price_id", "product_id", "currency", "amount", "interval", "interval_count", "active", "nickname",
              "updated_at", "_op", "_unchanged"]


def _iso_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _land(spark, cfg, stack, run_id: str):
    """One run's CDC landing up to change rows: ingest what arrived, decode, reduce."""
    run = Run.new(spark, cfg, run_id)
    ingested = ingest_kafka(run, stack.servers, stack.topic)
    changes = decode_events(read_events(run), cfg.sources.internal.cdc.tables)
    changes.flagged.cache()
    products = [tuple(r) for r in changes.changes("products").select(*PRODUCT_COLS, "_lsn", "_ts_ms").collect()]
    prices = [tuple(r) for r in changes.changes("prices").select(*PRICE_COLS, "_lsn", "_ts_ms").collect()]
    counts = changes.counts()
    quarantined = changes.quarantine_rows(run_id).count()
    changes.flagged.unpersist()
    return ingested, sorted(products), sorted(prices), counts, quarantined


def _strip(rows):
    """Rows without _lsn/_ts_ms (checked apart: they come from the database's log and clock)."""
    return [r[:-2] for r in rows]


def test_postgres_debezium_kafka_to_change_rows(spark, make_cfg, cdc_stack):
    cfg = make_cfg(f"sources.internal.cdc.kafka.servers={cdc_stack.servers}",
                   f"sources.internal.cdc.kafka.topic={cdc_stack.topic}")
    # -- run 0: takes whatever the topic already holds (earlier tests), so run 1 sees only its own
    before = ingest_kafka(Run.new(spark, cfg, "run-0"), cdc_stack.servers, cdc_stack.topic)["events"]

    # -- run 1: inserts, updates and a delete ---------------------------------------------------
    t0 = cdc_stack.now_ms()
    cdc_stack.sql("""
        INSERT INTO products VALUES
          ('p1', 'Alpha', NULL, true, NULL, NULL, '{"color": "red"}', '2024-01-01 10:00:00.123456'),
          ('p2', 'Beta', 'Second', true, NULL, 'txcd_10000000', NULL, '2024-01-01 10:00:00');
        INSERT INTO prices VALUES
          ('pr1', 'p1', 'usd', 19.99, 'month', 1, true, NULL, '2024-01-01 10:00:00'),
          ('pr2', 'p2', 'jpy', 500, NULL, NULL, true, 'One-off', '2024-01-01 10:00:00');
        UPDATE products SET name = 'Alpha 2', updated_at = '2024-01-02 00:00:00' WHERE product_id = 'p1';
        UPDATE prices SET nickname = 'Monthly' WHERE price_id = 'pr1';
        DELETE FROM products WHERE product_id = 'p2';
    """)
    t1 = cdc_stack.now_ms()
    # 2 + 2 creates, 2 updates, 1 delete and its tombstone
    cdc_stack.wait_for_records(spark, before + 8)
    ingested, products, prices, counts, quarantined = _land(spark, cfg, cdc_stack, "run-1")

    assert ingested["events"] == 8
    assert _strip(products) == [
        ("p1", "Alpha 2", None, "true", None, None, '{"color": "red"}', "2024-01-02T00:00:00.000000Z", "upsert", []),
        ("p2", None, None, None, _iso_ms(products[1][-1]), None, None, None, "delete",
         ["name", "description", "active", "tax_code", "metadata", "updated_at"]),
    ]
    assert _strip(prices) == [
        ("pr1", "p1", "usd", "19.99", "month", "1", "true", "Monthly", "2024-01-01T10:00:00.000000Z", "upsert", []),
        ("pr2", "p2", "jpy", "500.00", None, None, "true", "One-off", "2024-01-01T10:00:00.000000Z", "upsert", []),
    ]
    for row in products + prices:  # lsn from the WAL, ts_ms = the commit time on the database clock
        assert row[-2] > 0 and t0 - 1000 <= row[-1] <= t1 + 1000
    assert counts["events"] == 8 and counts["quarantined"] == quarantined == 0
    assert counts["changes"] + counts["skipped"] == counts["events"]
    assert (counts["products.rows"], counts["prices.rows"]) == (2, 2)

    # -- run 2: only what arrived since run 1 -----------------------------------------------------
    cdc_stack.sql("""
        INSERT INTO products VALUES ('p3', 'Gamma', NULL, false, NULL, NULL, '{}', '2024-01-03 00:00:00');
        UPDATE prices SET amount = 21.50, active = false WHERE price_id = 'pr1';
        DELETE FROM prices WHERE price_id = 'pr2';
    """)
    cdc_stack.wait_for_records(spark, before + 12)
    ingested, products, prices, counts, _ = _land(spark, cfg, cdc_stack, "run-2")
    assert ingested["events"] == 4
    assert counts == {**counts, "events": 4, "changes": 3, "skipped": 1, "skipped.tombstone": 1, "quarantined": 0}
    assert _strip(products) == [
        ("p3", "Gamma", None, "false", None, None, "{}", "2024-01-03T00:00:00.000000Z", "upsert", []),
    ]
    assert _strip(prices) == [
        ("pr1", "p1", "usd", "21.50", "month", "1", "false", "Monthly", "2024-01-01T10:00:00.000000Z", "upsert", []),
        ("pr2", None, None, None, None, None, None, None, None, "delete",
         ["product_id", "currency", "amount", "interval", "interval_count", "active", "nickname", "updated_at"]),
    ]

    # -- run 3: nothing new ------------------------------------------------------------------------
    assert ingest_kafka(Run.new(spark, cfg, "run-3"), cdc_stack.servers, cdc_stack.topic)["events"] == 0

    # -- run 4: a micro-batch replayed after a crash between the Delta append and the checkpoint's
    # commit (simulated by removing the commit) is skipped by Delta's txnAppId/txnVersion ----------
    commits = sorted(Path(ingested["checkpoint"], "commits").glob("[0-9]*"), key=lambda p: int(p.name))
    assert commits, "the checkpoint records committed batches"
    commits[-1].unlink()
    commits[-1].with_name(f".{commits[-1].name}.crc").unlink(missing_ok=True)
    total = tables.read(spark, cfg, tables.BRONZE_INTERNAL_CDC_EVENTS).count()
    replay = ingest_kafka(Run.new(spark, cfg, "run-4"), cdc_stack.servers, cdc_stack.topic)
    assert replay["batches"] == 1 and replay["events"] == 0
    assert tables.read(spark, cfg, tables.BRONZE_INTERNAL_CDC_EVENTS).count() == total == before + 12



STRIPE_EXPORT = [  # Stripe's side of keys q1 / qr1 (q0, q2 have none; s9 is a Stripe-only product)
    '{"id": "prod_q1", "object": "product", "active": true, "created": 1704067200, "updated": 1704067200, '
    '"name": "Q1 in Stripe", "description": null, "metadata": {"internal_id": "q1"}, "tax_code": null}',
    '{"id": "prod_s9", "object": "product", "active": true, "created": 1704067200, "updated": 1704067200, '
    '"name": "S9", "description": null, "metadata": {"internal_id": "s9"}, "tax_code": null}',
    '{"id": "price_q1", "object": "price", "active": true, "created": 1704067200, "currency": "usd", '
    '"lookup_key": "qr1", "nickname": null, "product": "prod_q1", "recurring": null, "type": "one_time", '
    '"unit_amount": 1000}',
]
MINE = ("q0", "qr0", "q1", "q2", "qr1", "s9")
ROW = ["entity", "key", "stripe_id", "kind", "attribute", "internal_value", "stripe_value", "owner", "action"]


def _sorted(rows) -> list[tuple]:
    return sorted((tuple(r) for r in rows), key=lambda t: tuple("" if v is None else str(v) for v in t))


def _rows(spark, cfg, run_id: str, *cols: str, keys=None) -> list[tuple]:
    df = tables.read(spark, cfg, tables.GOLD_DISCREPANCIES).where(F.col("run_id") == run_id)
    if keys:
        df = df.where(F.col("key").isin(*keys))
    return _sorted(df.select(*cols).collect())


def _mine(spark, cfg, run_id: str) -> list[tuple]:
    return _rows(spark, cfg, run_id, "entity", "key", "kind", "attribute", "action", keys=MINE)


def test_postgres_changes_to_silver_and_incremental_discrepancies(spark, make_cfg, tmp_path, cdc_stack):
    """`land internal --kafka` then `detect --incremental`: rows inserted, updated and deleted in
    PostgreSQL become the right silver rows and the right discrepancies in the next run, exactly
    those of a full detect over the same silver."""
    from stripe_recon.detect import detect
    from stripe_recon.land.internal_cdc import land_internal_cdc
    from stripe_recon.land.stripe_files import land_stripe_files

    export = tmp_path / "stripe"
    export.mkdir()
    (export / "objects.jsonl").write_text("\n".join(STRIPE_EXPORT) + "\n")
    cfg = make_cfg(f"sources.internal.cdc.kafka.servers={cdc_stack.servers}",
                   f"sources.internal.cdc.kafka.topic={cdc_stack.topic}", "sources.stripe.mode=files",
                   f"sources.stripe.path={export}")

    def changed(statements: str, events: int) -> None:
        seen = cdc_stack.records(spark).count()
        cdc_stack.sql(statements)
        cdc_stack.wait_for_records(spark, seen + events)

    changed("""
        INSERT INTO products VALUES ('q0', 'Q0', NULL, true, NULL, NULL, '{}', '2024-02-01 00:00:00');
        INSERT INTO prices VALUES ('qr0', 'q0', 'usd', 1.00, NULL, NULL, true, NULL, '2024-02-01 00:00:00');
    """, 2)
    first = Run.new(spark, cfg)  # the topic so far (other tests' keys too), and the Stripe side
    land_internal_cdc(first, servers=cdc_stack.servers, topic=cdc_stack.topic)
    land_stripe_files(first)
    detect(first)
    assert _mine(spark, cfg, first.run_id) == _sorted([
        ("price", "qr0", "missing_in_stripe", None, "create"), ("price", "qr1", "missing_in_internal", None, "review"),
        ("product", "q0", "missing_in_stripe", None, "create"), ("product", "q1", "missing_in_internal", None, "review"),
        ("product", "s9", "missing_in_internal", None, "review")])

    def next_run(statements: str, events: int) -> Run:
        changed(statements, events)
        run = Run.new(spark, cfg)
        land_internal_cdc(run, servers=cdc_stack.servers, topic=cdc_stack.topic)
        detect(run, incremental_run=True)
        # a full detect over the same silver (every key compared), never a base
        referee = Run.new(spark, cfg.with_overrides("detect.reuse_unchanged=false"))
        detect(referee)
        tables.delete_where(spark, cfg, tables.GOLD_RUNS, f"run_id = '{referee.run_id}'")
        message = (tables.read(spark, cfg, tables.GOLD_RUNS)
                   .where((F.col("run_id") == run.run_id) & (F.col("stage") == "detect")).first().message)
        assert "incremental from run" in message, message
        assert _rows(spark, cfg, run.run_id, *ROW) == _rows(spark, cfg, referee.run_id, *ROW)
        return run

    run = next_run("""
        INSERT INTO products VALUES
          ('q1', 'Q1', NULL, true, NULL, NULL, '{}', '2024-02-01 00:00:00'),
          ('q2', 'Q2', NULL, true, NULL, NULL, '{}', '2024-02-01 00:00:00');
        INSERT INTO prices VALUES ('qr1', 'q1', 'usd', 10.00, NULL, NULL, true, NULL, '2024-02-01 00:00:00');
    """, 3)
    silver = {r.product_id: (r.name, r.deleted_at) for r in tables.read(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS)
              .where(F.col("product_id").isin("q1", "q2")).collect()}
    assert silver == {"q1": ("Q1", None), "q2": ("Q2", None)}
    assert _mine(spark, cfg, run.run_id) == _sorted([
        ("price", "qr0", "missing_in_stripe", None, "create"), ("product", "q0", "missing_in_stripe", None, "create"),
        ("product", "q1", "field_mismatch", "name", "push"), ("product", "q2", "missing_in_stripe", None, "create"),
        ("product", "s9", "missing_in_internal", None, "review")])

    run = next_run("""
        UPDATE products SET name = 'Q1 in Stripe' WHERE product_id = 'q1';
        DELETE FROM prices WHERE price_id = 'qr0';
        DELETE FROM products WHERE product_id IN ('q0', 'q2');
    """, 7)  # an update, three deletes and their tombstones
    deleted = tables.read(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS).where(F.col("product_id") == "q2").first()
    assert deleted.deleted_at is not None
    archived = tables.read(spark, cfg, tables.SILVER_INTERNAL_PRICES).where(F.col("price_id") == "qr0").first()
    assert archived.active is False
    assert _mine(spark, cfg, run.run_id) == [("product", "s9", "missing_in_internal", None, "review")]
