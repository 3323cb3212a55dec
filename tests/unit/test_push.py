"""Pusher tests: the real stripe SDK over HTTP against the in-process emulator; the outbox rows are
written by hand (what the planner writes), expected Stripe state and journal counts by hand too."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import time
from pathlib import Path

import pytest
import stripe

from stripe_recon import tables
from stripe_recon.emulator.server import EmulatorServer
from stripe_recon.errors import HeldError
from stripe_recon.ledger import Run
from stripe_recon.push import backoff_seconds, push, retryable
from stripe_recon.ratelimit import TokenBucket

NOW = dt.datetime(2026, 1, 1)
CONF = Path(__file__).resolve().parents[2] / "conf" / "local.yaml"
DET_P2 = "prod_p2det"


def _corr(seq, entity, key, stripe_id, op, payload, observed=None, depends_on=None, status="planned"):
    p = json.dumps(payload, separators=(",", ":"))
    cid = hashlib.sha256(f"{entity}|{key}|{stripe_id}|{op}|{p}".encode()).hexdigest()
    return {"correction_id": cid, "run_id": "R1", "plan_hash": "H1", "seq": seq, "entity": entity, "key": key,
            "stripe_id": stripe_id, "operation": op, "payload": p,
            "observed": json.dumps(observed) if observed is not None else None,
            "idempotency_key": "recon-" + cid, "status": status, "attempts": 0, "last_error": None,
            "result_id": None, "created_at": NOW, "updated_at": NOW, "depends_on": depends_on}


SEED = [
    {"object": "product", "id": "prod_s1", "name": "Alfa", "description": "d1", "created": 1700000000,
     "metadata": {"internal_id": "P1", "color": "blue", "old": "x"}, "default_price": "price_s2"},
    {"object": "product", "id": "prod_s3", "name": "Gone", "created": 1700000001, "metadata": {"internal_id": "P3"}},
    {"object": "price", "id": "price_s2", "product": "prod_s1", "lookup_key": "PR2", "currency": "usd",
     "unit_amount": 999, "recurring": {"interval": "month", "interval_count": 1}, "created": 1700000000},
    {"object": "price", "id": "price_s3", "product": "prod_s1", "lookup_key": "PR3", "currency": "eur",
     "unit_amount": 500, "nickname": "Old", "created": 1700000001},
    {"object": "price", "id": "price_s4", "product": "prod_s1", "lookup_key": "PR4", "currency": "eur",
     "unit_amount": 700, "created": 1700000002},
]
P1_OBS = {"active": True, "description": "d1", "id": "prod_s1", "name": "Alfa",
          "metadata": {"color": "blue", "internal_id": "P1", "old": "x"}}


def _price_obs(pid, lk, amount, cur, active=True, nickname=None, interval=None):
    return {"id": pid, "lookup_key": lk, "unit_amount": amount, "currency": cur, "active": active,
            "nickname": nickname, "product": "prod_s1", "interval": interval, "interval_count": 1 if interval else None}


def _plan_rows():
    create_p = _corr(0, "product", "P2", DET_P2, "create_product",
                     {"id": DET_P2, "metadata": {"a": "1", "internal_id": "P2"}, "name": "Beta"})
    return [
        create_p,
        _corr(0, "product", "P1", "prod_s1", "update_product",
              {"metadata": {"color": "red", "old": "", "size": "L"}, "name": "Alpha"}, P1_OBS),
        _corr(0, "product", "P3", "prod_s3", "archive_product", {"active": False},
              {"active": True, "id": "prod_s3", "name": "Gone", "metadata": {"internal_id": "P3"}}),
        _corr(1, "price", "PR1", None, "create_price",
              {"currency": "usd", "lookup_key": "PR1", "product": DET_P2,
               "recurring": {"interval": "month", "interval_count": 1}, "unit_amount": 1999},
              depends_on=create_p["correction_id"]),
        _corr(1, "price", "PR2", "price_s2", "replace_price",
              {"archive": "price_s2", "create": {"currency": "usd", "lookup_key": "PR2", "product": "prod_s1",
                                                 "recurring": {"interval": "month", "interval_count": 1},
                                                 "transfer_lookup_key": True, "unit_amount": 1500},
               "default_price_of": "prod_s1"},
              _price_obs("price_s2", "PR2", 999, "usd", interval="month")),
        _corr(1, "price", "PR3", "price_s3", "update_price", {"nickname": "New"},
              _price_obs("price_s3", "PR3", 500, "eur", nickname="Old")),
        _corr(1, "price", "PR4", "price_s4", "archive_price", {"active": False},
              _price_obs("price_s4", "PR4", 700, "eur")),
    ]


def _write_plan(spark, cfg, rows, status="planned", plan_hash="H1"):
    for r in rows:
        r["plan_hash"] = plan_hash
        r["status"] = "held" if status == "held" else r["status"]
    names = [f.name for f in tables.CORRECTIONS_SCHEMA.fields]
    df = spark.createDataFrame([tuple(r[n] for n in names) for r in rows], tables.CORRECTIONS_SCHEMA)
    tables.append(spark, cfg, tables.GOLD_CORRECTIONS, df)
    plan = spark.createDataFrame([(plan_hash, "R1", status, {"corrections": len(rows)}, ["why"], NOW, None, "D1")],
                                 tables.PLANS_SCHEMA)
    tables.append(spark, cfg, tables.GOLD_PLANS, plan)


@pytest.fixture
def emu():
    with EmulatorServer(port=0) as server:
        server.store.seed(SEED)
        yield server


@pytest.fixture
def pcfg(make_cfg, emu, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_push")
    return make_cfg(f"stripe.api_base={emu.url}", "stripe.rate_limit_per_second=200", "stripe.threads=4",
                    "stripe.status_chunk_size=3")


def _writes(emu, since=0):
    return [e for e in emu.journal[since:] if e["method"] == "POST" and e["applied"]]


def _statuses(spark, cfg):
    return {(r.operation, r.key): (r.status, r.result_id) for r in tables.read(spark, cfg, tables.GOLD_CORRECTIONS).collect()}


def _assert_converged(emu):
    products, prices = emu.store.objects["product"], emu.store.objects["price"]
    assert products[DET_P2]["name"] == "Beta" and products[DET_P2]["metadata"] == {"a": "1", "internal_id": "P2"}
    assert products["prod_s1"]["name"] == "Alpha"
    assert products["prod_s1"]["metadata"] == {"internal_id": "P1", "color": "red", "size": "L"}
    assert products["prod_s3"]["active"] is False
    pr1 = prices[emu.store.lookup_index["PR1"]]
    assert (pr1["product"], pr1["unit_amount"], pr1["recurring"]["interval"]) == (DET_P2, 1999, "month")
    new2 = emu.store.lookup_index["PR2"]
    assert new2 != "price_s2" and prices[new2]["unit_amount"] == 1500 and prices[new2]["active"] is True
    assert products["prod_s1"]["default_price"] == new2
    assert prices["price_s2"]["active"] is False
    assert prices["price_s3"]["nickname"] == "New"
    assert prices["price_s4"]["active"] is False
    return new2


def test_push_applies_every_operation_once_and_rerun_sends_nothing(spark, pcfg, emu, capsys):
    _write_plan(spark, pcfg, _plan_rows())
    summary = push(Run.new(spark, pcfg))
    assert (summary["applied"], summary["failed"], summary["stale"], summary["skipped"]) == (7, 0, 0, 0)
    assert "push: 7/7" in capsys.readouterr().err
    new2 = _assert_converged(emu)
    writes = _writes(emu)
    # 1 create + 1 update + 1 archive (products), 1 create + 3 for the replace + 1 update + 1 archive (prices)
    assert len(writes) == 9
    assert sorted(w["path"] for w in writes if w["path"] == "/v1/prices") == ["/v1/prices"] * 2
    st = _statuses(spark, pcfg)
    assert {v[0] for v in st.values()} == {"applied"}
    assert st[("replace_price", "PR2")][1] == new2 and st[("create_product", "P2")][1] == DET_P2

    n = len(emu.journal)
    again = push(Run.new(spark, pcfg))
    assert again["total"] == 0 and again["already_applied"] == 7
    assert len(emu.journal) == n  # nothing pending: not even a read


def test_default_prices_are_released_before_archiving(spark, make_cfg, monkeypatch):
    """Stripe refuses to archive a product's default price. An archived default price is unset on its
    product first; a price moved to another product (replace) leaves its old product without one."""
    seed = [
        {"object": "product", "id": "prod_a", "name": "A", "created": 1700000000, "default_price": "price_a1",
         "metadata": {"internal_id": "A"}},
        {"object": "product", "id": "prod_b", "name": "B", "created": 1700000001, "default_price": "price_b1",
         "metadata": {"internal_id": "B"}},
        {"object": "product", "id": "prod_c", "name": "C", "created": 1700000002, "metadata": {"internal_id": "C"}},
        {"object": "price", "id": "price_a1", "product": "prod_a", "lookup_key": "PA1", "currency": "usd",
         "unit_amount": 100, "created": 1700000000},
        {"object": "price", "id": "price_b1", "product": "prod_b", "lookup_key": "PB1", "currency": "usd",
         "unit_amount": 200, "created": 1700000001},
    ]
    obs = {"active": True, "currency": "usd", "interval": None, "interval_count": None, "nickname": None}
    rows = [
        _corr(1, "price", "PA1", "price_a1", "archive_price", {"active": False},
              {**obs, "id": "price_a1", "lookup_key": "PA1", "unit_amount": 100, "product": "prod_a"}),
        _corr(1, "price", "PB1", "price_b1", "replace_price",
              {"archive": "price_b1", "create": {"currency": "usd", "lookup_key": "PB1", "product": "prod_c",
                                                 "transfer_lookup_key": True, "unit_amount": 200}},
              {**obs, "id": "price_b1", "lookup_key": "PB1", "unit_amount": 200, "product": "prod_b"}),
    ]
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_push")
    with EmulatorServer(port=0) as emu:
        emu.store.seed(seed)
        cfg = make_cfg(f"stripe.api_base={emu.url}", "stripe.rate_limit_per_second=200")
        _write_plan(spark, cfg, rows)
        summary = push(Run.new(spark, cfg))
        assert (summary["applied"], summary["failed"], summary["stale"]) == (2, 0, 0)
        products, prices = emu.store.objects["product"], emu.store.objects["price"]
        assert prices["price_a1"]["active"] is False and products["prod_a"]["default_price"] is None
        moved = emu.store.lookup_index["PB1"]
        assert moved != "price_b1" and prices[moved]["product"] == "prod_c" and prices[moved]["active"] is True
        assert prices["price_b1"]["active"] is False and products["prod_b"]["default_price"] is None
        assert products["prod_c"]["default_price"] is None
        # archive: unset + archive; replace: create + unset + archive (the two corrections may interleave)
        assert sorted((w["path"], tuple(sorted(w["params"]))) for w in _writes(emu)) == sorted([
            ("/v1/products/prod_a", ("default_price",)), ("/v1/prices/price_a1", ("active",)),
            ("/v1/prices", ("currency", "lookup_key", "product", "transfer_lookup_key", "unit_amount")),
            ("/v1/products/prod_b", ("default_price",)), ("/v1/prices/price_b1", ("active",)),
        ])


def recon_push(cfg, emu, capsys, *args: str) -> tuple[int, dict]:
    """``recon push`` through the CLI (this process, the shared session); (exit code, summary)."""
    from stripe_recon.cli import main

    capsys.readouterr()
    code = main(["push", "--config", str(CONF), "--set", f"storage.root={cfg.storage.root}",
                 "--set", f"stripe.api_base={emu.url}", "--set", "stripe.rate_limit_per_second=200",
                 "--set", "stripe.status_chunk_size=3", "--json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out) if code == 0 else {}


def test_resume_after_crash_never_duplicates_and_counts_what_had_landed(spark, pcfg, emu, capsys):
    """State of a push killed half-way: some corrections already applied in Stripe (statuses not yet
    merged), the replace interrupted after its create. A rerun finishes with no duplicate effect, and
    its summary tells what it wrote from what had already landed."""
    rows = _plan_rows()
    client = stripe.StripeClient("sk_test_x", base_addresses={"api": emu.url})
    client.v1.products.create({"id": DET_P2, "name": "Beta", "metadata": {"a": "1", "internal_id": "P2"}})
    client.v1.products.update("prod_s3", {"active": False})
    client.v1.prices.create({"product": "prod_s1", "currency": "usd", "unit_amount": 1500, "lookup_key": "PR2",
                             "transfer_lookup_key": True, "recurring": {"interval": "month", "interval_count": 1}})
    _write_plan(spark, pcfg, rows)
    since = len(emu.journal)
    code, summary = recon_push(pcfg, emu, capsys)
    assert code == 0
    # the product create and the product archive had landed: found by the verify read, not written
    # again (already_applied); the replace still had its default-price move and archive to send
    assert {k: summary[k] for k in ("total", "applied", "already_applied", "found_applied", "failed", "stale")} == {
        "total": 7, "applied": 5, "already_applied": 2, "found_applied": 2, "failed": 0, "stale": 0}
    _assert_converged(emu)
    writes = _writes(emu, since)
    # no product create, no archive of prod_s3, no second price for PR2: only what was left to do
    assert [w["path"] for w in writes if w["path"] == "/v1/products"] == []
    assert sum(1 for w in writes if w["path"] == "/v1/prices") == 1  # PR1 only
    assert len(writes) == 9 - 3
    ledger = tables.read(spark, pcfg, tables.GOLD_RUNS).where("stage = 'push'").first()
    assert (ledger.counts["applied"], ledger.counts["already_applied"]) == (5, 2)
    assert {v[0] for v in _statuses(spark, pcfg).values()} == {"applied"}


def _claim_by_another_push(spark, cfg, corrections, token="tok-live") -> None:
    """Claims as a push on another host left them; its heartbeat file says it is alive."""
    from stripe_recon.lease import beat

    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    rows = [(c["correction_id"], token, "R-OTHER", "other-host", 4242, old) for c in corrections]
    tables.append(spark, cfg, tables.CONTROL_PUSH_CLAIMS, spark.createDataFrame(rows, tables.PUSH_CLAIMS_SCHEMA))
    beat(spark, cfg, token)


def test_push_never_sends_what_a_live_push_claims(spark, pcfg, emu, capsys):
    """Even with no lease in the way (broken, or pushes outside the CLI), a correction another live push
    has claimed is not sent; once that push is stale its claims are taken over."""
    from stripe_recon.lease import drop_beat

    rows = _plan_rows()
    theirs = [r for r in rows if (r["operation"], r["key"]) in
              {("update_product", "P1"), ("update_price", "PR3"), ("archive_price", "PR4")}]
    _write_plan(spark, pcfg, rows)
    _claim_by_another_push(spark, pcfg, theirs)
    code, summary = recon_push(pcfg, emu, capsys)
    assert code == 0
    assert (summary["total"], summary["applied"], summary["claimed_elsewhere"]) == (7, 4, 3)
    products, prices = emu.store.objects["product"], emu.store.objects["price"]
    assert (products["prod_s1"]["name"], prices["price_s3"]["nickname"], prices["price_s4"]["active"]) == (
        "Alfa", "Old", True)
    assert not {w["idempotency_key"] for w in _writes(emu)} & {r["idempotency_key"] for r in theirs}
    st = _statuses(spark, pcfg)
    assert [st[(r["operation"], r["key"])][0] for r in theirs] == ["planned"] * 3
    left = tables.read(spark, pcfg, tables.CONTROL_PUSH_CLAIMS).collect()
    assert sorted((r.token, r.correction_id) for r in left) == sorted(("tok-live", r["correction_id"]) for r in theirs)

    drop_beat(spark, pcfg, "tok-live")  # that push died an hour ago on its host
    code, summary = recon_push(pcfg, emu, capsys)
    assert code == 0
    assert (summary["total"], summary["applied"], summary["claimed_elsewhere"]) == (3, 3, 0)
    _assert_converged(emu)
    assert tables.read(spark, pcfg, tables.CONTROL_PUSH_CLAIMS).count() == 0


def test_concurrent_claims_of_the_same_corrections_are_disjoint(spark, cfg):
    import threading

    from stripe_recon.claims import Claims

    ids = spark.createDataFrame([(f"c{i}",) for i in range(20)], "correction_id string")
    pushes = [Claims(spark, cfg, f"R{i}") for i in range(2)]
    barrier = threading.Barrier(2)

    def claim(c: Claims) -> None:
        barrier.wait()
        c.take(ids)

    threads = [threading.Thread(target=claim, args=(c,)) for c in pushes]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted((c.claimed, c.elsewhere) for c in pushes) == [(0, 20), (20, 0)]
        owners = tables.read(spark, cfg, tables.CONTROL_PUSH_CLAIMS).groupBy("correction_id").count().collect()
        assert len(owners) == 20 and {r["count"] for r in owners} == {1}
    finally:
        for c in pushes:
            c.release()
    assert tables.read(spark, cfg, tables.CONTROL_PUSH_CLAIMS).count() == 0


def test_faults_converge_without_duplicates(spark, pcfg, emu):
    emu.faults.force("lost_response", times=2, method="POST", path_prefix="/v1/prices")
    emu.faults.force("error_5xx", times=2, method="POST", path_prefix="/v1/products")
    emu.faults.force("rate_limit", times=3, method="GET")
    _write_plan(spark, pcfg, _plan_rows())
    summary = push(Run.new(spark, pcfg))
    assert (summary["applied"], summary["failed"]) == (7, 0) and summary["retries"] >= 7
    _assert_converged(emu)
    price_creates = [w for w in _writes(emu) if w["path"] == "/v1/prices"]
    assert len(price_creates) == 2  # lost responses were replayed by Idempotency-Key, not re-applied
    assert sum(1 for e in emu.journal if e["replayed"]) >= 2


def test_stale_when_stripe_changed_since_detection(spark, pcfg, emu):
    client = stripe.StripeClient("sk_test_x", base_addresses={"api": emu.url})
    client.v1.products.update("prod_s1", {"name": "Edited by hand"})
    rows = [r for r in _plan_rows() if r["operation"] == "update_product"]
    _write_plan(spark, pcfg, rows)
    since = len(emu.journal)
    summary = push(Run.new(spark, pcfg))
    assert (summary["stale"], summary["applied"]) == (1, 0)
    assert _writes(emu, since) == []
    assert emu.store.objects["product"]["prod_s1"]["name"] == "Edited by hand"
    assert _statuses(spark, pcfg)[("update_product", "P1")][0] == "stale"


def test_held_plan_needs_matching_approval_and_dry_run_writes_nothing(spark, pcfg, emu):
    _write_plan(spark, pcfg, _plan_rows(), status="held")
    with pytest.raises(HeldError, match="recon push --approve H1"):
        push(Run.new(spark, pcfg))
    with pytest.raises(HeldError, match="does not match"):
        push(Run.new(spark, pcfg), approve="nope")
    dry = push(Run.new(spark, pcfg), dry_run=True)
    assert dry["would_apply"] == 7 and dry["applied"] == 0
    assert _writes(emu) == []
    assert {v[0] for v in _statuses(spark, pcfg).values()} == {"held"}
    summary = push(Run.new(spark, pcfg), approve="H1")
    assert summary["applied"] == 7
    _assert_converged(emu)
    plan_row = tables.read(spark, pcfg, tables.GOLD_PLANS).first()
    assert plan_row.status == "approved" and plan_row.approved_at is not None


def test_retry_classification_and_backoff():
    assert retryable(stripe.RateLimitError("slow down", http_status=429))
    assert retryable(stripe.APIError("boom", http_status=500))
    assert retryable(stripe.APIConnectionError("reset"))
    assert not retryable(stripe.InvalidRequestError("bad", None, http_status=400))
    assert not retryable(stripe.APIError("no", http_status=500, headers={"Stripe-Should-Retry": "false"}))
    assert retryable(stripe.InvalidRequestError("lock", None, http_status=400, headers={"stripe-should-retry": "true"}))
    rng = random.Random(1)
    waits = [backoff_seconds(n, rng) for n in (1, 2, 3, 10)]
    assert 0.125 <= waits[0] <= 0.25 and 0.25 <= waits[1] <= 0.5 and 0.5 <= waits[2] <= 1.0 and waits[3] <= 8.0


def test_token_bucket_paces_requests():
    bucket = TokenBucket(50)
    t0 = time.monotonic()
    for _ in range(26):
        bucket.acquire()
    assert 0.45 <= time.monotonic() - t0 <= 1.0  # 25 intervals of 20 ms after the first token
