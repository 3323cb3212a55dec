"""Blast-radius guard: thresholds (pure) and the internal snapshot counts read from the runs ledger."""

from __future__ import annotations

from stripe_recon.config import Guard
from stripe_recon.guard import GuardInput, evaluate, internal_snapshot_counts
from stripe_recon.ledger import Run

G = Guard(max_change_ratio=0.05, max_archive_ratio=0.01, max_shrink_ratio=0.10)


def test_within_limits_is_not_held():
    v = evaluate(G, GuardInput(writes=50, archives=10, catalog=1000, internal_now=950, internal_prev=1000))
    assert (v.held, v.reasons) == (False, [])


def test_each_threshold_holds_on_its_own():
    change = evaluate(G, GuardInput(writes=51, archives=0, catalog=1000))
    assert change.held and len(change.reasons) == 1 and "max_change_ratio" in change.reasons[0]
    assert "51 Stripe writes" in change.reasons[0]
    archive = evaluate(G, GuardInput(writes=11, archives=11, catalog=1000))
    assert archive.held and [r.split(" ")[0] for r in archive.reasons] == ["archive"]
    shrink = evaluate(G, GuardInput(writes=0, archives=0, catalog=1000, internal_now=899, internal_prev=1000))
    assert shrink.held and "1000 -> 899" in shrink.reasons[0] and "max_shrink_ratio" in shrink.reasons[0]
    edge = evaluate(G, GuardInput(writes=0, archives=0, catalog=1000, internal_now=900, internal_prev=1000))
    assert not edge.held  # exactly 10% is allowed


def test_all_breaches_are_listed_and_empty_catalog_does_not_divide_by_zero():
    v = evaluate(G, GuardInput(writes=5, archives=5, catalog=0, internal_now=0, internal_prev=100))
    assert v.held and len(v.reasons) == 3
    assert not evaluate(G, GuardInput(writes=0, archives=0, catalog=0)).held


def test_truncated_snapshot_from_the_ledger(spark, cfg):
    assert internal_snapshot_counts(spark, cfg) == (None, None)
    for n in (1000, 100):
        with Run.new(spark, cfg).stage("land_internal") as st:
            st.counts.update({"products.silver_rows": n, "prices.silver_rows": 2 * n})
    with Run.new(spark, cfg).stage("land_stripe") as st:  # other stages do not count
        st.counts["products.silver_rows"] = 7
    now, prev = internal_snapshot_counts(spark, cfg)
    assert (now, prev) == (100, 1000)
    v = evaluate(G, GuardInput(writes=0, archives=0, catalog=3000, internal_now=now, internal_prev=prev))
    assert v.held and "90.00%" in v.reasons[0]


def test_creates_are_held_while_stripe_objects_sit_in_quarantine(spark, cfg):
    from stripe_recon.guard import stripe_quarantined

    assert stripe_quarantined(spark, cfg) == 0
    with Run.new(spark, cfg).stage("land_stripe") as st:
        st.counts.update({"rows_in": 10, "landed": 8, "quarantined": 2})
    assert stripe_quarantined(spark, cfg) == 2
    held = evaluate(G, GuardInput(writes=3, archives=0, catalog=1000, creates=1, stripe_quarantined=2))
    assert held.held and "quarantined 2 objects" in held.reasons[0] and "creates 1" in held.reasons[0]
    # updates alone cannot duplicate anything: not held
    assert not evaluate(G, GuardInput(writes=3, archives=0, catalog=1000, creates=0, stripe_quarantined=2)).held


def test_stripe_snapshot_shrink_holds(spark, cfg):
    from stripe_recon.guard import Snapshot, stripe_snapshot_counts

    assert stripe_snapshot_counts(spark, cfg) == (Snapshot("products", None, None), Snapshot("prices", None, None))
    for products, prices in ((1000, 3000), (899, 3000)):
        with Run.new(spark, cfg).stage("land_stripe") as st:
            st.counts.update({"products.silver_rows": products, "prices.silver_rows": prices})
    snaps = stripe_snapshot_counts(spark, cfg)
    assert snaps == (Snapshot("products", 899, 1000), Snapshot("prices", 3000, 3000))
    v = evaluate(G, GuardInput(writes=0, archives=0, catalog=4000, stripe_snapshots=snaps))
    assert v.reasons == ["Stripe products shrank 10.10% > max_shrink_ratio 10.00% (1000 -> 899 since the previous "
                         "land_stripe run): an incomplete export would make the plan create what it lost"]


def test_a_stripe_side_with_no_products_or_no_prices_is_refused_unless_allowed():
    import pytest

    from stripe_recon.errors import InputError
    from stripe_recon.guard import refuse_empty_stripe

    full = {"products": {"rows_in": 3}, "prices": {"rows_in": 5}}
    refuse_empty_stripe(full, "x.jsonl", allow_empty=False)
    with pytest.raises(InputError, match=r"^Stripe input x.jsonl holds no prices: .* --allow-empty"):
        refuse_empty_stripe({**full, "prices": {"rows_in": 0}}, "x.jsonl", allow_empty=False)
    with pytest.raises(InputError, match=r"^Stripe input x.jsonl holds no products and no prices:"):
        refuse_empty_stripe({}, "x.jsonl", allow_empty=False)
    refuse_empty_stripe({}, "x.jsonl", allow_empty=True)


# -- through the CLI: an empty Stripe export is refused, a shrunk one holds the plan --------------

T0 = 1_767_225_600


def _stripe_objects(n: int) -> list[dict]:
    objs: list[dict] = []
    for i in range(1, n + 1):
        objs.append({"id": f"prod_{i}", "object": "product", "name": f"Alpha{i}", "active": True, "created": T0,
                     "metadata": {"internal_id": f"P{i}"}, "livemode": False})
        objs.append({"id": f"price_{i}", "object": "price", "product": f"prod_{i}", "lookup_key": f"PR{i}",
                     "currency": "usd", "unit_amount": 999, "active": True, "type": "one_time", "recurring": None,
                     "created": T0, "livemode": False, "metadata": {}})
    return objs


def _export(path, objs) -> str:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return str(path)


def test_cli_empty_stripe_export_is_refused_and_a_shrunk_one_holds_the_plan(spark, cfg, tmp_path, capsys):
    from pathlib import Path

    from stripe_recon import tables
    from stripe_recon.cli import main

    conf = Path(__file__).resolve().parents[2] / "conf" / "local.yaml"

    def recon(*args: str) -> int:
        capsys.readouterr()
        return main([*args, "--config", str(conf), "--set", f"storage.root={cfg.storage.root}",
                     "--set", "guard.max_change_ratio=1", "--set", "guard.max_archive_ratio=1"])

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "products.csv").write_text(
        "product_id,name,active\n" + "".join(f"P{i},Alpha{i},true\n" for i in range(1, 5)))
    (tmp_path / "in" / "prices.csv").write_text(
        "price_id,product_id,currency,amount\n" + "".join(f"PR{i},P{i},usd,9.99\n" for i in range(1, 5)))
    assert recon("land", "internal", "--format", "csv", "--products", str(tmp_path / "in" / "products.csv"),
                 "--prices", str(tmp_path / "in" / "prices.csv")) == 0

    full = _export(tmp_path / "full.jsonl", _stripe_objects(4))
    assert recon("land", "stripe", "--from-files", full) == 0

    empty = _export(tmp_path / "empty.jsonl", [])
    assert recon("land", "stripe", "--from-files", empty) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"recon: Stripe input {empty} holds no products and no prices: against a full internal catalog "
                   "the plan would create everything again. Fix the export, or pass --allow-empty "
                   "(sources.stripe.allow_empty=true) if the Stripe account really has none."]
    # refused before silver was touched: the full landing is still what detect sees
    assert tables.read(spark, cfg, tables.SILVER_STRIPE_PRODUCTS).count() == 4
    assert tables.read(spark, cfg, tables.SILVER_STRIPE_PRICES).count() == 4

    half = _export(tmp_path / "half.jsonl", _stripe_objects(2))
    assert recon("land", "stripe", "--from-files", half) == 0
    assert recon("detect") == 0
    assert recon("plan") == 3
    err = capsys.readouterr().err
    assert "Stripe products shrank 50.00% > max_shrink_ratio 10.00% (4 -> 2 since the previous land_stripe run)" in err
    assert "Stripe prices shrank 50.00% > max_shrink_ratio 10.00% (4 -> 2" in err
    plan = tables.read(spark, cfg, tables.GOLD_PLANS).first()
    assert plan.status == "held" and len(plan.reasons) == 2

    assert recon("land", "stripe", "--from-files", empty, "--allow-empty") == 0  # an account that really is empty
    assert tables.read(spark, cfg, tables.SILVER_STRIPE_PRODUCTS).count() == 0
