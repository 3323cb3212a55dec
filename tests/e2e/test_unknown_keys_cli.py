"""Issue #16, trust under misuse: a quarantined key is unknown, not absent. Through the CLI: land both
sides, detect with ``missing_in_internal_action=archive``, plan, report (json and html)."""

from __future__ import annotations

import json
from pathlib import Path

from stripe_recon import tables
from stripe_recon.cli import main
from stripe_recon.config import load_config

REPO = Path(__file__).resolve().parents[2]
CONF = str(REPO / "conf" / "local.yaml")
T0 = 1_767_225_600


def _product(i: str, **kw) -> dict:
    return {"id": f"prod_{i}", "object": "product", "name": f"Alpha{i}", "active": True, "created": T0,
            "metadata": {"internal_id": f"P{i}"}, "livemode": False, **kw}


def _price(i: str) -> dict:
    return {"id": f"price_{i}", "object": "price", "product": f"prod_{i}", "lookup_key": f"PR{i}", "currency": "usd",
            "unit_amount": 999, "active": True, "type": "one_time", "recurring": None, "created": T0,
            "livemode": False, "metadata": {}}


def test_quarantined_keys_get_no_discrepancy_no_correction_and_are_reported(spark, tmp_path, capsys):
    root = tmp_path / "root"
    cfg = load_config(CONF, [f"storage.root={root}"], environ={})

    def recon(*args: str) -> int:
        capsys.readouterr()
        return main([*args, "--config", CONF, "--set", f"storage.root={root}",
                     "--set", "detect.missing_in_internal_action=archive",
                     "--set", "guard.max_change_ratio=1", "--set", "guard.max_archive_ratio=1",
                     "--set", "console.plain_progress_seconds=0"])

    inp = tmp_path / "in"
    inp.mkdir()
    # P2 twice: both records are quarantined (duplicate_key), and its Stripe product prod_2 exists.
    (inp / "products.csv").write_text(
        "product_id,name,active\nP1,Alpha1,true\nP2,Alpha2,true\nP2,Alpha2 again,true\nP3,Alpha3,true\nP4,Alpha4,true\n")
    (inp / "prices.csv").write_text(
        "price_id,product_id,currency,amount\n" + "".join(f"PR{i},P{i},usd,9.99\n" for i in (1, 2, 3, 4)))
    # prod_4 (P4) is quarantined at landing (active is not a boolean); its price price_4 lands.
    objs = [_product("1"), _price("1"), _product("2"), _price("2"), _product("4", active="yes"), _price("4"),
            _product("5"), _price("5")]
    (inp / "stripe.jsonl").write_text("".join(json.dumps(o) + "\n" for o in objs))

    assert recon("land", "internal", "--format", "csv", "--products", str(inp / "products.csv"),
                 "--prices", str(inp / "prices.csv")) == 0
    assert recon("land", "stripe", "--from-files", str(inp / "stripe.jsonl")) == 0
    assert recon("detect", "--run-id", "20260301T000000000Z-dddddd") == 0
    detect_line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("detect ")]
    assert " ".join(detect_line[0].split()[1:-1]) == (
        "4 discrepancies (2 missing_in_stripe, 2 missing_in_internal); 2 quarantined keys left unknown (not compared)")
    disc = tables.read(spark, cfg, tables.GOLD_DISCREPANCIES).where("run_id = '20260301T000000000Z-dddddd'")
    # Before: also P2/prod_2 missing_in_internal (archive), P4 missing_in_stripe (create) and
    # PR4/price_4 price_product_mismatch (its product prod_4 is not in silver).
    assert sorted(tuple(r) for r in disc.select("entity", "key", "stripe_id", "kind", "action").collect()) == [
        ("price", "PR3", None, "missing_in_stripe", "create"),
        ("price", "PR5", "price_5", "missing_in_internal", "archive"),
        ("product", "P3", None, "missing_in_stripe", "create"),
        ("product", "P5", "prod_5", "missing_in_internal", "archive"),
    ]

    # The guard's create hold stays: a Stripe object sits in quarantine and the plan creates.
    assert recon("plan") == 3
    corr = tables.read(spark, cfg, tables.GOLD_CORRECTIONS)
    assert sorted(tuple(r) for r in corr.select("entity", "key", "operation").collect()) == [
        ("price", "PR3", "create_price"), ("price", "PR5", "archive_price"),
        ("product", "P3", "create_product"), ("product", "P5", "archive_product"),
    ]

    assert recon("report", "--format", "json") == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["unknown"] == {"total": 2, "rows": [
        {"entity": "product", "side": "internal", "key": "P2", "stripe_id": None, "reasons": ["duplicate_key"],
         "records": 2},
        {"entity": "product", "side": "stripe", "key": "P4", "stripe_id": "prod_4", "reasons": ["wrong_type:active"],
         "records": 1},
    ]}
    assert recon("report", "--format", "html") == 0
    page = (root / "reports" / "20260301T000000000Z-dddddd" / "report.html").read_text()
    section = page.split("id=unknown-keys>", 1)[1].split("<h2>", 1)[0]
    assert "<td>P2</td>" in section and "<td>duplicate_key</td>" in section
    assert "<td>prod_4</td>" in section and "<td>wrong_type:active</td>" in section
