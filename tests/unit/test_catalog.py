"""catalog.py: the one declaration of Stripe's catalog parameters, and what derives from it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from stripe_recon import catalog, plan, stripe_requests
from stripe_recon.config import Attribute, load_config
from stripe_recon.emulator import store


def test_columns_find_their_parameter():
    assert catalog.param_of("price", "interval").name == "recurring"
    assert catalog.param_of("price", "interval_count").change == "replace"
    assert catalog.param_of("price", "metadata.color").name == "metadata"
    assert catalog.param_of("price", "tax_behavior").change == "while_unspecified"
    assert catalog.param_of("product", "name").change == "update"
    assert catalog.param_of("price", "created") is None
    assert catalog.replaces("price", "unit_amount") and not catalog.replaces("price", "nickname")
    assert not catalog.replaces("price", "no_such_column")


def test_each_parameter_and_column_is_declared_once():
    pairs = [(p.entity, p.name) for p in catalog.PARAMS]
    assert len(pairs) == len(set(pairs))
    columns = [(p.entity, c) for p in catalog.PARAMS for c in p.columns]
    assert len(columns) == len(set(columns))


def test_every_default_attribute_is_a_declared_column():
    cfg = load_config(environ={})
    for entity, attrs in (("product", cfg.attributes.product), ("price", cfg.attributes.price)):
        for name, attr in attrs.items():
            assert catalog.param_of(entity, attr.stripe) is not None, f"attributes.{entity}.{name}: {attr.stripe}"


def test_request_builders_send_only_what_stripe_updates():
    """update_price / update_product keywords are parameters Stripe accepts on an update."""
    for entity, builder in (("price", stripe_requests.update_price), ("product", stripe_requests.update_product)):
        keywords = {n for n, p in inspect.signature(builder).parameters.items() if p.kind is p.KEYWORD_ONLY}
        assert keywords and keywords <= catalog.updatable(entity), (entity, keywords - catalog.updatable(entity))


def test_emulator_checks_follow_the_declaration():
    assert store.PRICE_IMMUTABLE == catalog.names("price", change="replace")
    assert store.PRICE_UPDATE - {"expand"} == catalog.updatable("price")
    assert "id" in store.PRODUCT_CREATE and "id" not in store.PRODUCT_UPDATE
    assert "default_price" in store.PRODUCT_UPDATE and "default_price" not in store.PRODUCT_CREATE
    assert not store.PRICE_CREATE & store.PRICE_NOT_EMULATED


@pytest.mark.parametrize("stripe,compare,in_place", [
    ("nickname", "exact", True),
    ("active", "exact", False),             # its own line: re-activate, or archive_price
    ("metadata", "map", False),
    ("tax_behavior", "exact", False),       # only while unspecified: needs Stripe's value
    ("interval", "exact", False),           # replace_price
    ("unit_amount", "exact", False),
])
def test_plan_updates_in_place_only_what_stripe_updates(stripe, compare, in_place):
    assert plan._set_in_place(Attribute(internal=stripe, stripe=stripe, compare=compare)) is in_place


def test_docs_show_the_declaration():
    assert catalog.markdown_table() in (Path(__file__).resolve().parents[2] / "docs" / "internals.md").read_text()
