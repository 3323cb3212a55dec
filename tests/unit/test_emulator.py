"""The real stripe SDK against the local emulator over HTTP: every Stripe rule the emulator claims."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import stripe

from stripe_recon import stripe_requests as rq
from stripe_recon.emulator import EmulatorServer, FaultConfig
from stripe_recon.emulator.faults import FaultInjector, TokenBucket
from stripe_recon.emulator.forms import parse_form
from stripe_recon.emulator.store import read_seed_objects
from stripe_recon.stripe_client import build_client

KEY = "sk_test_emulator"
T0 = 1_700_000_000


class Clock:
    """A settable clock for the emulator's created/updated timestamps."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emu(clock):
    server = EmulatorServer(port=0, clock=clock).start()
    yield server
    server.stop()


@pytest.fixture
def client(emu, make_cfg) -> stripe.StripeClient:
    return build_client(make_cfg(f"stripe.api_base={emu.url}"), api_key=KEY)


def _http(emu: EmulatorServer, method: str, path: str, body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(emu.url + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _product(client, pid: str, name: str = "A", **extra) -> dict:
    return rq.execute(client, rq.create_product(name, product_id=pid, **extra))


# -- forms ----------------------------------------------------------------------------------------

def test_form_parsing_nested_lists_and_empty_values():
    got = parse_form("name=Pro&metadata[a]=1&metadata[b]=&metadata[0]=z&recurring[interval]=month"
                     "&expand[]=product&expand[]=x&lookup_keys[0]=k0&lookup_keys[1]=k1&created[gte]=5")
    assert got == {
        "name": "Pro",
        "metadata": {"a": "1", "b": "", "0": "z"},
        "recurring": {"interval": "month"},
        "expand": ["product", "x"],
        "lookup_keys": ["k0", "k1"],
        "created": {"gte": "5"},
    }


# -- products -------------------------------------------------------------------------------------

def test_create_retrieve_product_with_custom_id(client, emu):
    created = _product(client, "prod_SKU1", "Widget", description="Blue", metadata={"internal_id": "SKU1"},
                       tax_code="txcd_10000000")
    expected = {
        "id": "prod_SKU1", "object": "product", "active": True, "created": T0, "updated": T0,
        "default_price": None, "description": "Blue", "metadata": {"internal_id": "SKU1"}, "name": "Widget",
        "tax_code": "txcd_10000000", "livemode": False,
    }
    assert {k: created[k] for k in expected} == expected
    again = rq.execute(client, rq.retrieve_product("prod_SKU1"))
    assert again == created


def test_second_create_with_same_id_is_resource_already_exists(client, emu):
    _product(client, "prod_1")
    with pytest.raises(stripe.InvalidRequestError) as err:
        _product(client, "prod_1", "Other")
    assert (err.value.http_status, err.value.code, err.value.param) == (400, "resource_already_exists", "id")
    assert rq.execute(client, rq.retrieve_product("prod_1"))["name"] == "A"


def test_missing_object_is_404_resource_missing(client):
    with pytest.raises(stripe.InvalidRequestError) as err:
        rq.execute(client, rq.retrieve_product("prod_nope"))
    assert (err.value.http_status, err.value.code) == (404, "resource_missing")
    assert err.value.user_message == "No such product: 'prod_nope'"
    with pytest.raises(stripe.InvalidRequestError) as err:
        rq.execute(client, rq.retrieve_price("price_nope"))
    assert err.value.http_status == 404


def test_update_product_fields_clears_and_metadata_merge(client, emu, clock):
    _product(client, "prod_1", "Old", description="d", metadata={"a": "1", "b": "2"}, tax_code="txcd_10000000")
    clock.t = T0 + 50
    got = rq.execute(client, rq.update_product("prod_1", name="New", description=None, tax_code=None,
                                               active=False, metadata={"a": None, "c": "3"}))
    assert (got["name"], got["description"], got["tax_code"], got["active"]) == ("New", None, None, False)
    assert got["metadata"] == {"b": "2", "c": "3"}
    assert (got["created"], got["updated"]) == (T0, T0 + 50)


def test_update_product_empty_name_and_unknown_param_rejected(client, emu):
    _product(client, "prod_1")
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.products.update("prod_1", {"name": ""})
    assert (err.value.code, err.value.param) == ("parameter_invalid_empty", "name")
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.products.update("prod_1", {"colour": "red"})
    assert (err.value.code, err.value.param) == ("parameter_unknown", "colour")
    assert rq.execute(client, rq.retrieve_product("prod_1"))["name"] == "A"


def test_default_price_must_belong_to_the_product(client, emu):
    _product(client, "prod_1")
    _product(client, "prod_2")
    own = rq.execute(client, rq.create_price("prod_1", "usd", 100))
    other = rq.execute(client, rq.create_price("prod_2", "usd", 100))
    assert rq.execute(client, rq.update_product("prod_1", default_price=own["id"]))["default_price"] == own["id"]
    with pytest.raises(stripe.InvalidRequestError) as err:
        rq.execute(client, rq.update_product("prod_1", default_price=other["id"]))
    assert err.value.param == "default_price"
    expanded = client.v1.products.retrieve("prod_1", {"expand": ["default_price"]}).to_dict()
    assert expanded["default_price"]["id"] == own["id"]
    assert rq.execute(client, rq.update_product("prod_1", default_price=""))["default_price"] is None


def test_default_price_cannot_be_archived_until_unset(client, emu):
    """Stripe: "This price cannot be archived because it is the default price of its product"."""
    _product(client, "prod_1")
    price = rq.execute(client, rq.create_price("prod_1", "usd", 100))
    rq.execute(client, rq.update_product("prod_1", default_price=price["id"]))
    with pytest.raises(stripe.InvalidRequestError) as err:
        rq.execute(client, rq.archive_price(price["id"]))
    assert err.value.http_status == 400 and err.value.param == "active"
    assert "default price of its product" in str(err.value)
    assert emu.store.objects["price"][price["id"]]["active"] is True
    rq.execute(client, rq.update_product("prod_1", default_price=""))
    assert rq.execute(client, rq.archive_price(price["id"]))["active"] is False


def test_delete_product_only_without_prices(client, emu):
    _product(client, "prod_free")
    _product(client, "prod_priced")
    rq.execute(client, rq.create_price("prod_priced", "usd", 500))
    assert rq.execute(client, rq.delete_product("prod_free")) == {"id": "prod_free", "object": "product",
                                                                  "deleted": True}
    with pytest.raises(stripe.InvalidRequestError):
        rq.execute(client, rq.retrieve_product("prod_free"))
    with pytest.raises(stripe.InvalidRequestError) as err:
        rq.execute(client, rq.delete_product("prod_priced"))
    assert err.value.http_status == 400 and "has one or more user-created prices" in err.value.user_message
    assert rq.execute(client, rq.retrieve_product("prod_priced"))["active"] is True


# -- prices ---------------------------------------------------------------------------------------

def test_create_prices_one_time_and_recurring(client, emu):
    _product(client, "prod_1")
    one = rq.execute(client, rq.create_price("prod_1", "JPY", 500, nickname="n", metadata={"k": "v"}))
    rec = rq.execute(client, rq.create_price("prod_1", "usd", 1999, interval="month", interval_count=3,
                                             lookup_key="SKU1-M"))
    assert {k: one[k] for k in ("object", "product", "currency", "unit_amount", "unit_amount_decimal", "type",
                                "recurring", "nickname", "metadata", "lookup_key", "active", "created")} == {
        "object": "price", "product": "prod_1", "currency": "jpy", "unit_amount": 500,
        "unit_amount_decimal": "500", "type": "one_time", "recurring": None, "nickname": "n",
        "metadata": {"k": "v"}, "lookup_key": None, "active": True, "created": T0}
    assert "updated" not in one  # prices have no `updated` in Stripe
    assert rec["type"] == "recurring" and rec["lookup_key"] == "SKU1-M"
    assert {k: rec["recurring"][k] for k in ("interval", "interval_count", "usage_type")} == {
        "interval": "month", "interval_count": 3, "usage_type": "licensed"}


def test_price_rejects_unknown_product_bad_currency_and_kwd_rounding(client, emu):
    _product(client, "prod_1")
    cases = [
        ({"product": "prod_x", "currency": "usd", "unit_amount": 1}, "product"),
        ({"product": "prod_1", "currency": "zzz", "unit_amount": 1}, "currency"),
        ({"product": "prod_1", "currency": "kwd", "unit_amount": 1005}, "unit_amount"),
        ({"product": "prod_1", "currency": "usd", "unit_amount": 1, "recurring": {"interval": "fortnight"}},
         "recurring[interval]"),
    ]
    for params, param in cases:
        with pytest.raises(stripe.InvalidRequestError) as err:
            client.v1.prices.create(params)
        assert err.value.param == param, params
    assert client.v1.prices.list({"active": True}).to_dict()["data"] == []


@pytest.mark.parametrize("field,value", [
    ("unit_amount", 5), ("currency", "eur"), ("recurring", {"interval": "year"}), ("product", "prod_1"),
    ("unit_amount_decimal", "5.5"), ("billing_scheme", "tiered"), ("tiers_mode", "graduated"),
    ("transform_quantity", {"divide_by": 2, "round": "up"}), ("type", "one_time"),
])
def test_immutable_price_fields_are_rejected(client, emu, field, value):
    _product(client, "prod_1")
    price = rq.execute(client, rq.create_price("prod_1", "usd", 1000, interval="month"))
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.prices.update(price["id"], {field: value})
    assert (err.value.http_status, err.value.code, err.value.param) == (400, "parameter_unknown", field)
    assert "immutable" in err.value.user_message
    assert rq.execute(client, rq.retrieve_price(price["id"])) == price


def test_update_price_mutable_fields(client, emu):
    _product(client, "prod_1")
    price = rq.execute(client, rq.create_price("prod_1", "usd", 1000, nickname="x", metadata={"a": "1"},
                                               lookup_key="k"))
    got = rq.execute(client, rq.update_price(price["id"], active=False, nickname=None, lookup_key=None,
                                             metadata={"a": "", "b": "2"}))
    assert (got["active"], got["nickname"], got["lookup_key"], got["metadata"]) == (False, None, None, {"b": "2"})
    # The cleared lookup key is free again.
    rq.execute(client, rq.create_price("prod_1", "usd", 1100, lookup_key="k"))


def test_lookup_key_is_unique_and_transfer_moves_it(client, emu):
    _product(client, "prod_1")
    old = rq.execute(client, rq.create_price("prod_1", "usd", 1000, lookup_key="SKU1"))
    with pytest.raises(stripe.InvalidRequestError) as err:
        rq.execute(client, rq.create_price("prod_1", "usd", 1200, lookup_key="SKU1"))
    assert err.value.param == "lookup_key"
    assert err.value.user_message == f"A price (`{old['id']}`) already uses that lookup key."
    new = rq.execute(client, rq.create_price("prod_1", "usd", 1200, lookup_key="SKU1", transfer_lookup_key=True))
    assert rq.execute(client, rq.retrieve_price(old["id"]))["lookup_key"] is None
    listed = rq.execute(client, rq.list_prices(lookup_keys=["SKU1"]))["data"]
    assert [p["id"] for p in listed] == [new["id"]]
    # And back, by update with transfer_lookup_key.
    with pytest.raises(stripe.InvalidRequestError):
        rq.execute(client, rq.update_price(old["id"], lookup_key="SKU1"))
    rq.execute(client, rq.update_price(old["id"], lookup_key="SKU1", transfer_lookup_key=True))
    assert rq.execute(client, rq.retrieve_price(new["id"]))["lookup_key"] is None
    assert [p["id"] for p in rq.execute(client, rq.list_prices(lookup_keys=["SKU1"]))["data"]] == [old["id"]]


# -- idempotency ----------------------------------------------------------------------------------

def test_idempotent_replay_and_mismatch(client, emu):
    _product(client, "prod_1")
    req = rq.create_price("prod_1", "usd", 1000, lookup_key="k1")
    first = client.v1.prices.create(req.params, {"idempotency_key": "key-1"})
    second = client.v1.prices.create(req.params, {"idempotency_key": "key-1"})
    assert second.id == first.id
    assert first.last_response.headers.get("Idempotent-Replayed") is None
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    assert emu.state()["prices"] == 1
    with pytest.raises(stripe.IdempotencyError) as err:
        client.v1.prices.create({**req.params, "unit_amount": 1001}, {"idempotency_key": "key-1"})
    assert err.value.http_status == 400
    with pytest.raises(stripe.IdempotencyError):  # same key on another endpoint
        client.v1.products.update("prod_1", {"name": "B"}, {"idempotency_key": "key-1"})
    entries = [(e["path"], e["idempotency_key"], e["status"], e["applied"], e["replayed"])
               for e in emu.journal if e["idempotency_key"] == "key-1"]
    assert entries == [
        ("/v1/prices", "key-1", 200, True, False),
        ("/v1/prices", "key-1", 200, False, True),
        ("/v1/prices", "key-1", 400, False, False),
        ("/v1/products/prod_1", "key-1", 400, False, False),
    ]
    assert rq.execute(client, rq.retrieve_product("prod_1"))["name"] == "A"


# -- auth, rate limit -----------------------------------------------------------------------------

def test_api_key_required(emu, make_cfg):
    status, body = _http(emu, "GET", "/v1/products")
    assert status == 401 and body["error"]["type"] == "invalid_request_error"
    status, _ = _http(emu, "GET", "/v1/products", headers={"Authorization": "Bearer sk_test_anything"})
    assert status == 200
    live = build_client(make_cfg(f"stripe.api_base={emu.url}"), api_key="sk_live_notallowed")
    with pytest.raises(stripe.AuthenticationError):
        rq.execute(live, rq.list_products())


def test_rate_limit_answers_429_rate_limit(client, emu):
    emu.set_rate_limit(1, burst=2)
    rq.execute(client, rq.list_products())
    rq.execute(client, rq.list_products())
    with pytest.raises(stripe.RateLimitError) as err:
        rq.execute(client, rq.list_products())
    assert err.value.http_status == 429 and err.value.error.code == "rate_limit"
    assert [e["status"] for e in emu.journal] == [200, 200, 429]
    assert emu.journal[-1]["fault"] == "throttled"


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    bucket = TokenBucket(10, burst=2, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] += 0.1
    assert [bucket.take(), bucket.take()] == [True, False]


# -- faults ---------------------------------------------------------------------------------------

def test_5xx_fault_is_before_the_write_and_the_retry_executes(client, emu):
    emu.faults.force("error_5xx", method="POST", path_prefix="/v1/products")
    req = rq.create_product("A", product_id="prod_1")
    with pytest.raises(stripe.APIError) as err:
        rq.execute(client, req, idempotency_key="k")
    assert err.value.http_status == 500
    assert emu.state()["products"] == 0
    assert rq.execute(client, req, idempotency_key="k")["id"] == "prod_1"
    assert [(e["status"], e["applied"], e["replayed"], e["fault"]) for e in emu.journal] == [
        (500, False, False, "error_5xx"), (200, True, False, None)]


def test_lost_response_applies_the_write_then_drops_and_the_retry_replays(client, emu):
    _product(client, "prod_1")
    emu.faults.force("lost_response", method="POST", path_prefix="/v1/prices")
    req = rq.create_price("prod_1", "usd", 700, lookup_key="k")
    with pytest.raises(stripe.APIConnectionError):
        rq.execute(client, req, idempotency_key="corr-1")
    assert emu.state()["prices"] == 1  # applied although the client saw an error
    again = rq.execute(client, req, idempotency_key="corr-1")
    assert emu.state()["prices"] == 1
    writes = [(e["applied"], e["replayed"], e["delivered"], e["fault"], e["object_id"])
              for e in emu.journal if e["path"] == "/v1/prices"]
    assert writes == [(True, False, False, "lost_response", again["id"]), (False, True, True, None, again["id"])]


def test_dropped_connection_applies_nothing(client, emu):
    emu.faults.force("drop", method="POST")
    with pytest.raises(stripe.APIConnectionError):
        _product(client, "prod_1")
    assert emu.state()["products"] == 0
    assert emu.journal[-1]["applied"] is False and emu.journal[-1]["delivered"] is False


def test_latency_and_injected_429(client, emu):
    emu.faults.configure(FaultConfig({}, latency_seconds=0.3))
    emu.faults.force("latency", method="GET")
    start = time.monotonic()
    rq.execute(client, rq.list_products())
    assert time.monotonic() - start >= 0.3
    emu.faults.force("rate_limit")
    with pytest.raises(stripe.RateLimitError) as err:
        rq.execute(client, rq.list_products())
    assert err.value.error.code == "rate_limit"
    assert [e["fault"] for e in emu.journal] == ["latency", "rate_limit"]


def test_random_faults_are_seeded_and_respect_rates():
    def fault_sequence(seed: int) -> list:
        injector = FaultInjector(FaultConfig({"error_5xx": 0.5}, seed=seed))
        return [injector.draw("GET", "/v1/products") for _ in range(200)]

    first, second, other = fault_sequence(7), fault_sequence(7), fault_sequence(8)
    assert first == second and first != other
    assert set(first) == {None, "error_5xx"}
    assert 60 <= first.count("error_5xx") <= 140
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultConfig({"meteor": 0.1})
    assert FaultConfig.parse("error_5xx=0.1,rate_limit=0.05,lost_response=0.02").rates == {
        "error_5xx": 0.1, "rate_limit": 0.05, "lost_response": 0.02}


# -- lists and pagination -------------------------------------------------------------------------

def test_list_order_cursors_and_filters(client, emu, clock):
    ids = []
    for i in range(25):
        clock.t = T0 + i // 2          # two products per second: ties broken by insertion order
        ids.append(_product(client, f"prod_{i:02d}", active=i % 5 != 0)["id"])
    newest_first = list(reversed(ids))
    pages, after = [], None
    while True:
        page = rq.execute(client, rq.list_products(limit=10, starting_after=after))
        pages.append(([o["id"] for o in page["data"]], page["has_more"]))
        assert page["object"] == "list" and page["url"] == "/v1/products"
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert pages == [(newest_first[:10], True), (newest_first[10:20], True), (newest_first[20:], False)]
    back = rq.execute(client, rq.list_products(limit=10, ending_before=newest_first[20]))
    assert ([o["id"] for o in back["data"]], back["has_more"]) == (newest_first[10:20], True)
    assert [o["id"] for o in rq.iter_all(client, rq.list_products(limit=7))] == newest_first
    window = rq.execute(client, rq.list_products(created_gte=T0 + 3, created_lt=T0 + 5))
    assert [o["id"] for o in window["data"]] == ["prod_09", "prod_08", "prod_07", "prod_06"]
    gt_lte = rq.execute(client, rq.list_products(created_gt=T0 + 10, created_lte=T0 + 12))
    assert [o["id"] for o in gt_lte["data"]] == ["prod_24", "prod_23", "prod_22"]
    inactive = rq.execute(client, rq.list_products(active=False))
    assert [o["id"] for o in inactive["data"]] == ["prod_20", "prod_15", "prod_10", "prod_05", "prod_00"]
    for bad in ({"limit": 0}, {"limit": 101}):
        with pytest.raises(stripe.InvalidRequestError) as err:
            client.v1.products.list(bad)
        assert err.value.param == "limit"


def test_price_lists_default_to_active_and_filter_by_product(client, emu, clock):
    _product(client, "prod_1")
    _product(client, "prod_2")
    a = rq.execute(client, rq.create_price("prod_1", "usd", 100, lookup_key="a"))
    clock.t += 1
    b = rq.execute(client, rq.create_price("prod_1", "usd", 200, active=False))
    clock.t += 1
    c = rq.execute(client, rq.create_price("prod_2", "eur", 300, lookup_key="c"))
    assert [p["id"] for p in rq.execute(client, rq.list_prices())["data"]] == [c["id"], a["id"]]
    assert [p["id"] for p in rq.execute(client, rq.list_prices(active=False))["data"]] == [b["id"]]
    assert [p["id"] for p in rq.execute(client, rq.list_prices(product="prod_1", active=True))["data"]] == [a["id"]]
    assert [p["id"] for p in rq.execute(client, rq.list_prices(lookup_keys=["a", "c", "zz"]))["data"]] == [
        c["id"], a["id"]]
    expanded = client.v1.prices.list({"expand": ["data.product"], "product": "prod_2"}).to_dict()
    assert expanded["data"][0]["product"]["id"] == "prod_2"


# -- journal and control endpoints over HTTP ------------------------------------------------------

def test_journal_state_and_reset_over_http(client, emu):
    _product(client, "prod_1")
    rq.execute(client, rq.update_product("prod_1", name="B"), idempotency_key="u1")
    rq.execute(client, rq.retrieve_product("prod_1"))
    status, journal = _http(emu, "GET", "/_emulator/journal")
    assert status == 200
    assert [(e["method"], e["path"], e["status"], e["applied"]) for e in journal["entries"]] == [
        ("POST", "/v1/products", 200, True),
        ("POST", "/v1/products/prod_1", 200, True),
        ("GET", "/v1/products/prod_1", 200, False),
    ]
    # Without our own key the SDK sends a random UUID on every POST; ours is recorded as given.
    keys = [e["idempotency_key"] for e in journal["entries"]]
    assert len(keys[0]) == 36 and keys[1:] == ["u1", None]
    assert journal["entries"][1]["params"] == {"name": "B"}
    assert journal["entries"][0]["stripe_version"] == "2026-10-28.endive"
    _, tail = _http(emu, "GET", "/_emulator/journal?since=2")
    assert [e["seq"] for e in tail["entries"]] == [3]
    _, state = _http(emu, "GET", "/_emulator/state")
    assert {k: state[k] for k in ("products", "prices", "requests", "writes_applied", "replays")} == {
        "products": 1, "prices": 0, "requests": 3, "writes_applied": 2, "replays": 0}
    status, _ = _http(emu, "POST", "/_emulator/faults", {"force": [{"kind": "error_5xx", "method": "GET"}]})
    assert status == 200
    with pytest.raises(stripe.APIError):
        rq.execute(client, rq.list_products())
    _, state = _http(emu, "POST", "/_emulator/reset", {})
    assert (state["products"], state["requests"]) == (0, 0)
    _product(client, "prod_1")  # the id and the idempotency records are free again


# -- seeding --------------------------------------------------------------------------------------

def _write_export(root: Path) -> None:
    (root / "products").mkdir(parents=True)
    (root / "prices").mkdir()
    products = [
        {"id": "prod_a", "object": "product", "name": "A", "active": True, "created": T0 - 100,
         "updated": T0 - 50, "metadata": {"internal_id": "A"}},
        {"id": "prod_b", "object": "product", "name": "B", "active": False, "created": T0 - 10,
         "updated": T0 - 10, "metadata": {}},
    ]
    (root / "products" / "part-0.jsonl").write_text("\n".join(json.dumps(p) for p in products) + "\n")
    prices = [{"id": "price_a1", "object": "price", "product": "prod_a", "currency": "usd", "unit_amount": 100,
               "active": True, "created": T0 - 90, "lookup_key": "A-1", "recurring": None}]
    (root / "prices" / "part-0.jsonl").write_text(json.dumps(prices[0]) + "\n")
    (root / "more.json").write_text(json.dumps({"object": "list", "data": [
        {"id": "price_b1", "object": "price", "product": "prod_b", "currency": "eur", "unit_amount": 5,
         "active": False, "created": T0 - 5, "recurring": {"interval": "year", "interval_count": 1}},
        {"id": "cus_1", "object": "customer"}]}))


def test_seed_from_export_keeps_ids_and_times(tmp_path, make_cfg, clock):
    _write_export(tmp_path / "export")
    with EmulatorServer(port=0, clock=clock, seed_from=str(tmp_path / "export")) as emu:
        client = build_client(make_cfg(f"stripe.api_base={emu.url}"), api_key=KEY)
        products = rq.execute(client, rq.list_products())["data"]
        assert [(p["id"], p["created"], p["updated"], p["active"]) for p in products] == [
            ("prod_b", T0 - 10, T0 - 10, False), ("prod_a", T0 - 100, T0 - 50, True)]
        assert [p["id"] for p in rq.execute(client, rq.list_prices(active=False))["data"]] == ["price_b1"]
        seeded = rq.execute(client, rq.retrieve_price("price_b1"))
        assert (seeded["type"], seeded["recurring"]["interval"]) == ("recurring", "year")
        # Seeded lookup keys are enforced like created ones.
        with pytest.raises(stripe.InvalidRequestError):
            rq.execute(client, rq.create_price("prod_a", "usd", 200, lookup_key="A-1"))
        assert emu.state()["seed"] == {"products": 2, "prices": 2, "skipped": 1, "replaced": 0,
                                       "lookup_key_conflicts": 0, "prices_without_product": 0}


def test_seed_malformed_line_names_file_and_line(tmp_path):
    (tmp_path / "products").mkdir()
    bad = tmp_path / "products" / "p.jsonl"
    bad.write_text('{"id": "prod_a", "object": "product", "name": "A"}\n{not json\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2"):
        list(read_seed_objects(tmp_path))


def test_cli_serves_seeded_emulator_until_sigterm(tmp_path):
    _write_export(tmp_path / "export")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recon = Path(sys.executable).with_name("recon")
    proc = subprocess.Popen(
        [str(recon), "stripe-emulator", "--port", str(port), "--seed-from", str(tmp_path / "export"),
         "--rate-limit", "50", "--faults", "error_5xx=0.1,lost_response=0.02", "--fault-seed", "3",
         "--set", f"storage.root={tmp_path / 'data'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )
    try:
        state = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/state", timeout=1) as resp:
                    state = json.loads(resp.read())
                    break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"emulator exited: {proc.stderr.read()}")
                time.sleep(0.1)
        assert state is not None and (state["products"], state["prices"]) == (2, 2)
        assert state["rate_limit"] == {"rate": 50.0, "burst": 50.0}
        assert (state["faults"]["rates"], state["faults"]["seed"]) == ({"error_5xx": 0.1, "lost_response": 0.02}, 3)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[0])["listening"] == f"http://127.0.0.1:{port}"


def test_cli_bad_fault_spec_is_a_clear_error(tmp_path):
    recon = Path(sys.executable).with_name("recon")
    proc = subprocess.run([str(recon), "stripe-emulator", "--port", "0", "--faults", "meteor=0.1",
                           "--set", f"storage.root={tmp_path}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "unknown fault kind(s) ['meteor']" in proc.stderr


def test_retrying_with_the_same_key_under_random_faults_applies_each_write_once(client, emu):
    emu.faults.configure(FaultConfig({"error_5xx": 0.25, "lost_response": 0.2, "drop": 0.1, "rate_limit": 0.1},
                                     seed=5))
    attempts = 0
    for i in range(20):
        req = rq.create_product(f"P{i}", product_id=f"prod_{i}", metadata={"internal_id": f"SKU{i}"})
        while True:
            attempts += 1
            try:
                rq.execute(client, req, idempotency_key=f"create-{i}")
                break
            except (stripe.APIError, stripe.APIConnectionError, stripe.RateLimitError):
                continue
    emu.faults.configure(FaultConfig())
    assert sorted(p["id"] for p in rq.iter_all(client, rq.list_products())) == sorted(f"prod_{i}" for i in range(20))
    applied = [e["idempotency_key"] for e in emu.journal if e["applied"]]
    assert sorted(applied) == sorted(f"create-{i}" for i in range(20))  # each key applied exactly once
    faults = {e["fault"] for e in emu.journal}
    assert {"error_5xx", "lost_response", "drop", "rate_limit"} <= faults and attempts > 20
