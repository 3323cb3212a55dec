"""Stripe events, the API side: the emulator records an event per write and lists them like Stripe
(tested through the real SDK over HTTP), and export_stripe_events turns them into export files of the
objects' current state, with the cursor in the runs ledger and the 30-day fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import stripe

from stripe_recon import tables
from stripe_recon.emulator.server import EmulatorServer
from stripe_recon.land.stripe_events import CURSOR, export_stripe_events, last_cursor
from stripe_recon.ledger import Run

T0 = 1_800_000_000
DAY = 86_400


class Clock:
    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> float:
        return float(self.t)


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def emu(clock):
    with EmulatorServer(port=0, clock=clock) as server:
        yield server


@pytest.fixture
def client(emu):
    return stripe.StripeClient("sk_test_events", base_addresses={"api": emu.url}, max_network_retries=0)


@pytest.fixture
def ecfg(make_cfg, emu, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_events")
    return make_cfg(f"stripe.api_base={emu.url}", "stripe.rate_limit_per_second=300", "stripe.threads=2")


def _catalog(client, clock):
    """A at T0, B at T0, A's price at T0+1, A renamed at T0+5, B deleted at T0+6."""
    client.v1.products.create({"id": "prod_A", "name": "A", "metadata": {"internal_id": "P-A"}})
    client.v1.products.create({"id": "prod_B", "name": "B", "metadata": {"internal_id": "P-B"}})
    clock.t = T0 + 1
    price = client.v1.prices.create({"product": "prod_A", "currency": "usd", "unit_amount": 1999,
                                     "lookup_key": "PR-A"})
    clock.t = T0 + 5
    client.v1.products.update("prod_A", {"name": "A2"})
    clock.t = T0 + 6
    client.v1.products.delete("prod_B")
    return price.id


def test_emulator_records_an_event_per_write_and_lists_them_like_stripe(emu, client, clock):
    price_id = _catalog(client, clock)
    page = client.v1.events.list({"limit": 100}).to_dict(recursive=True)
    got = [(e["type"], e["data"]["object"]["id"], e["created"]) for e in page["data"]]
    assert got == [  # newest first; one second: the later write first
        ("product.deleted", "prod_B", T0 + 6), ("product.updated", "prod_A", T0 + 5),
        ("price.created", price_id, T0 + 1), ("product.created", "prod_B", T0), ("product.created", "prod_A", T0),
    ]
    assert page["has_more"] is False
    updated = page["data"][1]
    assert updated["data"]["object"]["name"] == "A2"
    assert updated["data"]["previous_attributes"] == {"name": "A", "updated": T0}
    assert page["data"][4]["data"]["object"]["name"] == "A"  # the object as it was then
    assert all(e["id"].startswith("evt_") and e["object"] == "event" for e in page["data"])

    products = client.v1.events.list({"types": ["product.created", "product.deleted"], "created": {"gte": T0 + 1}})
    assert [e.type for e in products.data] == ["product.deleted"]
    wildcard = client.v1.events.list({"type": "price.*"})
    assert [e.type for e in wildcard.data] == ["price.created"]

    first = client.v1.events.list({"limit": 2})
    assert first.has_more is True and [e.type for e in first.data] == ["product.deleted", "product.updated"]
    after = client.v1.events.list({"limit": 2, "starting_after": first.data[-1].id})
    assert [e.type for e in after.data] == ["price.created", "product.created"] and after.has_more is True
    before = client.v1.events.list({"limit": 10, "ending_before": after.data[0].id})
    assert [e.type for e in before.data] == ["product.deleted", "product.updated"]
    assert client.v1.events.retrieve(first.data[0].id).type == "product.deleted"


def test_events_older_than_30_days_are_gone(emu, client, clock):
    _catalog(client, clock)
    oldest = client.v1.events.list({"limit": 100}).data[-1].id
    assert emu.age_events(30 * DAY) == 5  # the newest is then exactly 30 days old (kept), the next 30 days + 1 s
    assert [e.type for e in client.v1.events.list({"limit": 100}).data] == ["product.deleted"]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.events.retrieve(oldest)
    assert err.value.http_status == 404


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_export_rereads_every_object_named_in_an_event(spark, ecfg, emu, client, clock):
    price_id = _catalog(client, clock)
    run = Run.new(spark, ecfg, "run-events-1")
    out = export_stripe_events(run, T0, now=clock.t)

    assert (out.fallback, out.cursor, out.path) == (False, T0 + 6, f"{ecfg.storage.root}/runs/run-events-1/stripe_events")
    products = _lines(Path(out.path) / "products.jsonl")
    prices = _lines(Path(out.path) / "prices.jsonl")
    assert products == [
        # re-read: the current name, not the one in the create event
        {"id": "prod_A", "object": "product", "active": True, "created": T0, "default_price": None,
         "description": None, "images": [], "livemode": False, "marketing_features": [],
         "metadata": {"internal_id": "P-A"}, "name": "A2", "package_dimensions": None, "shippable": None,
         "statement_descriptor": None, "tax_code": None, "type": "service", "unit_label": None,
         "updated": T0 + 5, "url": None},
        # gone from the API: the object of its delete event, marked deleted (the mapping key kept)
        {"id": "prod_B", "object": "product", "active": True, "created": T0, "default_price": None,
         "description": None, "images": [], "livemode": False, "marketing_features": [],
         "metadata": {"internal_id": "P-B"}, "name": "B", "package_dimensions": None, "shippable": None,
         "statement_descriptor": None, "tax_code": None, "type": "service", "unit_label": None,
         "updated": T0, "url": None, "deleted": True},
    ]
    assert prices == [
        {"id": price_id, "object": "price", "active": True, "billing_scheme": "per_unit", "created": T0 + 1,
         "currency": "usd", "custom_unit_amount": None, "livemode": False, "lookup_key": "PR-A", "metadata": {},
         "nickname": None, "product": "prod_A", "recurring": None, "tax_behavior": "unspecified",
         "tiers_mode": None, "transform_quantity": None, "type": "one_time", "unit_amount": 1999,
         "unit_amount_decimal": "1999"},
    ]
    assert {k: out.counts[k] for k in ("events", "objects.products", "objects.prices", "deleted.products",
                                       "deleted.prices", "fallback", CURSOR)} == {
        "events": 5, "objects.products": 2, "objects.prices": 1, "deleted.products": 1, "deleted.prices": 0,
        "fallback": 0, CURSOR: T0 + 6}

    # The next export starts from the cursor recorded in the ledger: only the last second again.
    assert last_cursor(spark, ecfg) == T0 + 6
    clock.t = T0 + 20
    client.v1.prices.update(price_id, {"nickname": "Monthly"})
    again = export_stripe_events(Run.new(spark, ecfg, "run-events-2"), now=clock.t)
    assert (again.fallback, again.cursor, again.counts["events"]) == (False, T0 + 20, 2)
    assert [o["id"] for o in _lines(Path(again.path) / "products.jsonl")] == ["prod_B"]
    assert [(o["id"], o["nickname"]) for o in _lines(Path(again.path) / "prices.jsonl")] == [(price_id, "Monthly")]
    runs = tables.read(spark, ecfg, tables.GOLD_RUNS).where("stage = 'export_stripe_events'")
    assert sorted((r["run_id"], r["status"], r["counts"][CURSOR]) for r in runs.collect()) == [
        ("run-events-1", "ok", T0 + 6), ("run-events-2", "ok", T0 + 20)]


def test_no_cursor_or_one_past_retention_falls_back_to_a_full_export(spark, ecfg, emu, client, clock):
    _catalog(client, clock)
    first = export_stripe_events(Run.new(spark, ecfg, "run-fb-1"), now=clock.t)
    assert (first.fallback, first.path, first.cursor) == (True, None, None)
    assert "no events cursor" in first.reason

    stale = export_stripe_events(Run.new(spark, ecfg, "run-fb-2"), T0, now=T0 + 30 * DAY)
    assert (stale.fallback, stale.path, stale.cursor) == (True, None, T0)
    assert "older than Stripe's 30-day event retention" in stale.reason
    row = tables.read(spark, ecfg, tables.GOLD_RUNS).where("run_id = 'run-fb-2'").first()
    assert (row["status"], row["counts"]["fallback"], row["message"].startswith("fallback to a full export")) == \
        ("ok", 1, True)

    fresh = export_stripe_events(Run.new(spark, ecfg, "run-fb-3"), T0, now=T0 + 29 * DAY)
    assert fresh.fallback is False and fresh.counts["events"] == 5
