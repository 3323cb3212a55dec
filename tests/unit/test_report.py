"""report: JSON counts/details and the self-contained HTML page, from a small detected run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stripe_recon.detect import detect
from stripe_recon.errors import InputError
from stripe_recon.ledger import Run
from stripe_recon.report import render_report

from .silver_rows import iprice, iprod, sprice, sprod, write_silver

EXPECTED_DETAILS = [
    {"entity": "price", "key": "Q1", "stripe_id": "price_1", "kind": "field_mismatch", "attribute": "amount",
     "internal_value": "1000", "stripe_value": "1200", "owner": "internal", "action": "replace"},
    {"entity": "product", "key": "A", "stripe_id": "prod_a", "kind": "field_mismatch", "attribute": "metadata.color",
     "internal_value": "red", "stripe_value": None, "owner": "internal", "action": "push"},
    {"entity": "product", "key": "A", "stripe_id": "prod_a", "kind": "field_mismatch", "attribute": "name",
     "internal_value": "<b>Tea</b>", "stripe_value": "Tea", "owner": "internal", "action": "push"},
    {"entity": "product", "key": "B", "stripe_id": None, "kind": "missing_in_stripe", "attribute": None,
     "internal_value": None, "stripe_value": None, "owner": "internal", "action": "create"},
    {"entity": "product", "key": "Z", "stripe_id": "prod_z", "kind": "missing_in_internal", "attribute": None,
     "internal_value": None, "stripe_value": None, "owner": None, "action": "review"},
]


@pytest.fixture
def detected(spark, cfg):
    write_silver(
        spark, cfg,
        [iprod("A", name="<b>Tea</b>", metadata={"color": "red"}), iprod("B")],
        [sprod("prod_a", "A", name="Tea"), sprod("prod_z", "Z")],
        [iprice("Q1", "A", unit_amount=1000)],
        [sprice("price_1", "Q1", "prod_a", unit_amount=1200)],
    )
    run = Run.new(spark, cfg, "20260101T000000000Z-aaaaaa")
    detect(run)
    return run


def test_json_counts_and_details(spark, cfg, detected):
    rep = json.loads(render_report(spark, cfg, "latest", "json", details=True))
    assert rep["run_id"] == detected.run_id
    assert rep["summary"]["discrepancies"] == 5
    assert rep["summary"]["by_kind"] == {
        "missing_in_stripe": 1, "missing_in_internal": 1, "field_mismatch": 3,
        "duplicate_in_stripe": 0, "price_product_mismatch": 0,
    }
    assert rep["summary"]["by_attribute"] == {"price.amount": 1, "product.metadata.color": 1, "product.name": 1}
    assert rep["summary"]["by_action"] == {"create": 1, "push": 2, "replace": 1, "review": 1}
    assert sorted(rep["discrepancies"], key=lambda r: (r["entity"], r["key"], r["attribute"] or "")) == EXPECTED_DETAILS
    assert [s["stage"] for s in rep["stages"]] == ["detect"]
    assert rep["versions_read"]["silver.stripe_prices"] == 0
    assert rep["validation"]["data_docs"] is None
    assert {k: len(v) for k, v in rep["samples"].items()} == {"missing_in_stripe": 1, "missing_in_internal": 1, "field_mismatch": 3}
    # without --details there is no row list
    assert "discrepancies" not in json.loads(render_report(spark, cfg, detected.run_id, "json"))


def test_html_is_self_contained_and_links_data_docs(spark, cfg, detected):
    docs = Path(cfg.storage.root) / "runs" / detected.run_id / "data_docs" / "index.html"
    docs.parent.mkdir(parents=True)
    docs.write_text("<html></html>")
    path = render_report(spark, cfg, "latest", "html")
    assert path == f"{cfg.storage.root}/reports/{detected.run_id}/report.html"
    page = Path(path).read_text()
    assert "<svg" in page and "<style>" in page
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "&lt;b&gt;Tea&lt;/b&gt;" in page and "<b>Tea</b>" not in page  # values escaped
    assert f"href='../../runs/{detected.run_id}/data_docs/index.html'" in page  # relative: works wherever the root is
    assert "silver.internal_products@v0" in page
    assert "<span class=total id=total-discrepancies>5</span>" in page


def test_unknown_or_absent_run_is_a_clear_error(spark, cfg):
    with pytest.raises(InputError, match="no detect run found.*recon detect"):
        render_report(spark, cfg, "latest", "json")


def test_cli_report_json_details_prints_every_discrepancy(spark, cfg, detected, capsys):
    from stripe_recon.cli import main

    conf = Path(__file__).resolve().parents[2] / "conf" / "local.yaml"
    code = main(["report", "--config", str(conf), "--set", f"storage.root={cfg.storage.root}",
                 "--run-id", detected.run_id, "--format", "json", "--details"])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert sorted(rep["discrepancies"], key=lambda r: (r["entity"], r["key"], r["attribute"] or "")) == EXPECTED_DETAILS
