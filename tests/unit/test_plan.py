"""Planner tests on hand-made discrepancy and silver frames; expected payloads written by hand."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from pyspark.sql import functions as F

from stripe_recon import tables
from stripe_recon.errors import HeldError
from stripe_recon.ledger import Run
from stripe_recon.plan import build_corrections, plan

T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def _rows(spark, schema, rows):
    names = [f.name for f in schema.fields]
    return spark.createDataFrame([tuple(r.get(n) for n in names) for r in rows], schema)


def _det(key: str) -> str:
    return "prod_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _cid(entity, key, stripe_id, operation, payload) -> str:
    doc = json.dumps({"entity": entity, "key": key, "stripe_id": stripe_id, "operation": operation,
                      "payload": payload}, separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()


@pytest.fixture
def frames(spark):
    ip = _rows(spark, tables.SILVER_INTERNAL_PRODUCTS_SCHEMA, [
        {"product_id": "P1", "name": "Alpha", "description": "d1", "active": True,
         "metadata": {"size": "L", "color": "red"}},
        {"product_id": "P2", "name": "Beta", "active": True, "metadata": {"a": "1"}},
        {"product_id": "P3", "name": "Gone", "active": True, "deleted_at": T0},
        {"product_id": "P9", "name": "Never", "active": False},
    ])
    ipr = _rows(spark, tables.SILVER_INTERNAL_PRICES_SCHEMA, [
        {"price_id": "PR1", "product_id": "P2", "currency": "usd", "unit_amount": 1999, "interval": "month",
         "interval_count": 1, "active": True},
        {"price_id": "PR2", "product_id": "P1", "currency": "usd", "unit_amount": 1500, "interval": "month",
         "interval_count": 1, "active": True},
        {"price_id": "PR3", "product_id": "P1", "currency": "eur", "unit_amount": 500, "active": True,
         "nickname": "New"},
        {"price_id": "PR4", "product_id": "P1", "currency": "eur", "unit_amount": 700, "active": False},
        {"price_id": "PR5", "product_id": "P9", "currency": "eur", "unit_amount": 100, "active": True},
    ])
    sp = _rows(spark, tables.SILVER_STRIPE_PRODUCTS_SCHEMA, [
        {"id": "prod_s1", "name": "Alfa", "description": "d1", "active": True, "tax_code": "txcd_1",
         "metadata": {"internal_id": "P1", "old": "x", "color": "blue"}, "default_price": "price_s2",
         "created": T0},
        {"id": "prod_s1b", "name": "Alpha", "active": True, "metadata": {"internal_id": "P1"},
         "created": T0 + dt.timedelta(seconds=5)},
        {"id": "prod_s3", "name": "Gone", "active": True, "metadata": {"internal_id": "P3"}, "created": T0},
        {"id": "prod_s9", "name": "Theirs", "active": True, "metadata": {"internal_id": "X9"}, "created": T0},
    ])
    spr = _rows(spark, tables.SILVER_STRIPE_PRICES_SCHEMA, [
        {"id": "price_s2", "product": "prod_s1", "lookup_key": "PR2", "currency": "usd", "unit_amount": 999,
         "type": "recurring", "interval": "month", "interval_count": 1, "active": True, "created": T0},
        {"id": "price_s3", "product": "prod_s1", "lookup_key": "PR3", "currency": "eur", "unit_amount": 500,
         "type": "one_time", "active": True, "nickname": "Old", "created": T0},
        {"id": "price_s4", "product": "prod_s1", "lookup_key": "PR4", "currency": "eur", "unit_amount": 700,
         "type": "one_time", "active": True, "created": T0},
    ])

    def disc(entity, key, stripe_id, kind, attribute, iv, sv, owner, action):
        return {"run_id": "R1", "entity": entity, "key": key, "stripe_id": stripe_id, "kind": kind,
                "attribute": attribute, "internal_value": iv, "stripe_value": sv, "owner": owner,
                "action": action, "detected_at": T0}

    d = _rows(spark, tables.DISCREPANCIES_SCHEMA, [
        disc("product", "P1", "prod_s1", "field_mismatch", "name", "Alpha", "Alfa", "internal", "push"),
        disc("product", "P1", "prod_s1", "field_mismatch", "metadata.color", "red", "blue", "internal", "push"),
        disc("product", "P1", "prod_s1", "field_mismatch", "metadata.old", None, "x", "internal", "push"),
        disc("product", "P1", "prod_s1", "field_mismatch", "metadata.size", "L", None, "internal", "push"),
        disc("product", "P1", "prod_s1", "field_mismatch", "tax_code", None, "txcd_1", "stripe", "pull"),
        disc("product", "P1", "prod_s1b", "duplicate_in_stripe", None, None, None, None, "review"),
        disc("product", "P2", None, "missing_in_stripe", None, None, None, None, "create"),
        disc("product", "P3", "prod_s3", "field_mismatch", "active", "false", "true", "internal", "push"),
        disc("product", "X9", "prod_s9", "missing_in_internal", None, None, None, None, "review"),
        disc("price", "PR1", None, "missing_in_stripe", None, None, None, None, "create"),
        disc("price", "PR2", "price_s2", "field_mismatch", "amount", "1500", "999", "internal", "replace"),
        disc("price", "PR3", "price_s3", "field_mismatch", "nickname", "New", "Old", "internal", "push"),
        disc("price", "PR4", "price_s4", "field_mismatch", "active", "false", "true", "internal", "push"),
        disc("price", "PR5", None, "missing_in_stripe", None, None, None, None, "create"),
    ])
    return d, ip, ipr, sp, spr


EXPECTED = {
    ("create_product", "P2"): (0, _det("P2"),
                               '{"id":"%s","metadata":{"a":"1","internal_id":"P2"},"name":"Beta"}'.replace("%s", _det("P2"))),
    ("update_product", "P1"): (0, "prod_s1", '{"metadata":{"color":"red","old":"","size":"L"},"name":"Alpha"}'),
    ("archive_product", "P3"): (0, "prod_s3", '{"active":false}'),
    ("create_price", "PR1"): (1, None, '{"currency":"usd","lookup_key":"PR1","product":"%s",'
                                       '"recurring":{"interval":"month","interval_count":1},"unit_amount":1999}'
                              .replace("%s", _det("P2"))),
    ("replace_price", "PR2"): (1, "price_s2",
                               '{"archive":"price_s2","create":{"currency":"usd","lookup_key":"PR2",'
                               '"product":"prod_s1","recurring":{"interval":"month","interval_count":1},'
                               '"transfer_lookup_key":true,"unit_amount":1500},"default_price_of":"prod_s1"}'),
    ("update_price", "PR3"): (1, "price_s3", '{"nickname":"New"}'),
    ("archive_price", "PR4"): (1, "price_s4", '{"active":false}'),
}


def test_build_corrections_exact_rows(spark, cfg, frames):
    d, ip, ipr, sp, spr = frames
    out = build_corrections(d, ip, ipr, sp, spr, cfg, "RUN")
    got = {(r.operation, r.key): r for r in out.corrections.collect()}
    assert set(got) == set(EXPECTED)
    for k, (seq, sid, payload) in EXPECTED.items():
        r = got[k]
        assert (r.seq, r.stripe_id, r.payload) == (seq, sid, payload), k
        assert r.correction_id == _cid("product" if "product" in k[0] else "price", k[1], sid, k[0], payload)
        assert r.idempotency_key == "recon-" + r.correction_id
    # the price of a product being created depends on that create; nothing else depends
    assert got[("create_price", "PR1")].depends_on == got[("create_product", "P2")].correction_id
    assert {k for k, r in got.items() if r.depends_on} == {("create_price", "PR1")}
    # observed holds the Stripe values at detection, nulls kept
    obs = json.loads(got[("update_product", "P1")].observed)
    assert obs["name"] == "Alfa" and obs["metadata"] == {"color": "blue", "internal_id": "P1", "old": "x"}
    assert "description" in obs and obs["tax_code"] == "txcd_1"
    assert json.loads(got[("update_price", "PR3")].observed)["nickname"] == "Old"
    assert got[("create_product", "P2")].observed is None

    pulls = [(r.entity, r.key, r.attribute, r.current_value, r.new_value, r.stripe_id)
             for r in out.internal.collect()]
    assert pulls == [("product", "P1", "tax_code", None, "txcd_1", "prod_s1")]
    assert [(r.key, r.reason) for r in out.unplannable.collect()] == [("PR5", "product_not_in_stripe")]


def test_empty_internal_never_archives(spark, cfg, frames):
    d, ip, ipr, sp, spr = frames
    out = build_corrections(d, ip, ipr, sp, spr, cfg, "RUN", allow_archives=False)
    ops = sorted(r.operation for r in out.corrections.collect())
    assert "archive_product" not in ops and "archive_price" not in ops
    assert len(ops) == len(EXPECTED) - 2


def test_missing_in_internal_archive_action(spark, cfg, frames):
    d, ip, ipr, sp, spr = frames
    d2 = d.withColumn("action", __import__("pyspark.sql.functions", fromlist=["x"]).expr(
        "CASE WHEN kind = 'missing_in_internal' THEN 'archive' ELSE action END"))
    out = build_corrections(d2, ip, ipr, sp, spr, cfg, "RUN")
    rows = [(r.operation, r.key, r.stripe_id, r.payload) for r in out.corrections.collect()
            if r.key == "X9"]
    assert rows == [("archive_product", "X9", "prod_s9", '{"active":false}')]


def _write_inputs(spark, cfg, frames, detect_run="R1"):
    d, ip, ipr, sp, spr = frames
    for name, df in [(tables.GOLD_DISCREPANCIES, d), (tables.SILVER_INTERNAL_PRODUCTS, ip),
                     (tables.SILVER_INTERNAL_PRICES, ipr), (tables.SILVER_STRIPE_PRODUCTS, sp),
                     (tables.SILVER_STRIPE_PRICES, spr)]:
        tables.overwrite(spark, cfg, name, df)
    r = Run.new(spark, cfg, detect_run)
    with r.stage("detect"):
        pass


def test_plan_stage_writes_outbox_and_replans_same_ids(spark, make_cfg, frames):
    cfg = make_cfg("guard.max_change_ratio=1", "guard.max_archive_ratio=1")
    _write_inputs(spark, cfg, frames)
    s1 = plan(Run.new(spark, cfg, "R2"))
    assert s1["status"] == "planned" and s1["corrections"] == 7 and s1["source_run_id"] == "R1"
    corr = tables.read(spark, cfg, tables.GOLD_CORRECTIONS)
    rows = {(r.operation, r.key): r for r in corr.collect()}
    assert {k: (r.seq, r.stripe_id, r.payload) for k, r in rows.items()} == EXPECTED
    assert {r.status for r in rows.values()} == {"planned"}
    ids = sorted(r.correction_id for r in rows.values())
    assert s1["plan_hash"] == hashlib.sha256(",".join(ids).encode()).hexdigest()
    internal = tables.read(spark, cfg, tables.GOLD_INTERNAL_CORRECTIONS).collect()
    assert [(r.key, r.attribute, r.new_value) for r in internal] == [("P1", "tax_code", "txcd_1")]
    q = tables.read(spark, cfg, tables.GOLD_QUARANTINE).collect()
    assert [(r.stage, r.key, r.reasons) for r in q] == [("plan", "PR5", ["product_not_in_stripe"])]

    # an applied correction stays applied when re-planned; the ids and the hash do not change
    applied_id = rows[("update_price", "PR3")].correction_id
    tables.merge_rows(spark, cfg, tables.GOLD_CORRECTIONS,
                      spark.createDataFrame([(applied_id, "applied")], "correction_id string, status string"),
                      ["correction_id"], update={"status": "s.status"}, insert=False)
    s2 = plan(Run.new(spark, cfg, "R3"))
    assert s2["plan_hash"] == s1["plan_hash"]
    corr2 = {r.correction_id: r for r in tables.read(spark, cfg, tables.GOLD_CORRECTIONS).collect()}
    assert sorted(corr2) == ids
    assert corr2[applied_id].status == "applied"
    assert {r.status for cid, r in corr2.items() if cid != applied_id} == {"planned"}
    plans = tables.read(spark, cfg, tables.GOLD_PLANS).orderBy("run_id").collect()
    assert [(p.run_id, p.status, p.plan_hash) for p in plans] == [("R2", "planned", s1["plan_hash"]),
                                                                  ("R3", "planned", s1["plan_hash"])]


def _detect_row(spark, cfg, run_id: str, copy_from: str | None = None) -> None:
    """A detect ledger row as detect writes it (the silver versions read, the config spec); with
    ``copy_from``, that run's discrepancy rows under this run id (what a detect that keeps them does)."""
    from stripe_recon import incremental, silver

    if copy_from:
        rows = tables.read(spark, cfg, tables.GOLD_DISCREPANCIES).where(f"run_id = '{copy_from}'")
        tables.append(spark, cfg, tables.GOLD_DISCREPANCIES, rows.withColumn("run_id", F.lit(run_id)))
    r = Run.new(spark, cfg, run_id)
    with r.stage("detect") as st:
        for name in silver.SIDES:
            r.read_version(st, name)
        st.counts[incremental.SPEC_COUNT] = incremental.spec_id(spark, cfg)


def test_replan_over_unchanged_silver_restamps_the_last_plan(spark, make_cfg, frames):
    cfg = make_cfg("guard.max_change_ratio=1", "guard.max_archive_ratio=1")
    _write_inputs(spark, cfg, frames)
    _detect_row(spark, cfg, "R1")
    s1 = plan(Run.new(spark, cfg, "R1"))
    applied_id = next(r.correction_id for r in tables.read(spark, cfg, tables.GOLD_CORRECTIONS).collect()
                      if (r.operation, r.key) == ("update_price", "PR3"))
    tables.update_where(spark, cfg, tables.GOLD_CORRECTIONS, f"correction_id = '{applied_id}'",
                        {"status": "'applied'", "attempts": "1"})

    def state(run_id: str) -> dict:
        corr = {r.correction_id: {k: v for k, v in r.asDict().items() if k not in ("run_id", "updated_at")}
                for r in tables.read(spark, cfg, tables.GOLD_CORRECTIONS).collect()}
        assert {r.run_id for r in tables.read(spark, cfg, tables.GOLD_CORRECTIONS).collect()} == {run_id}
        internal = [(r.run_id, r.correction_id, r.key, r.new_value)
                    for r in tables.read(spark, cfg, tables.GOLD_INTERNAL_CORRECTIONS).collect()]
        q = sorted((r.key, tuple(r.reasons)) for r in tables.read(spark, cfg, tables.GOLD_QUARANTINE)
                   .where(f"run_id = '{run_id}' AND stage = 'plan'").collect())
        return {"corrections": corr, "internal": internal, "quarantine": q}

    # nothing moved: the last plan's corrections are restamped, not planned again
    _detect_row(spark, cfg, "R2", copy_from="R1")
    s2 = plan(Run.new(spark, cfg, "R2"))
    message = tables.read(spark, cfg, tables.GOLD_RUNS).where("run_id = 'R2' AND stage = 'plan'").first().message
    assert message == "silver unchanged since plan run R1: its corrections stand (none planned again)"
    assert {k: v for k, v in s2.items() if k != "source_run_id"} == {k: v for k, v in s1.items() if k != "source_run_id"}
    restamped = state("R2")
    assert restamped["corrections"][applied_id]["status"] == "applied"
    assert {c["status"] for i, c in restamped["corrections"].items() if i != applied_id} == {"planned"}
    assert restamped["quarantine"] == [("PR5", ("product_not_in_stripe",))]

    # the referee: the same plan computed (reuse off) leaves exactly the same rows
    _detect_row(spark, cfg, "R3", copy_from="R1")
    s3 = plan(Run.new(spark, make_cfg("guard.max_change_ratio=1", "guard.max_archive_ratio=1",
                                      "detect.reuse_unchanged=false"), "R3"))
    computed = state("R3")
    assert s3["plan_hash"] == s1["plan_hash"]
    assert computed["corrections"] == restamped["corrections"]
    assert [i[1:] for i in computed["internal"]] == [i[1:] for i in restamped["internal"]]
    assert {i[0] for i in restamped["internal"]} == {"R2"} and {i[0] for i in computed["internal"]} == {"R3"}
    assert computed["quarantine"] == restamped["quarantine"]

    # a silver table moved: the keys its change feed names (the four internal products and their five
    # prices) are planned again, the same rows since nothing in them changed
    tables.overwrite(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS, tables.read(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS))
    _detect_row(spark, cfg, "R4", copy_from="R1")
    plan(Run.new(spark, cfg, "R4"))
    message = tables.read(spark, cfg, tables.GOLD_RUNS).where("run_id = 'R4' AND stage = 'plan'").first().message
    assert message == "incremental from plan run R3: 9 keys planned again, its other corrections carried"
    assert state("R4")["corrections"] == restamped["corrections"]


def test_plan_held_by_guard(spark, cfg, frames):
    _write_inputs(spark, cfg, frames)  # default guard: 7 writes on a catalog of 9 is far above 5%
    with pytest.raises(HeldError) as exc:
        plan(Run.new(spark, cfg, "R2"))
    msg = str(exc.value)
    plan_row = tables.read(spark, cfg, tables.GOLD_PLANS).collect()[0]
    assert plan_row.status == "held" and f"recon push --approve {plan_row.plan_hash}" in msg
    assert any("max_change_ratio" in r for r in plan_row.reasons)
    assert any("max_archive_ratio" in r for r in plan_row.reasons)
    statuses = {r.status for r in tables.read(spark, cfg, tables.GOLD_CORRECTIONS).collect()}
    assert statuses == {"held"}
    ledger = tables.read(spark, cfg, tables.GOLD_RUNS).filter("stage = 'plan'").collect()
    assert [r.status for r in ledger] == ["held"]


def test_quarantined_keys_get_no_correction(spark, make_cfg):
    """detect then plan over silver whose landings rejected P_DUP, PRQ (internal) and prod_s, price_s,
    prod_m (Stripe; see test_detect._quarantined_catalog): only PM (create) and PX (archive) are
    planned. Before: also archive P_DUP and PRQ, create P_S and PRS, replace PRD1 and PRM."""
    from stripe_recon.detect import detect

    from .test_detect import _quarantined_catalog

    cfg = make_cfg("detect.missing_in_internal_action=archive", "guard.max_change_ratio=1", "guard.max_archive_ratio=1")
    _quarantined_catalog(spark, cfg, False, {"internal": "L_INT", "stripe": "L_STR"})
    detect(Run.new(spark, cfg, "R1"))
    summary = plan(Run.new(spark, cfg, "R2"))
    assert summary["status"] == "planned"
    corr = tables.read(spark, cfg, tables.GOLD_CORRECTIONS)
    assert sorted((r.entity, r.key, r.stripe_id, r.operation, r.payload) for r in corr.collect()) == [
        ("product", "PM", _det("PM"), "create_product",
         json.dumps({"id": _det("PM"), "metadata": {"internal_id": "PM"}, "name": "Widget"}, separators=(",", ":"))),
        ("product", "PX", "prod_x", "archive_product", '{"active":false}'),
    ]
