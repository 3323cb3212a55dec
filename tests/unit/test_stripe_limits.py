"""Stripe's limits (stripe_limits.py): declared once, documented, enforced by the internal suites for
every modelled field, refused by the emulator as Stripe refuses them, and a value over a limit is
quarantined at landing and never planned (issue #16, "trust under misuse")."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import stripe
from pyspark.sql import functions as F

from stripe_recon import canonical, tables
from stripe_recon.cli import main
from stripe_recon.emulator import EmulatorServer
from stripe_recon.stripe_client import build_client
from stripe_recon.stripe_limits import LIMITS, markdown_table

REPO = Path(__file__).resolve().parents[2]
CONF = str(REPO / "conf" / "local.yaml")
INTERNAL_COLUMNS = {"product": canonical.INTERNAL_PRODUCT_COLUMNS, "price": canonical.INTERNAL_PRICE_COLUMNS}
SUITE = {"product": "internal_products", "price": "internal_prices"}


def _suite_limits(entity: str) -> set[str]:
    suite = json.loads((REPO / "conf" / "expectations" / f"{SUITE[entity]}.json").read_text())
    return {e["meta"]["stripe_limit"] for e in suite["expectations"] if e.get("meta", {}).get("stripe_limit")}


def test_docs_show_the_declared_limits():
    assert markdown_table() in (REPO / "docs" / "internals.md").read_text()


@pytest.mark.parametrize("entity", ["product", "price"])
def test_every_limit_of_a_modelled_column_has_its_internal_row_rule(entity):
    """A column joining canonical.INTERNAL_*_COLUMNS (issue #13) fails here until its suite checks the limit."""
    declared = {lim.key for lim in LIMITS.values() if lim.entity in (entity, "metadata")
                and lim.column in INTERNAL_COLUMNS[entity]}
    assert declared <= _suite_limits(entity)
    assert _suite_limits(entity) <= set(LIMITS)


def test_the_fields_not_modelled_yet_are_declared_for_issue_13():
    modelled = set(canonical.INTERNAL_PRODUCT_COLUMNS) | set(canonical.INTERNAL_PRICE_COLUMNS)
    assert sorted(k for k, lim in LIMITS.items() if lim.column not in modelled) == [
        "product_image_url", "product_images", "product_marketing_feature_name", "product_marketing_features",
        "product_statement_descriptor", "product_unit_label", "product_url"]


def _spec() -> dict | None:
    """Stripe's OpenAPI spec as stripe-mock embeds it (Go module cache), or None when not installed."""
    try:
        cache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        cache = ""
    for root in filter(None, [cache, os.path.expanduser("~/go/pkg/mod")]):
        path = Path(root) / "github.com" / "stripe" / "stripe-mock@v0.197.0" / "embedded" / "openapi" / "spec3.json"
        if path.exists():
            return json.loads(path.read_text())
    return None


def test_spec_figures_are_what_stripe_mocks_openapi_spec_says():
    spec = _spec()
    if spec is None:
        pytest.skip("stripe-mock v0.197.0 is not in the Go module cache (make stripe-mock)")

    def request(path: str) -> dict:
        return spec["paths"][path]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]

    checked = 0
    for lim in LIMITS.values():
        if lim.entity == "metadata" or not lim.spec.startswith("maxLength "):
            continue
        props = request("/v1/products" if lim.entity == "product" else "/v1/prices")["properties"]
        param = lim.param.removesuffix("[].name")
        schema = props[param]["items"]["properties"]["name"] if lim.param.endswith("[].name") else props[param]
        assert schema["maxLength"] == int(lim.spec.split()[1]), lim.key
        checked += 1
    assert checked == 8
    product = spec["components"]["schemas"]["product"]["properties"]
    assert product["url"]["maxLength"] == LIMITS["product_url"].max
    assert product["images"]["items"]["maxLength"] == LIMITS["product_image_url"].max
    assert product["metadata"]["additionalProperties"]["maxLength"] == LIMITS["metadata_value"].max
    feature = spec["components"]["schemas"]["product_marketing_feature"]["properties"]["name"]["description"]
    assert f"Up to {LIMITS['product_marketing_feature_name'].max} characters" in feature
    assert f"up to {LIMITS['product_images'].max} URLs" in request("/v1/products")["properties"]["images"]["description"]
    assert f"up to {LIMITS['price_lookup_key'].max} characters" in request("/v1/prices")["properties"]["lookup_key"][
        "description"]


@pytest.mark.parametrize("product_key, reasons", [
    ("metadata.internal_id", ["metadata_too_many_keys", "product_id_too_long"]),  # internal_id is sent too
    ("id", []),  # the id is the Stripe id: no metadata value, no extra key
])
def test_metadata_and_id_rules_follow_the_product_key_mapping(spark, make_cfg, product_key, reasons):
    from stripe_recon import gx_suites, quarantine

    cfg = make_cfg(f"mapping.product_key={product_key}")
    rules = [r for r in gx_suites.landing_row_rules(gx_suites.load_suite("internal_products", cfg), "product_id", cfg)
             if r.name.split(":")[0] in ("metadata_too_many_keys", "product_id_too_long")]
    meta = {**{f"k{i}": "v" for i in range(50)}, "internal_id": "ignored", "gone": None}  # 50 keys sent, or 51
    df = spark.createDataFrame([("i" * 501, meta)], "product_id string, metadata map<string,string>")
    got = quarantine.flag(df, rules).first()[quarantine.REASONS]
    assert [r.split(":")[0] for r in got] == reasons


# -- the emulator refuses what Stripe refuses -------------------------------------------------------

def _value(key: str, n: int) -> tuple[str, dict]:
    """(resource, create params) holding a value of size ``n`` for limit ``key``."""
    product = {
        "product_name": {"name": "x" * n},
        "product_description": {"description": "x" * n},
        "product_statement_descriptor": {"statement_descriptor": "X" * n},
        "product_unit_label": {"unit_label": "x" * n},
        "product_url": {"url": "x" * n},
        "product_images": {"images": [f"https://img.test/{i}" for i in range(n)]},
        "product_image_url": {"images": ["x" * n]},
        "product_marketing_features": {"marketing_features": [{"name": f"f{i}"} for i in range(n)]},
        "product_marketing_feature_name": {"marketing_features": [{"name": "x" * n}]},
        "metadata_keys": {"metadata": {f"k{i}": "v" for i in range(n)}},
        "metadata_key": {"metadata": {"k" * n: "v"}},
        "metadata_value": {"metadata": {"k": "v" * n}},
    }
    price = {"price_nickname": {"nickname": "x" * n}, "price_lookup_key": {"lookup_key": "x" * n}}
    if key in product:
        return "product", {"name": "A", **product[key]}
    return "price", {"product": "prod_base", "currency": "usd", "unit_amount": 100, **price[key]}


@pytest.fixture(scope="module")
def emu_client(tmp_path_factory):
    from stripe_recon.config import load_config

    with EmulatorServer(port=0) as emu:
        cfg = load_config(CONF, [f"storage.root={tmp_path_factory.mktemp('lim')}", f"stripe.api_base={emu.url}"],
                          environ={})
        client = build_client(cfg, api_key="sk_test_limits")
        client.v1.products.create({"id": "prod_base", "name": "Base"})
        yield client


@pytest.mark.parametrize("key", list(LIMITS))
def test_emulator_accepts_a_value_at_the_limit_and_refuses_one_over(emu_client, key):
    lim = LIMITS[key]
    resource, at_limit = _value(key, lim.max)
    create = emu_client.v1.products.create if resource == "product" else emu_client.v1.prices.create
    create(at_limit)
    with pytest.raises(stripe.InvalidRequestError) as err:
        create(_value(key, lim.max + 1)[1])
    body = err.value.json_body["error"]
    assert err.value.http_status == 400 and body["type"] == "invalid_request_error"
    assert body["param"].split("[")[0] == lim.param.split(" ")[0].split("[")[0]
    assert body["code"] in ("parameter_invalid_string", "parameter_invalid_array")


def test_emulator_refuses_an_empty_metadata_key(emu_client):
    """``metadata[]=v`` is an array in a form, not a key: Stripe's hash check refuses it."""
    with pytest.raises(stripe.InvalidRequestError) as err:
        emu_client.v1.products.create({"name": "A", "metadata": {"": "v"}})
    assert (err.value.http_status, err.value.code, err.value.param) == (400, "parameter_invalid_hash", "metadata")


# -- through the CLI: a 100,000-character name is quarantined, never planned -------------------------

def test_cli_quarantines_a_100000_character_name_and_never_plans_it(spark, tmp_path, capsys):
    root = tmp_path / "root"

    def recon(*args: str) -> int:
        capsys.readouterr()
        return main([*args, "--config", CONF, "--set", f"storage.root={root}", "--set", "guard.max_change_ratio=1",
                     "--set", "console.plain_progress_seconds=0"])

    (tmp_path / "products.csv").write_text(f"product_id,name,active\nP1,{'x' * 100_000},true\nP2,Beta,true\n")
    (tmp_path / "prices.csv").write_text("price_id,product_id,currency,amount\nPR1,P1,usd,9.99\nPR2,P2,usd,9.99\n")
    export = tmp_path / "stripe.jsonl"
    export.write_text("".join(json.dumps(o) + "\n" for i, name in ((1, "Alpha"), (2, "Beta")) for o in (
        {"id": f"prod_{i}", "object": "product", "name": name, "active": True, "created": 1_767_225_600,
         "metadata": {"internal_id": f"P{i}"}, "livemode": False},
        {"id": f"price_{i}", "object": "price", "product": f"prod_{i}", "lookup_key": f"PR{i}", "currency": "usd",
         "unit_amount": 999, "active": True, "type": "one_time", "created": 1_767_225_600, "livemode": False,
         "metadata": {}})))
    assert recon("land", "internal", "--format", "csv", "--products", str(tmp_path / "products.csv"),
                 "--prices", str(tmp_path / "prices.csv")) == 0
    assert recon("land", "stripe", "--from-files", str(export)) == 0
    # (validate is not needed: the record never reaches silver; tests/unit/test_validate.py covers the gate)
    assert recon("detect") == 0
    assert recon("plan") == 0

    from stripe_recon.config import load_config

    cfg = load_config(CONF, [f"storage.root={root}"], environ={})
    q = tables.read(spark, cfg, tables.GOLD_QUARANTINE).where("entity = 'product'").select("key", "reasons").collect()
    assert [(r.key, r.reasons) for r in q] == [
        ("P1", ["name_too_long: Stripe accepts at most 250 characters in a product name"])]
    assert tables.read(spark, cfg, tables.SILVER_INTERNAL_PRODUCTS).where("product_id = 'P1'").count() == 0
    corrections = tables.read(spark, cfg, tables.GOLD_CORRECTIONS)
    assert corrections.where((F.col("key") == "P1") & (F.col("entity") == "product")).count() == 0
    assert corrections.where(F.length("payload") > 1000).count() == 0
