"""`recon land stripe --from-events`: the objects named by Stripe events since the last landing,
landed as changes, leave silver exactly as a full API export of the same account would.

The changes touch what the per-key columns depend on beyond the changed rows: a new duplicate of an
unchanged product's key (that product's ``_active_ids``), a product whose key moved (its unchanged
price's ``_product_key``), an archived price and a new one. Against the emulator, over HTTP."""

from __future__ import annotations

from pyspark.sql import functions as F

from stripe_recon import tables
from stripe_recon.land.stripe_api import land_stripe_api
from stripe_recon.land.stripe_events import CURSOR, land_stripe_events
from stripe_recon.ledger import Run

# the emulator with a settable clock, and an SDK client on it (the events tests' fixtures)
from .test_stripe_events import T0, client, clock, emu  # noqa: E402, F401

SILVER = (tables.SILVER_STRIPE_PRODUCTS, tables.SILVER_STRIPE_PRICES)


def _silver(spark, cfg, name: str) -> list[tuple]:
    df = tables.read(spark, cfg, name)
    cols = [c for c in df.columns if c not in tables.LINEAGE_NAMES and c != "_rh"]
    return sorted(tuple(r) for r in df.select(*cols).collect())


def test_events_landing_equals_a_full_export(spark, make_cfg, tmp_path, emu, client, clock, monkeypatch):  # noqa: F811
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_events")
    api = (f"stripe.api_base={emu.url}", "stripe.rate_limit_per_second=300", "stripe.threads=2",
           "sources.stripe.mode=events")
    cfg = make_cfg(*api)
    for pid, key in (("prod_A", "P-A"), ("prod_B", "P-B"), ("prod_C", "P-C")):
        client.v1.products.create({"id": pid, "name": pid, "metadata": {"internal_id": key}})
    clock.t = T0 + 1
    client.v1.prices.create({"product": "prod_A", "currency": "usd", "unit_amount": 100, "lookup_key": "PR-A"})
    pb = client.v1.prices.create({"product": "prod_B", "currency": "usd", "unit_amount": 200, "lookup_key": "PR-B"})
    client.v1.prices.create({"product": "prod_C", "currency": "eur", "unit_amount": 300, "lookup_key": "PR-C0"})

    first = Run.new(spark, cfg)
    out = land_stripe_events(first)  # no cursor yet: a full export, which records one
    assert out["fallback"].startswith("no events cursor yet")
    runs = tables.read(spark, cfg, tables.GOLD_RUNS).where(F.col("run_id") == first.run_id)
    assert runs.where("stage = 'export_stripe_api'").first().counts[CURSOR] == T0 + 1

    clock.t = T0 + 10
    client.v1.products.update("prod_A", {"name": "A renamed"})
    client.v1.products.create({"id": "prod_D", "name": "dup of B", "metadata": {"internal_id": "P-B"}})
    client.v1.products.update("prod_C", {"metadata": {"internal_id": "P-X"}})
    client.v1.prices.update(pb.id, {"active": False})
    client.v1.prices.create({"product": "prod_D", "currency": "usd", "unit_amount": 250, "lookup_key": "PR-D"})

    second = Run.new(spark, cfg)
    got = land_stripe_events(second)
    # A, C, D; the prices of the cursor's own second are read again (on purpose), and PR-D
    assert "fallback" not in got and got["events"]["objects.products"] == 3 and got["events"]["objects.prices"] == 4
    assert got["products"]["silver_rows"] == 4 and got["prices"]["silver_rows"] == 4

    full_cfg = make_cfg(*api[:-1], f"storage.root={tmp_path / 'full'}", "sources.stripe.mode=api")
    land_stripe_api(Run.new(spark, full_cfg))
    for name in SILVER:
        assert _silver(spark, cfg, name) == _silver(spark, full_cfg, name), name
    b = tables.read(spark, cfg, tables.SILVER_STRIPE_PRODUCTS).where("id = 'prod_B'").first()
    assert (b._primary, list(b._active_ids)) == (True, ["prod_B", "prod_D"])
    c0 = tables.read(spark, cfg, tables.SILVER_STRIPE_PRICES).where("lookup_key = 'PR-C0'").first()
    assert c0._product_key == "P-X"

    # nothing new (the last second's events are read again on purpose): silver's rows and its change
    # feed do not move
    before = {n: (tables.version(spark, cfg, n), _silver(spark, cfg, n)) for n in SILVER}
    clock.t = T0 + 20
    land_stripe_events(Run.new(spark, cfg))
    for name, (version, rows) in before.items():
        assert _silver(spark, cfg, name) == rows
        feed = (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", version + 1)
                .load(tables.table_path(cfg, name))) if tables.version(spark, cfg, name) > version else None
        assert feed is None or feed.count() == 0, name
