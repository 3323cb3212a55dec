"""Contract: every request our exporter and pusher build (stripe_requests) is accepted by Stripe's
OpenAPI spec, as enforced by stripe-mock, through the real SDK and build_client."""

from __future__ import annotations

import pytest
import stripe

from stripe_recon import stripe_requests as rq
from stripe_recon.stripe_client import build_client

T0 = 1_700_000_000

# (name, request, expected "object" of the response)
REQUESTS = [
    # exporter: windows over created, both active states, pages, cursors
    ("list products", rq.list_products(), "list"),
    ("list products active window", rq.list_products(active=True, created_gte=T0, created_lt=T0 + 86400, limit=100),
     "list"),
    ("list products archived", rq.list_products(active=False, limit=1), "list"),
    ("list products after cursor", rq.list_products(limit=50, starting_after="prod_cursor",
                                                    created_gt=T0, created_lte=T0 + 5), "list"),
    ("list products before cursor", rq.list_products(ending_before="prod_cursor"), "list"),
    ("list prices active window", rq.list_prices(active=True, created_gte=T0, created_lt=T0 + 60, limit=100), "list"),
    ("list prices archived after cursor", rq.list_prices(active=False, starting_after="price_cursor", limit=100),
     "list"),
    ("list prices by lookup keys", rq.list_prices(lookup_keys=[f"SKU-{i}" for i in range(10)]), "list"),
    ("list prices of a product", rq.list_prices(product="prod_1", active=False), "list"),
    # incremental Stripe side (land/stripe_events.py): catalog events since a cursor, paged
    ("list events since cursor", rq.list_events(types=["product.created", "product.updated", "product.deleted",
                                                       "price.created", "price.updated", "price.deleted"],
                                                created_gte=T0, limit=100), "list"),
    ("list events after cursor", rq.list_events(types=["price.updated"], starting_after="evt_cursor"), "list"),
    ("retrieve product", rq.retrieve_product("prod_1"), "product"),
    ("retrieve price", rq.retrieve_price("price_1"), "price"),
    # pusher: products
    ("create product full", rq.create_product("Widget", product_id="prod_SKU-1", description="Blue widget",
                                              metadata={"internal_id": "SKU-1", "tier": "gold"},
                                              tax_code="txcd_10000000"), "product"),
    ("create product minimal", rq.create_product("Bare"), "product"),
    ("create product inactive", rq.create_product("Old", product_id="prod_old", active=False), "product"),
    ("update product name", rq.update_product("prod_1", name="New name"), "product"),
    ("update product clear description", rq.update_product("prod_1", description=None), "product"),
    ("update product description", rq.update_product("prod_1", description="Text"), "product"),
    ("update product archive", rq.archive_product("prod_1"), "product"),
    ("update product reactivate", rq.update_product("prod_1", active=True), "product"),
    ("update product metadata unset key", rq.update_product("prod_1", metadata={"gone": "", "kept": "v",
                                                                                 "none": None}), "product"),
    ("update product default price", rq.update_product("prod_1", default_price="price_2"), "product"),
    ("update product tax code", rq.update_product("prod_1", tax_code="txcd_10000000"), "product"),
    ("update product clear tax code", rq.update_product("prod_1", tax_code=None), "product"),
    ("update product all", rq.update_product("prod_1", name="N", description="", active=False,
                                             metadata={"a": "1", "b": ""}, default_price="price_2",
                                             tax_code="txcd_10000000"), "product"),
    # pusher: prices
    ("create price one-time", rq.create_price("prod_1", "usd", 1999), "price"),
    ("create price recurring full", rq.create_price("prod_1", "eur", 1000, interval="month", interval_count=3,
                                                    lookup_key="SKU-1-M", transfer_lookup_key=True,
                                                    nickname="Monthly", metadata={"internal_id": "SKU-1-M"}),
     "price"),
    ("create price yearly zero-decimal", rq.create_price("prod_1", "JPY", 12000, interval="year",
                                                         lookup_key="SKU-2"), "price"),
    ("create price inactive", rq.create_price("prod_1", "usd", 500, active=False), "price"),
    ("update price archive", rq.archive_price("price_1"), "price"),
    ("update price nickname", rq.update_price("price_1", nickname="Nick"), "price"),
    ("update price clear nickname", rq.update_price("price_1", nickname=None), "price"),
    ("update price lookup key", rq.update_price("price_1", lookup_key="SKU-9", transfer_lookup_key=True), "price"),
    ("update price clear lookup key", rq.update_price("price_1", lookup_key=None), "price"),
    ("update price metadata", rq.update_price("price_1", metadata={"a": "1", "b": None}), "price"),
    ("update price all", rq.update_price("price_1", active=True, nickname="x", lookup_key="k",
                                         metadata={"m": "v"}), "price"),
    ("delete product", rq.delete_product("prod_1"), "product"),
]


@pytest.fixture(scope="module")
def client(stripe_mock_url, tmp_path_factory):
    from tests.conftest import _test_config

    cfg = _test_config(tmp_path_factory.mktemp("contract"), f"stripe.api_base={stripe_mock_url}")
    return build_client(cfg, api_key="sk_test_123")


@pytest.mark.parametrize("name,req,kind", REQUESTS, ids=[r[0] for r in REQUESTS])
def test_request_is_accepted_by_stripes_spec(client, name, req, kind):
    key = f"contract-{name}" if req.is_write else None
    resp = rq.execute(client, req, idempotency_key=key)
    assert resp["object"] == kind, (name, resp)
    if kind == "list":
        assert isinstance(resp["data"], list) and isinstance(resp["has_more"], bool)


def test_iter_all_pages_through_a_list(client):
    got = list(rq.iter_all(client, rq.list_prices(active=False, limit=100)))
    assert got and all(p["object"] == "price" for p in got)


def test_stripe_mock_rejects_what_stripe_rejects(client):
    """The suite can fail: an immutable price field and an unknown product field are refused."""
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.prices.update("price_1", {"unit_amount": 5})
    assert err.value.http_status == 400
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.update("prod_1", {"colour": "red"})
