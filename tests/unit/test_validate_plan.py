"""Plan gate (validate_plan): hand-made gold.corrections rows (CORRECTIONS_SCHEMA), one bad kind each.

A plan is one batch: any rejected correction holds the gate (HeldError, exit 3, nothing pushed);
the rejected rows are quarantined with their reasons and set to status ``held`` in the outbox.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stripe_recon import tables
from stripe_recon.errors import HeldError
from stripe_recon.ledger import Run
from stripe_recon.validate import validate_plan

TS = dt.datetime(2026, 1, 1, 12, 0, 0)
PLAN_RUN = "20260101T120000000Z-plan02"
OLD_RUN = "20251201T120000000Z-plan01"


@pytest.fixture
def cfg(make_cfg):
    """Data Docs off (HTML rendering is the slowest part on a busy machine); docs tests turn them on."""
    return make_cfg("validation.data_docs=false")


def corr(cid, operation="update_product", payload=None, entity=None, key="P1", run_id=PLAN_RUN, status="planned",
         idem=None) -> dict:
    entity = entity or ("price" if operation and "price" in operation else "product")
    if not isinstance(payload, str):
        payload = json.dumps(payload if payload is not None else {"name": "New name"})
    return dict(correction_id=cid, run_id=run_id, plan_hash="hash1", seq=0 if entity == "product" else 1,
                entity=entity, key=key, stripe_id=f"stripe_{cid}", operation=operation, payload=payload,
                observed="{}", idempotency_key=idem or f"idem-{cid}", status=status, attempts=0,
                created_at=TS, updated_at=TS)


def seed(spark, cfg, rows):
    # nullable copy of the contract schema: the gate must catch a null correction_id too
    schema = T.StructType([T.StructField(f.name, f.dataType, True) for f in tables.CORRECTIONS_SCHEMA.fields])
    data = [tuple(r.get(f.name) for f in schema.fields) for r in rows]
    tables.overwrite(spark, cfg, tables.GOLD_CORRECTIONS, spark.createDataFrame(data, schema))


def outbox(spark, cfg):
    return {r["correction_id"]: (r["status"], r["last_error"])
            for r in tables.read(spark, cfg, tables.GOLD_CORRECTIONS).collect()}


def quarantined(spark, cfg, run_id):
    rows = (tables.read(spark, cfg, tables.GOLD_QUARANTINE).filter(F.col("run_id") == run_id)
            .select("stage", "source", "entity", "key", "reasons").collect())
    out: dict = {}
    for r in rows:
        assert (r["stage"], r["source"], r["entity"]) == ("validate", "plan", "correction")
        out.setdefault(r["key"], []).append(sorted(r["reasons"]))
    return out


def ledger(spark, cfg, run_id):
    rows = tables.read(spark, cfg, tables.GOLD_RUNS).filter(
        (F.col("run_id") == run_id) & (F.col("stage") == "validate_plan")).collect()
    assert len(rows) == 1
    return rows[0]


GOOD = [
    corr("c1", "update_product", {"name": "Widget", "metadata": {"color": "blue"}}),
    corr("c2", "create_product", {"id": "prod_P2", "name": "Gadget", "metadata": {"internal_id": "P2"}}, key="P2"),
    corr("c3", "archive_product", {"active": False}, key="P3"),
    corr("c4", "create_price", {"product": "prod_P2", "currency": "usd", "unit_amount": 1999,
                                "recurring": {"interval": "month", "interval_count": 1}, "lookup_key": "PR4"}),
    corr("c5", "replace_price", {"product": "prod_P2", "currency": "usd", "unit_amount": 2999,
                                 "lookup_key": "PR5", "transfer_lookup_key": True}),
    corr("c6", "archive_price", {"active": False}),
    corr("c7", "update_price", {"nickname": "Monthly", "active": True}),
]


def test_clean_plan_passes_and_docs_list_it(spark, make_cfg):
    cfg = make_cfg("validation.data_docs=true")
    run = Run.new(spark, cfg)
    # an older plan's leftover rows (and an already applied row) are not this plan's business
    seed(spark, cfg, GOOD + [corr("old", "delete_everything", run_id=OLD_RUN),
                             corr("done", "delete_everything", status="applied")])
    out = validate_plan(run)
    assert out["status"] == "ok" and out["plan_run_id"] == PLAN_RUN
    assert (out["rows_in"], out["valid"], out["quarantined"]) == (7, 7, 0)
    assert out["expectations_failed"] == {"error": 0, "warn": 0}
    assert {v[0] for v in outbox(spark, cfg).values()} == {"planned", "applied"}
    row = ledger(spark, cfg, run.run_id)
    assert row["status"] == "ok" and row["counts"]["corrections.rows_in"] == 7
    index = Path(out["data_docs"])
    assert re.search(rf"validations/corrections/{re.escape(run.run_id)}/[^/]+/[^/'\"]+\.html", index.read_text())


BAD = [
    # (row, reasons): one broken rule each; the row's correction_id names it
    (corr("unknown_op", "delete_product", {"name": "x"}), ["operation_not_allowed"]),
    (corr("null_op", None, {"name": "x"}, entity="product"), ["missing_operation"]),
    (corr("tax_create", "create_product", {"name": "x", "tax_code": ""}), ["stripe_owned_attribute"]),
    (corr("price_amount", "update_price", {"unit_amount": 2999}), ["immutable_price_field"]),
    (corr("price_recurring", "update_price", {"recurring": {"interval": "year"}}), ["immutable_price_field"]),
    (corr("price_cur_prod", "update_price", {"currency": "eur", "product": "prod_9"}), ["immutable_price_field"]),
    (corr("price_tiers", "update_price", {"tiers_mode": "graduated"}), ["immutable_price_field"]),
    (corr("price_transform", "update_price", {"transform_quantity": {"divide_by": 2}}), ["immutable_price_field"]),
    (corr("bad_json", "update_product", "{not json"), ["payload_not_json_object"]),
    (corr("json_array", "update_product", "[1, 2]"), ["payload_not_json_object"]),
    (corr("customer", "update_product", {"name": "x"}, entity="customer"), ["unknown_entity"]),
    (corr(None, "update_product", {"name": "x"}), ["null_key"]),
    (corr("two", "update_price", {"unit_amount": 1, "tax_code": "x"}, entity="product"),
     ["immutable_price_field", "stripe_owned_attribute"]),
]


def test_plan_touching_a_stripe_owned_attribute_is_held(spark, cfg, run):
    bad = corr("tax", "update_product", {"name": "x", "tax_code": "txcd_10000000"})
    seed(spark, cfg, GOOD + [bad])
    with pytest.raises(HeldError) as exc:
        validate_plan(run)
    msg = str(exc.value)
    assert "validate_plan held" in msg and "stripe_owned_attribute" in msg and "recon plan" in msg
    assert "Nothing downstream ran" in msg
    assert quarantined(spark, cfg, run.run_id) == {"tax": [["stripe_owned_attribute"]]}
    box = outbox(spark, cfg)
    assert box["tax"] == ("held", "validate_plan: stripe_owned_attribute")
    assert all(box[g["correction_id"]] == ("planned", None) for g in GOOD)
    row = ledger(spark, cfg, run.run_id)
    assert row["status"] == "held"
    c = row["counts"]
    assert (c["rows_in"], c["valid"], c["quarantined"]) == (8, 7, 1)


def test_each_plan_rule_quarantines_its_rows_and_holds(spark, cfg, run):
    seed(spark, cfg, GOOD + [r for r, _ in BAD])
    with pytest.raises(HeldError):
        validate_plan(run)
    assert quarantined(spark, cfg, run.run_id) == {r["correction_id"]: [reasons] for r, reasons in BAD}
    box = outbox(spark, cfg)
    assert {k: v[0] for k, v in box.items() if k is not None} == {
        **{g["correction_id"]: "planned" for g in GOOD},
        **{r["correction_id"]: "held" for r, _ in BAD if r["correction_id"] is not None}}
    assert box["two"][1] == "validate_plan: stripe_owned_attribute, immutable_price_field"  # suite order
    c = ledger(spark, cfg, run.run_id)["counts"]
    assert (c["rows_in"], c["valid"], c["quarantined"]) == (len(GOOD) + len(BAD), len(GOOD), len(BAD))


def test_one_correction_per_idempotency_key(spark, cfg, run):
    rows = GOOD + [corr("d1", "archive_price", {"active": False}, idem="same"),
                   corr("d2", "archive_price", {"active": False}, idem="same")]
    nokey = {**corr("d3", "archive_price", {"active": False}), "idempotency_key": None}
    seed(spark, cfg, rows + [nokey])
    with pytest.raises(HeldError):
        validate_plan(run)
    assert quarantined(spark, cfg, run.run_id) == {
        "d1": [["duplicate_idempotency_key"]], "d2": [["duplicate_idempotency_key"]], "d3": [["missing_idempotency_key"]],
    }
    assert {k: v[0] for k, v in outbox(spark, cfg).items() if k.startswith("d")} == {"d1": "held", "d2": "held", "d3": "held"}


def test_ownership_comes_from_config(spark, make_cfg):
    """metadata.owners and a price attribute given to Stripe block corrections that write them."""
    cfg = make_cfg("metadata.owners={promo_*: stripe, legacy: stripe}", "attributes.price.interval.owner=stripe",
                   "attributes.product.tax_code.owner=internal", "validation.data_docs=false")
    run = Run.new(spark, cfg)
    seed(spark, cfg, [
        corr("ok_tax", "update_product", {"tax_code": "txcd_10000000"}),        # internal owns tax_code here
        corr("ok_meta", "update_product", {"metadata": {"promotion": "x"}}),    # not promo_ prefix
        corr("promo", "update_product", {"metadata": {"promo_code": "x"}}),
        corr("legacy", "update_product", {"metadata": {"legacy": ""}}),
        corr("interval", "create_price", {"currency": "usd", "unit_amount": 100, "recurring": {"interval": "month"}}),
    ])
    with pytest.raises(HeldError, match="stripe_owned_attribute"):
        validate_plan(run)
    assert quarantined(spark, cfg, run.run_id) == {
        "promo": [["stripe_owned_attribute"]], "legacy": [["stripe_owned_attribute"]],
        "interval": [["stripe_owned_attribute"]],
    }


def test_no_plan_passes_with_zero_rows(spark, cfg, run):
    out = validate_plan(run)
    assert (out["status"], out["rows_in"], out["valid"], out["quarantined"]) == ("ok", 0, 0, 0)


def test_data_docs_are_copied_when_the_root_is_a_uri(spark, make_cfg, tmp_path):
    """A URI root (s3a:// on Glue) gets the Data Docs built locally, then copied with Hadoop's FileSystem."""
    root = tmp_path / "remote"
    cfg = make_cfg(f"storage.root=file://{root}", "validation.data_docs=true")
    run = Run.new(spark, cfg)
    seed(spark, cfg, GOOD[:2])
    out = validate_plan(run)
    assert out["data_docs"] == f"file://{root}/runs/{run.run_id}/data_docs/index.html"
    copied = root / "runs" / run.run_id / "data_docs" / "index.html"
    assert re.search(rf"validations/corrections/{re.escape(run.run_id)}/", copied.read_text())
