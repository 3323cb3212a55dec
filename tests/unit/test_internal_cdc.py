"""`recon land internal --cdc PATH`: Debezium change events applied to silver, exact rows.

Inserts, updates, deletes (products soft-deleted, prices archived), a tombstone, a malformed row
(quarantined), a replay of the same file (nothing changes, no commit), an older out-of-order event
(stale), an unavailable TOASTed value (silver's value kept), and the change feed holding only the
rows that really changed."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from stripe_recon import tables
from stripe_recon.cli import main

TS0 = 1704103200000  # 2024-01-01T10:00:00Z
CONF = "conf/local.yaml"


def _ev(op: str, table: str, row: dict, lsn: int) -> str:
    return json.dumps({"op": op, "before": row if op == "d" else None, "after": None if op == "d" else row,
                       "source": {"table": table, "lsn": lsn, "ts_ms": TS0 + lsn}})


def _prod(pid: str, name: str | None, **more) -> dict:
    return {"product_id": pid, "name": name, "active": True, **more}


def _recon(capsys, root, *argv: str) -> dict:
    code = main([*argv, "--json", "--config", CONF, "--set", f"storage.root={root}"])
    cap = capsys.readouterr()
    out = cap.out
    assert code == 0, cap.err
    return json.loads(out[out.index("{"):])


def _products(spark, cfg):
    return sorted((r.product_id, r.name, r.description, r.active, r.deleted_at, r._source)
                  for r in tables.read(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS).collect())


def _prices(spark, cfg):
    return sorted((r.price_id, r.product_id, r.currency, r.amount, r.unit_amount, r.active)
                  for r in tables.read(spark, cfg, tables.SILVER_INTERNAL_PRICES).collect())


def test_cdc_files_to_silver(spark, cfg, tmp_path, capsys):
    root = cfg.storage.root
    price = {"price_id": "pr1", "product_id": "p1", "currency": "usd", "amount": "19.99", "active": True}
    first = tmp_path / "b1.jsonl"
    first.write_text("\n".join([
        _ev("c", "products", _prod("p1", "A"), 10),
        _ev("c", "products", _prod("p2", "B"), 11),
        _ev("c", "prices", price, 12),
        _ev("u", "products", _prod("p1", "A2"), 13),
        _ev("c", "products", _prod("p3", "C", active="maybe"), 14),  # quarantined: wrong_type:active
        "null",  # a tombstone
    ]) + "\n")
    got = _recon(capsys, root, "land", "internal", "--cdc", str(first))
    assert (got["rows_in"], got["landed"], got["quarantined"], got["skipped"]) == (6, 3, 1, 2)
    assert got["products"]["superseded"] == 1 and got["products"]["stale"] == 0
    assert _products(spark, cfg) == [("p1", "A2", None, True, None, "internal:cdc_file"),
                                     ("p2", "B", None, True, None, "internal:cdc_file")]
    assert _prices(spark, cfg) == [("pr1", "p1", "usd", Decimal("19.99"), 1999, True)]
    q = tables.read(spark, cfg, tables.GOLD_QUARANTINE).where(f"run_id = '{got['run_id']}'").collect()
    assert [(r.entity, r.key, r.reasons) for r in q] == [("product", "p3", ["wrong_type:active"])]
    versions = {t: tables.version(spark, cfg, t) for t in (tables.SILVER_INTERNAL_PRODUCTS, tables.SILVER_INTERNAL_PRICES)}

    # the same file again: every change is stale, silver is not written (the malformed event is
    # quarantined by the decoding again: it never had a position)
    again = _recon(capsys, root, "land", "internal", "--cdc", str(first))
    assert (again["rows_in"], again["landed"], again["quarantined"], again["skipped"]) == (6, 0, 1, 5)
    assert again["products"]["stale"] == 2 and again["prices"]["stale"] == 1
    assert {t: tables.version(spark, cfg, t) for t in versions} == versions
    assert _products(spark, cfg)[0][1] == "A2"

    second = tmp_path / "b2.jsonl"
    second.write_text("\n".join([
        _ev("d", "products", {"product_id": "p2"}, 20),
        _ev("u", "products", _prod("p1", "__debezium_unavailable_value", description="D"), 21),
        _ev("d", "prices", {"price_id": "pr1"}, 22),
        _ev("d", "products", {"product_id": "p9"}, 23),  # never held: skipped
    ]) + "\n")
    third = tmp_path / "b3.jsonl"  # an old event arriving late: stale
    third.write_text(_ev("u", "products", _prod("p1", "OLD"), 5) + "\n")
    got = _recon(capsys, root, "land", "internal", "--cdc", str(second))
    assert (got["rows_in"], got["landed"], got["products"]["unknown_deletes"]) == (4, 3, 1)
    late = _recon(capsys, root, "land", "internal", "--cdc", str(third))
    assert (late["landed"], late["products"]["stale"]) == (0, 1)

    deleted = dt.datetime(2024, 1, 1, 10, 0, 0, 20000)
    assert _products(spark, cfg) == [("p1", "A2", "D", True, None, "internal:cdc_file"),
                                     ("p2", "B", None, True, deleted, "internal:cdc_file")]
    assert _prices(spark, cfg) == [("pr1", "p1", "usd", Decimal("19.99"), 1999, False)]

    # the change feed of the products MERGE holds p1 and p2 only (pre/post images), nothing else
    path = tables.table_path(cfg, tables.SILVER_INTERNAL_PRODUCTS)
    feed = (spark.read.format("delta").option("readChangeFeed", "true")
            .option("startingVersion", versions[tables.SILVER_INTERNAL_PRODUCTS] + 1).load(path))
    assert sorted((r.product_id, r._change_type) for r in feed.collect()) == [
        ("p1", "update_postimage"), ("p1", "update_preimage"), ("p2", "update_postimage"), ("p2", "update_preimage")]


def test_change_landing_keeps_earlier_quarantine(spark, cfg, tmp_path, capsys):
    """A key rejected by the snapshot landing stays unknown after change events for other keys
    (its run is carried in the commit's quarantine_runs), so detect never reads it as absent."""
    from stripe_recon import silver, unknown

    root = cfg.storage.root
    products, prices = tmp_path / "products.csv", tmp_path / "prices.csv"
    products.write_text("product_id,name,active\np1,A,true\np3,C,maybe\n")
    prices.write_text("price_id,product_id,currency,amount\npr1,p1,usd,1.00\n")
    snap = _recon(capsys, root, "land", "internal", "--products", str(products), "--prices", str(prices))
    assert snap["quarantined"] == 1
    events = tmp_path / "e.jsonl"
    events.write_text(_ev("u", "products", _prod("p1", "A2"), 30) + "\n")
    cdc = _recon(capsys, root, "land", "internal", "--cdc", str(events))
    assert cdc["landed"] == 1
    commit = tables.commit_metadata(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS)
    assert commit["landing"]["run_id"] == cdc["run_id"] and commit[unknown.QUARANTINE_RUNS] == [snap["run_id"]]
    # the columns the snapshot's input had not are still not the internal side's to compare
    assert silver.absent_columns(commit) == ["deleted_at", "description", "metadata", "tax_code", "updated_at"]
    found = unknown.quarantined_keys(spark, cfg, {tables.SILVER_INTERNAL_PRODUCTS: commit})
    assert [(r.entity, r.key) for r in found.collect()] == [("product", "p3")]
