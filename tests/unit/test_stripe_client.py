"""stripe_client: client construction, the three key sources, and that the key never leaks."""

from __future__ import annotations

import json
import logging
import sys
import types

import boto3
import pytest
import stripe

from stripe_recon import stripe_requests as rq
from stripe_recon.emulator import EmulatorServer
from stripe_recon.errors import ReconError
from stripe_recon.stripe_client import build_client, install_log_redaction, redact, resolve_api_key

SECRET = "sk_live_51SuperSecretValueXYZ9876"


@pytest.fixture
def emu():
    server = EmulatorServer(port=0).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)


# -- build_client ---------------------------------------------------------------------------------

def test_build_client_settings(make_cfg):
    cfg = make_cfg("stripe.api_base=http://127.0.0.1:9/", "stripe.timeout_seconds=7.5")
    client = build_client(cfg, api_key="sk_test_x")
    options = client._requestor._options
    assert options.base_addresses["api"] == "http://127.0.0.1:9"
    assert options.max_network_retries == 0
    assert options.stripe_version == "2026-10-28.endive"  # the bare pinned date, completed with the SDK's release
    assert isinstance(client._requestor._client, stripe.RequestsClient)
    assert client._requestor._client._timeout == 7.5
    other = build_client(make_cfg("stripe.api_version=2025-03-31.basil", "stripe.api_base=null"),
                         api_key="sk_test_x")
    assert other._requestor._options.stripe_version == "2025-03-31.basil"
    assert other._requestor._options.base_addresses["api"] == "https://api.stripe.com"


def test_build_client_talks_to_the_configured_base_with_the_pinned_version(emu, make_cfg, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_from_env")
    client = build_client(make_cfg(f"stripe.api_base={emu.url}"))
    assert rq.execute(client, rq.list_products()) == {"object": "list", "data": [], "has_more": False,
                                                      "url": "/v1/products"}
    assert [(e["path"], e["stripe_version"], e["status"]) for e in emu.journal] == [
        ("/v1/products", "2026-10-28.endive", 200)]


def test_no_sdk_retries_on_a_5xx(emu, make_cfg):
    client = build_client(make_cfg(f"stripe.api_base={emu.url}"), api_key="sk_test_x")
    emu.faults.force("error_5xx", times=3)
    with pytest.raises(stripe.APIError):
        rq.execute(client, rq.list_products())
    assert len(emu.journal) == 1  # the SDK did not retry: our pusher/exporter own retries


# -- resolve_api_key ------------------------------------------------------------------------------

def test_key_from_env_and_missing_env_says_what_to_set(make_cfg):
    assert resolve_api_key(make_cfg(), environ={"STRIPE_API_KEY": " sk_test_abc \n"}) == "sk_test_abc"
    cfg = make_cfg("stripe.key_env=MY_STRIPE_KEY")
    assert resolve_api_key(cfg, environ={"MY_STRIPE_KEY": "rk_test_abc"}) == "rk_test_abc"
    with pytest.raises(ReconError, match="set the environment variable MY_STRIPE_KEY"):
        resolve_api_key(cfg, environ={"STRIPE_API_KEY": "sk_test_abc"})


def test_a_value_that_is_not_a_stripe_key_is_refused_without_echoing_it(make_cfg):
    with pytest.raises(ReconError) as err:
        resolve_api_key(make_cfg(), environ={"STRIPE_API_KEY": "pk_live_PublishableOops123"})
    assert "does not look like a Stripe secret key" in str(err.value)
    assert "PublishableOops" not in str(err.value)


def test_key_from_aws_secrets_manager_plain_and_json(make_cfg, moto_url, aws_env):
    sm = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_url)
    sm.create_secret(Name="stripe/plain", SecretString="sk_test_plainsecret")
    sm.create_secret(Name="stripe/json", SecretString=json.dumps({"api_key": "sk_test_jsonsecret", "x": 1}))
    sm.create_secret(Name="stripe/json-without-key", SecretString=json.dumps({"token": "sk_test_zzz"}))

    def cfg(secret: str):
        return make_cfg("stripe.key_source=aws_secrets_manager", f"stripe.aws_secret_id={secret}",
                        "stripe.aws_region=us-east-1", f"stripe.aws_endpoint_url={moto_url}")

    assert resolve_api_key(cfg("stripe/plain")) == "sk_test_plainsecret"
    assert resolve_api_key(cfg("stripe/json")) == "sk_test_jsonsecret"
    with pytest.raises(ReconError, match="without a string field \"api_key\""):
        resolve_api_key(cfg("stripe/json-without-key"))
    with pytest.raises(ReconError) as err:
        resolve_api_key(cfg("stripe/absent"))
    assert "'stripe/absent'" in str(err.value) and "ResourceNotFoundException" in str(err.value)
    with pytest.raises(ReconError, match="stripe.aws_secret_id is not set"):
        resolve_api_key(make_cfg("stripe.key_source=aws_secrets_manager"))


def test_key_from_databricks_off_and_on_databricks(make_cfg, monkeypatch):
    cfg = make_cfg("stripe.key_source=databricks", "stripe.databricks_scope=recon", "stripe.databricks_key=stripe")
    monkeypatch.setitem(sys.modules, "databricks", None)  # not a Databricks runtime
    with pytest.raises(ReconError, match="not a Databricks runtime"):
        resolve_api_key(cfg)
    with pytest.raises(ReconError, match="databricks_scope and stripe.databricks_key"):
        resolve_api_key(make_cfg("stripe.key_source=databricks"))

    # On Databricks, dbutils is provided by the runtime; stand in for that platform object only.
    calls = []

    class Secrets:
        def get(self, scope: str, key: str) -> str:
            calls.append((scope, key))
            return "sk_test_fromdatabricks"

    runtime = types.ModuleType("databricks.sdk.runtime")
    runtime.dbutils = types.SimpleNamespace(secrets=Secrets())
    monkeypatch.setitem(sys.modules, "databricks", types.ModuleType("databricks"))
    monkeypatch.setitem(sys.modules, "databricks.sdk", types.ModuleType("databricks.sdk"))
    monkeypatch.setitem(sys.modules, "databricks.sdk.runtime", runtime)
    assert resolve_api_key(cfg) == "sk_test_fromdatabricks"
    assert calls == [("recon", "stripe")]


# -- redaction ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("Invalid API Key provided: sk_live_51Abc123", "Invalid API Key provided: sk_live_[REDACTED]"),
    ("key=rk_test_abcd1234 ok", "key=rk_test_[REDACTED] ok"),
    ("Invalid API Key provided: sk_live_************9876", "Invalid API Key provided: sk_live_[REDACTED]"),
    ("Authorization: Bearer sk_test_x12345", "Authorization: Bearer [REDACTED]"),
    ("task_id=7 risk_level=low", "task_id=7 risk_level=low"),
])
def test_redact(text, expected):
    assert redact(text) == expected


def test_redact_explicit_secret():
    assert redact("token abc-secret-value here", "abc-secret-value") == "token [REDACTED] here"


def test_a_failing_call_leaks_no_key_in_exception_or_logs(emu, make_cfg, caplog):
    client = build_client(make_cfg(f"stripe.api_base={emu.url}"), api_key=SECRET)
    install_log_redaction()
    log = logging.getLogger("stripe_recon.push")
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(stripe.AuthenticationError) as err:
            rq.execute(client, rq.retrieve_product("prod_1"))
        exc = err.value
        log.error("push failed: %s (key was %s)", exc, SECRET, exc_info=exc)
    # The emulator echoes the key masked as Stripe does (sk_live_****9876); nothing of it survives.
    texts = [str(exc), repr(exc), repr(exc.args), json.dumps(exc.json_body), exc.http_body or "",
             exc.user_message or "", caplog.text]
    for text in texts:
        assert SECRET not in text
        assert "9876" not in text
        assert "SuperSecret" not in text
    assert "sk_live_[REDACTED]" in str(exc)
    assert "push failed" in caplog.text and "[REDACTED]" in caplog.text


def test_missing_key_error_names_the_variable_not_a_value(make_cfg, monkeypatch):
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    with pytest.raises(ReconError) as err:
        build_client(make_cfg())
    assert "STRIPE_API_KEY" in str(err.value) and "stripe.key_env" in str(err.value)


def test_retry_decision_on_real_errors_from_the_emulator(emu, make_cfg):
    client = build_client(make_cfg(f"stripe.api_base={emu.url}"), api_key="sk_test_x")
    rq.execute(client, rq.create_product("A", product_id="prod_1"), idempotency_key="k1")

    def decision(req, key=None, fault=None):
        if fault:
            emu.faults.force(fault)
        with pytest.raises(stripe.StripeError) as err:
            rq.execute(client, req, idempotency_key=key)
        return rq.retry_decision(err.value)

    listing = rq.list_products()
    assert decision(listing, fault="rate_limit") == (True, "rate_limit")
    assert decision(listing, fault="error_5xx") == (True, "server_error")
    assert decision(listing, fault="drop") == (True, "connection")
    assert decision(rq.create_product("B", product_id="prod_1")) == (False, "http_400")
    assert decision(rq.create_product("C", product_id="prod_2"), key="k1") == (False, "idempotency_error")
    assert decision(rq.retrieve_product("prod_missing")) == (False, "http_404")
    hinted = stripe.APIError("boom", http_status=500, headers={"Stripe-Should-Retry": "false"})
    assert rq.retry_decision(hinted) == (False, "stripe_should_not_retry")
    assert rq.retry_decision(ValueError("x")) == (False, "ValueError")
