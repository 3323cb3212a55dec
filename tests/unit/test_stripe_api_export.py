"""API export: the real SDK against the emulator, created-time windows, archived objects included,
landed through the file path, completeness recorded in the runs ledger."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from stripe_recon import tables
from stripe_recon.emulator.server import EmulatorServer
from stripe_recon.land.stripe_api import land_stripe_api, windows
from stripe_recon.ledger import Run
from stripe_recon.push import Sender
from stripe_recon.ratelimit import TokenBucket
from stripe_recon.stripe_client import build_client

DAY = 86_400
T0 = 1_700_000_000


def _seed():
    objs = []
    for i in range(12):  # products spread over ~60 days, every third archived
        objs.append({"object": "product", "id": f"prod_{i:02d}", "name": f"P{i}", "created": T0 + i * 5 * DAY,
                     "active": i % 3 != 0, "metadata": {"internal_id": f"P{i}"}})
        for j in range(2):  # two prices each, the second archived
            objs.append({"object": "price", "id": f"price_{i:02d}_{j}", "product": f"prod_{i:02d}",
                         "currency": "usd", "unit_amount": 100 * (i + 1) + j, "lookup_key": f"PR{i}_{j}",
                         "created": T0 + i * 5 * DAY + j, "active": j == 0})
    return objs


@pytest.fixture
def emu():
    with EmulatorServer(port=0) as server:
        server.store.seed(_seed())
        yield server


@pytest.fixture
def ecfg(make_cfg, emu, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_export")
    return make_cfg(f"stripe.api_base={emu.url}", "stripe.rate_limit_per_second=300", "stripe.export_windows=4",
                    "stripe.threads=4")


def test_windows_cover_everything_and_split_the_range(ecfg):
    sender = Sender(build_client(ecfg), TokenBucket(300), 3)
    wins = windows(sender, 4)
    assert len(wins) == 4 and wins[0][0] is None and wins[-1][1] is None
    inner = [b for w in wins for b in w if b is not None]
    assert inner == sorted(inner)
    # the 12 products span 55 days: at least two windows hold some of them
    starts = [T0 + i * 5 * DAY for i in range(12)]
    used = {next(k for k, (lo, hi) in enumerate(wins) if (lo is None or c >= lo) and (hi is None or c < hi))
            for c in starts}
    assert len(used) >= 2


def test_export_lands_active_and_archived_with_completeness(spark, ecfg, emu):
    emu.faults.force("rate_limit", times=2, method="GET")
    emu.faults.force("error_5xx", times=2, method="GET")
    run = Run.new(spark, ecfg)
    out = land_stripe_api(run)
    assert out["windows"] == 4
    products = {r.id: r.active for r in tables.read(spark, ecfg, tables.SILVER_STRIPE_PRODUCTS).collect()}
    prices = {r.id: r.active for r in tables.read(spark, ecfg, tables.SILVER_STRIPE_PRICES).collect()}
    assert products == {f"prod_{i:02d}": i % 3 != 0 for i in range(12)}
    assert prices == {f"price_{i:02d}_{j}": j == 0 for i in range(12) for j in range(2)}

    expected_fp = {
        r["object"]: r["fp"]
        for r in spark.createDataFrame(
            [("product", f"prod_{i:02d}") for i in range(12)]
            + [("price", f"price_{i:02d}_{j}") for i in range(12) for j in range(2)], "object string, id string")
        .groupBy("object").agg(F.expr("bit_xor(xxhash64(id))").alias("fp")).collect()
    }
    ledger = {r.stage: r for r in tables.read(spark, ecfg, tables.GOLD_RUNS)
              .filter(F.col("run_id") == run.run_id).collect()}
    counts = ledger["export_stripe_api"].counts
    assert ledger["export_stripe_api"].status == "ok" and ledger["land_stripe"].status == "ok"
    assert (counts["export.products"], counts["silver.products"]) == (12, 12)
    assert (counts["export.prices"], counts["silver.prices"]) == (24, 24)
    assert counts["export.products.fingerprint"] == counts["silver.products.fingerprint"] == expected_fp["product"]
    assert counts["export.prices.fingerprint"] == expected_fp["price"]
    assert counts["retries"] >= 4
    # every list request spent the one budget and asked for archived prices explicitly
    lists = [e for e in emu.journal if e["method"] == "GET" and e["path"] == "/v1/prices"]
    assert any(str(e["params"].get("active")).lower() == "false" for e in lists)
