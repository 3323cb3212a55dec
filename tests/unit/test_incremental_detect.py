"""`detect --incremental` equals a full detect over the same silver, row for row, and the plan
built on the last plan equals a plan of every row.

A generated catalog is landed and reconciled once; then rounds of random change sets are applied
(Debezium events: inserts, updates of each internal attribute, deletes, price moves between
products, replays of earlier events and older events arriving late; in one round also a changed
Stripe export: renamed products, a vanished one, a duplicate of a key, a key moved), each followed by
an incremental detect, which builds on the previous round's incremental result, and by a full
detect over the same silver as its referee (its ledger rows are removed so it is never a base);
then a plan, which builds on the previous round's plan, against the corrections build_corrections
makes of every discrepancy row of the run.
The rounds are the `incremental` lane (`make test-incremental`, called by .ci/run); `make test`
checks the fallbacks.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import random

import pytest
from pyspark.sql import functions as F

from stripe_recon import tables
from stripe_recon.detect import detect
from stripe_recon.errors import HeldError
from stripe_recon.generate import generate
from stripe_recon.land.internal import land_internal
from stripe_recon.land.internal_cdc import land_internal_cdc
from stripe_recon.land.stripe_files import land_stripe_files
from stripe_recon.ledger import Run
from stripe_recon.plan import build_corrections, plan

ROW = ["entity", "key", "stripe_id", "kind", "attribute", "internal_value", "stripe_value", "owner", "action"]
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def _sorted(rows) -> list[tuple]:
    return sorted((tuple(r) for r in rows), key=lambda t: tuple("" if v is None else str(v) for v in t))


def _rows(spark, cfg, run_id: str) -> list[tuple]:
    return _sorted(tables.read(spark, cfg, tables.GOLD_DISCREPANCIES).where(F.col("run_id") == run_id).select(*ROW).collect())


def _detect_row(spark, cfg, run_id: str, stage: str = "detect"):
    return tables.read(spark, cfg, tables.GOLD_RUNS).where((F.col("run_id") == run_id) & (F.col("stage") == stage)).first()


CORRECTION = ["correction_id", "seq", "entity", "key", "stripe_id", "operation", "payload", "observed", "depends_on",
              "idempotency_key"]
PULL = ["correction_id", "entity", "key", "attribute", "current_value", "new_value", "stripe_id"]


def _planned(spark, cfg, run_id: str) -> dict[str, list[tuple]]:
    """The run's corrections, pull corrections and unplannable records as the plan stage wrote them."""
    q = tables.read(spark, cfg, tables.GOLD_QUARANTINE).where((F.col("run_id") == run_id) & (F.col("stage") == "plan"))
    return {"corrections": _sorted(tables.read(spark, cfg, tables.GOLD_CORRECTIONS)
                                   .where(F.col("run_id") == run_id).select(*CORRECTION).collect()),
            "pulls": _sorted(tables.read(spark, cfg, tables.GOLD_INTERNAL_CORRECTIONS)
                             .where(F.col("run_id") == run_id).select(*PULL).collect()),
            "unplannable": _sorted(q.select("entity", "key", F.col("reasons")[0], "record").collect())}


def _every_row_planned(spark, cfg, run_id: str) -> dict[str, list[tuple]]:
    """The referee: build_corrections over every discrepancy row of the run and today's silver."""
    disc = tables.read(spark, cfg, tables.GOLD_DISCREPANCIES).where(F.col("run_id") == run_id)
    ip, ipr, sp, spr = (tables.read(spark, cfg, n) for n in (
        tables.SILVER_INTERNAL_PRODUCTS, tables.SILVER_INTERNAL_PRICES, tables.SILVER_STRIPE_PRODUCTS,
        tables.SILVER_STRIPE_PRICES))
    out = build_corrections(disc, ip, ipr, sp, spr, cfg, run_id, allow_archives=ip.count() > 0)
    return {"corrections": _sorted(out.corrections.select(*CORRECTION).collect()),
            "pulls": _sorted(out.internal.select(*PULL).collect()),
            "unplannable": _sorted(out.unplannable.select("entity", "key", "reason", "record").collect())}


def _plan(run: Run) -> dict:
    try:
        return plan(run)
    except HeldError:  # a held plan wrote its corrections (status held) all the same
        return {}


def _iso(v):
    return None if v is None else v.replace(tzinfo=dt.timezone.utc).isoformat()


def _event_rows(spark, cfg):
    """Current internal silver rows as Debezium ``after`` dicts (jsonb as JSON text, ISO times)."""
    prods = {}
    for r in tables.read(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS).collect():
        prods[r.product_id] = {"product_id": r.product_id, "name": r.name, "description": r.description,
                               "active": r.active, "deleted_at": _iso(r.deleted_at), "tax_code": r.tax_code,
                               "metadata": json.dumps(dict(r.metadata or {})), "updated_at": _iso(r.updated_at)}
    prices = {}
    for r in tables.read(spark, cfg, tables.SILVER_INTERNAL_PRICES).collect():
        prices[r.price_id] = {"price_id": r.price_id, "product_id": r.product_id, "currency": r.currency,
                              "amount": None if r.amount is None else str(r.amount), "interval": r.interval,
                              "interval_count": r.interval_count, "active": r.active, "nickname": r.nickname,
                              "updated_at": _iso(r.updated_at)}
    return prods, prices


def _change_set(rng: random.Random, prods: dict, prices: dict, stripe_keys: list[str], rnd: int, lsn: int,
                earlier: list[str]) -> tuple[list[str], int]:
    """Random Debezium events over the current rows (JSON lines) and the next lsn."""
    lines: list[str] = []
    when = (T0 + dt.timedelta(days=rnd)).isoformat()

    def ev(op: str, table: str, row: dict) -> None:
        nonlocal lsn
        lsn += 1
        lines.append(json.dumps({"op": op, "before": row if op == "d" else None, "after": None if op == "d" else row,
                                 "source": {"table": table, "lsn": lsn, "ts_ms": 1_900_000_000_000 + lsn}}))

    pids, prids = sorted(prods), sorted(prices)
    for pid in rng.sample(pids, 6):
        row = dict(prods[pid], updated_at=when)
        what = rng.choice(["name", "description", "active", "metadata", "tax_code"])
        if what == "name":
            row["name"] = f"renamed {rnd} {pid}"
        elif what == "description":
            row["description"] = None if row["description"] else f"about {pid}"
        elif what == "active":
            row["active"] = not row["active"]
        elif what == "metadata":
            row["metadata"] = json.dumps({**json.loads(row["metadata"]), "color": rng.choice(["red", "blue"])})
        else:
            row["tax_code"] = rng.choice(["txcd_10000000", "txcd_99999999", None])
        ev("u", "products", row)
    ev("d", "products", {"product_id": rng.choice(pids)})
    for key in rng.sample(stripe_keys, min(2, len(stripe_keys))):  # a Stripe-only key gets its record
        ev("c", "products", {"product_id": key, "name": f"adopted {key}", "description": None, "active": True,
                             "deleted_at": None, "tax_code": None, "metadata": "{}", "updated_at": when})
    ev("c", "products", {"product_id": f"new_{rnd}", "name": "New", "description": None, "active": True,
                         "deleted_at": None, "tax_code": None, "metadata": "{}", "updated_at": when})
    for prid in rng.sample(prids, 6):
        row = dict(prices[prid], updated_at=when)
        what = rng.choice(["amount", "currency", "nickname", "active", "product_id", "interval"])
        if what == "amount":
            row["amount"] = f"{rng.randint(1, 500)}.{rng.randint(0, 99):02d}"
        elif what == "currency":
            row["currency"] = rng.choice(["usd", "eur", "gbp"])
        elif what == "nickname":
            row["nickname"] = f"nick {rnd}"
        elif what == "active":
            row["active"] = not row["active"]
        elif what == "product_id":
            row["product_id"] = rng.choice(pids)
        else:
            row["interval"], row["interval_count"] = rng.choice([(None, None), ("month", 1), ("year", 1)])
        ev("u", "prices", row)
    ev("d", "prices", {"price_id": rng.choice(prids)})
    ev("c", "prices", {"price_id": f"newprice_{rnd}", "product_id": f"new_{rnd}", "currency": "usd", "amount": "5.00",
                       "interval": None, "interval_count": None, "active": True, "nickname": None, "updated_at": when})
    # an older event of a changed key arriving late (stale), and a replay of earlier events
    late = json.loads(lines[0])
    late["source"]["lsn"] -= 10_000
    late["after"]["name"] = "stale name"
    out = lines + [json.dumps(late)] + rng.sample(earlier, min(3, len(earlier)))
    rng.shuffle(out)
    return out, lsn


def _stripe_export(src: str, dst, rng: random.Random) -> None:
    """The Stripe export at ``src`` with a few products renamed, one gone, a key duplicated and one
    key moved, as one JSON-lines file under ``dst``."""
    objects = [json.loads(line) for f in sorted(glob.glob(f"{src}/*/part-*")) for line in open(f) if line.strip()]
    products = [o for o in objects if o.get("object") == "product"]
    picked = rng.sample(products, 5)
    picked[0]["name"] = "renamed in Stripe"
    picked[1]["name"] = "renamed in Stripe too"
    picked[2]["metadata"] = {**(picked[2].get("metadata") or {}), "internal_id": "moved_key"}
    dup = dict(picked[3], id=picked[3]["id"] + "_dup", created=picked[3]["created"] + 5)
    gone = picked[4]["id"]
    kept = [o for o in objects if o.get("id") != gone] + [dup]
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "stripe.jsonl").write_text("".join(json.dumps(o) + "\n" for o in kept))


def _landed_catalog(spark, make_cfg, tmp_path, products: int):
    gen = str(tmp_path / "gen")
    generate(spark, gen, products=products, seed=3, rate=0.05)
    cfg = make_cfg("sources.internal.format=parquet", f"sources.internal.products={gen}/internal/products.parquet",
                   f"sources.internal.prices={gen}/internal/prices.parquet", "sources.stripe.mode=files",
                   f"sources.stripe.path={gen}/stripe")
    first = Run.new(spark, cfg)
    land_internal(first)
    land_stripe_files(first)
    counts = detect(first, incremental_run=True)
    assert _detect_row(spark, cfg, first.run_id).message == "full detect: no earlier detect run"
    assert counts["discrepancies"] == len(_rows(spark, cfg, first.run_id)) > 0
    return gen, cfg


def _rounds(spark, cfg, gen: str, tmp_path, rounds: int, stripe_round: int, seed: int) -> None:
    """``rounds`` random change sets, each checked against the referee; the Stripe export changes in
    round ``stripe_round``. Source positions start at ``seed`` million (later seeds come later)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    stripe_only = sorted(r.key for r in tables.read(spark, cfg, tables.GOLD_DISCREPANCIES)
                         .where("kind = 'missing_in_internal' AND key IS NOT NULL").select("key").distinct().collect())
    rng = random.Random(seed)
    lsn, earlier = seed * 1_000_000, []
    _plan(Run.new(spark, cfg))  # the plan the first round builds on
    for rnd in range(rounds):
        prods, prices = _event_rows(spark, cfg)
        lines, lsn = _change_set(rng, prods, prices, stripe_only[2 * rnd:], rnd, lsn, earlier)
        earlier += lines
        events = tmp_path / f"events_{rnd}.jsonl"
        events.write_text("\n".join(lines) + "\n")
        run = Run.new(spark, cfg)
        landed = land_internal_cdc(run, path=str(events))
        assert landed["products"]["landed"] > 0 and landed["prices"]["landed"] > 0, landed
        if rnd == stripe_round:
            export = tmp_path / "stripe_changed"
            _stripe_export(f"{gen}/stripe", export, rng)
            land_stripe_files(Run(spark, cfg.with_overrides(f"sources.stripe.path={export}"), run.run_id, fresh=False))
        inc = detect(run, incremental_run=True)
        row = _detect_row(spark, cfg, run.run_id)
        assert "incremental from run" in row.message, row.message
        n_keys = tables.read(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS).count()
        assert 0 < row.counts["changed_keys"] < n_keys, row.counts

        referee = Run.new(spark, cfg.with_overrides("detect.reuse_unchanged=false"))  # compares every key
        full = detect(referee)
        tables.delete_where(spark, cfg, tables.GOLD_RUNS, f"run_id = '{referee.run_id}'")
        assert _rows(spark, cfg, run.run_id) == _rows(spark, cfg, referee.run_id), f"round {rnd}"
        assert {k: v for k, v in inc.items() if k != "changed_keys"} == full

        _plan(run)
        planned = _detect_row(spark, cfg, run.run_id, "plan")
        assert 0 < planned.counts.get("replanned_keys", 0) < n_keys, (planned.counts, planned.message)
        assert planned.message.startswith("incremental from plan run "), planned.message
        assert _planned(spark, cfg, run.run_id) == _every_row_planned(spark, cfg, run.run_id), f"plan, round {rnd}"
        statuses = tables.read(spark, cfg, tables.GOLD_CORRECTIONS).where(F.col("run_id") == run.run_id)
        assert {r.status for r in statuses.select("status").distinct().collect()} <= {"planned", "held"}


def test_incremental_detect_falls_back_to_a_full_detect(spark, make_cfg, tmp_path):
    """`make test`: no earlier detect, then an earlier detect under another configuration: each time a
    full detect, and the ledger says why (the row-for-row rounds are `make test-incremental`)."""
    _, cfg = _landed_catalog(spark, make_cfg, tmp_path, products=40)
    other = cfg.with_overrides("detect.missing_in_internal_action=archive")
    again = Run.new(spark, other)
    detect(again, incremental_run=True)
    assert "ran under another configuration" in _detect_row(spark, other, again.run_id).message
    assert any(r[3] == "missing_in_internal" and r[8] == "archive" for r in _rows(spark, other, again.run_id))


def test_incremental_detect_and_plan_equal_full_ones(spark, make_cfg, tmp_path):
    """`make test`: one round of CDC events and a changed Stripe export, detect and plan each built on
    the last ones, row for row against a full detect and a plan of every row."""
    gen, cfg = _landed_catalog(spark, make_cfg, tmp_path, products=60)
    _rounds(spark, cfg, gen, tmp_path / "r", rounds=1, stripe_round=0, seed=5)


@pytest.mark.incremental
def test_incremental_detect_equals_full_property(spark, make_cfg, tmp_path):
    """Chained rounds of random change sets on both sides (`make test-incremental`), each row for row:
    three rounds, each built on the last incremental result (the Stripe export changes in the second).
    RECON_INCREMENTAL_SEEDS=1,2,3 runs three rounds per seed (CI keeps one: the lane's time is CI's)."""
    gen, cfg = _landed_catalog(spark, make_cfg, tmp_path, products=150)
    for seed in [int(s) for s in os.environ.get("RECON_INCREMENTAL_SEEDS", "1").split(",")]:
        _rounds(spark, cfg, gen, tmp_path / f"s{seed}", rounds=3, stripe_round=1, seed=seed)
