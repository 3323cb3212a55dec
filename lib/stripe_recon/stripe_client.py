"""The one place that builds the Stripe SDK client, finds the API key, and keeps the key secret.

- :func:`build_client` -> ``stripe.StripeClient`` with the configured API base (the local emulator or
  stripe-mock in tests), timeout, pinned API version and **no SDK retries** (the pusher and exporter
  retry themselves under one global rate budget; SDK retries would double-spend it).
- :func:`resolve_api_key` reads the key from the environment (``stripe.key_env``), AWS Secrets
  Manager (``stripe.aws_secret_id``: a plain string or JSON ``{"api_key": "..."}``) or Databricks
  secrets (``stripe.databricks_scope`` / ``stripe.databricks_key``).
- :func:`redact` masks ``sk_…``/``rk_…`` keys in any text; :func:`redacting` scrubs the key from
  every exception raised inside it (Stripe's own error messages may echo part of a key), and
  :class:`RedactingFilter` does the same for log records. Use them on every error path.

Example::

    client = build_client(cfg)
    with redacting():
        client.v1.products.retrieve("prod_1")
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import stripe

from .config import Config
from .errors import ReconError

log = logging.getLogger(__name__)

# Secret and restricted keys (sk_test_…, sk_live_…, rk_live_…); also a bare "Bearer <token>".
# The trailing look-ahead keeps redact() idempotent ("sk_live_[REDACTED]" is not matched again).
_KEY_RE = re.compile(r"\b(sk|rk)_(?:(test|live)_)?[A-Za-z0-9_*]{4,}(?![\[A-Za-z0-9_*])")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)(?!\[REDACTED\])[A-Za-z0-9_*\-.]{6,}")
REDACTED = "[REDACTED]"


def redact(text: Any, *secrets: str | None) -> str:
    """``text`` as a string with every Stripe secret/restricted key (and any of ``secrets``) masked.

    >>> redact("Invalid API Key provided: sk_test_abc123xyz")
    'Invalid API Key provided: sk_test_[REDACTED]'
    """
    out = str(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, REDACTED)
    out = _BEARER_RE.sub(lambda m: m.group(1) + REDACTED, out)
    return _KEY_RE.sub(lambda m: f"{m.group(1)}_{m.group(2) + '_' if m.group(2) else ''}{REDACTED}", out)


def _scrub(value: Any, secrets: tuple[str | None, ...]) -> Any:
    if isinstance(value, str):
        return redact(value, *secrets)
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v, secrets) for v in value)
    return value


def scrub_exception(exc: BaseException, *secrets: str | None) -> BaseException:
    """Redact keys from ``exc`` in place (message, args, Stripe's http_body/json_body) and return it.

    The exception keeps its type, so callers can still ``except stripe.RateLimitError``.
    """
    exc.args = tuple(_scrub(a, secrets) for a in exc.args)
    if isinstance(exc, stripe.StripeError):
        exc._message = redact(exc._message, *secrets) if exc._message is not None else None
        if exc.http_body is not None:
            exc.http_body = redact(exc.http_body, *secrets)
        if exc.json_body is not None:
            exc.json_body = _scrub(exc.json_body, secrets)
        if exc.error is not None and getattr(exc.error, "message", None):
            exc.error["message"] = redact(exc.error["message"], *secrets)
    # Chained exceptions (e.g. requests errors inside APIConnectionError) may repeat the text.
    for chained in (exc.__cause__, exc.__context__):
        if chained is not None and chained is not exc:
            chained.args = tuple(_scrub(a, secrets) for a in chained.args)
    return exc


@contextmanager
def redacting(*secrets: str | None) -> Iterator[None]:
    """Scrub Stripe keys (and ``secrets``) from any exception leaving the block; re-raise it."""
    try:
        yield
    except BaseException as exc:  # noqa: BLE001 - re-raised unchanged in type
        scrub_exception(exc, *secrets)
        raise


class RedactingFilter(logging.Filter):
    """A logging filter that masks Stripe keys in the formatted message (msg % args)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not break logging
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            scrub_exception(record.exc_info[1])
            record.exc_text = None
        return True


_FILTER = RedactingFilter()


def install_log_redaction(*logger_names: str) -> None:
    """Attach :class:`RedactingFilter` to the given loggers and to the root logger's handlers."""
    for name in logger_names or ("stripe_recon", "stripe"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


# -- the key ------------------------------------------------------------------------------------

def _check_key(key: str, origin: str) -> str:
    key = key.strip()
    if not key:
        raise ReconError(f"the Stripe API key from {origin} is empty. Put a secret key (sk_...) there.")
    if not key.startswith(("sk_", "rk_")):
        # Never echo the value: it may be a real secret pasted in the wrong place.
        raise ReconError(
            f"the value from {origin} does not look like a Stripe secret key (expected sk_... or rk_...). "
            "Check that the right secret is configured."
        )
    return key


def _key_from_env(cfg: Config, environ: dict[str, str] | os._Environ[str]) -> str:
    name = cfg.stripe.key_env
    value = environ.get(name)
    if value is None or not value.strip():
        raise ReconError(
            f"no Stripe API key: set the environment variable {name} (stripe.key_env), or set "
            "stripe.key_source to aws_secrets_manager or databricks. For the local emulator any "
            "sk_test_... value works."
        )
    return _check_key(value, f"environment variable {name}")


def _key_from_aws(cfg: Config) -> str:
    sc = cfg.stripe
    if not sc.aws_secret_id:
        raise ReconError("stripe.key_source is aws_secrets_manager but stripe.aws_secret_id is not set; "
                         "set it to the secret's name or ARN.")
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    origin = f"AWS Secrets Manager secret {sc.aws_secret_id!r}"
    try:
        client = boto3.client("secretsmanager", region_name=sc.aws_region, endpoint_url=sc.aws_endpoint_url)
        resp = client.get_secret_value(SecretId=sc.aws_secret_id)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise ReconError(
            f"cannot read {origin} ({code}). Create the secret or fix stripe.aws_secret_id / "
            "stripe.aws_region, and check the IAM permission secretsmanager:GetSecretValue."
        ) from None
    except BotoCoreError as exc:
        raise ReconError(f"cannot reach AWS Secrets Manager for {origin}: {redact(exc)}. "
                         "Check stripe.aws_region / stripe.aws_endpoint_url and credentials.") from None
    raw = resp.get("SecretString")
    if raw is None:
        raise ReconError(f"{origin} holds binary data; store the key as a string or JSON {{\"api_key\": ...}}.")
    raw = raw.strip()
    if raw.startswith("{"):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            raise ReconError(f"{origin} looks like JSON but does not parse; store a plain key or "
                             "JSON {\"api_key\": \"sk_...\"}.") from None
        if not isinstance(data, dict) or not isinstance(data.get("api_key"), str):
            raise ReconError(f"{origin} is JSON without a string field \"api_key\"; add it.")
        raw = data["api_key"]
    return _check_key(raw, origin)


def _key_from_databricks(cfg: Config) -> str:
    sc = cfg.stripe
    if not sc.databricks_scope or not sc.databricks_key:
        raise ReconError("stripe.key_source is databricks but stripe.databricks_scope and "
                         "stripe.databricks_key are not both set; set them to the secret's scope and key.")
    try:
        from databricks.sdk.runtime import dbutils  # type: ignore[import-not-found]
    except ImportError:
        raise ReconError(
            "stripe.key_source is databricks but this is not a Databricks runtime (databricks.sdk is "
            "not importable). Use key_source=env or aws_secrets_manager outside Databricks."
        ) from None
    origin = f"Databricks secret {sc.databricks_scope}/{sc.databricks_key}"
    try:
        value = dbutils.secrets.get(scope=sc.databricks_scope, key=sc.databricks_key)
    except Exception as exc:  # noqa: BLE001 - dbutils raises py4j/SDK-specific errors
        raise ReconError(f"cannot read {origin}: {redact(exc)}. Check the scope, key and ACLs.") from None
    return _check_key(value, origin)


def resolve_api_key(cfg: Config, environ: dict[str, str] | None = None) -> str:
    """The Stripe secret key from ``cfg.stripe.key_source``; a :class:`ReconError` naming what to
    set when it is missing. The error text never contains the key."""
    source = cfg.stripe.key_source
    if source == "env":
        return _key_from_env(cfg, os.environ if environ is None else environ)
    if source == "aws_secrets_manager":
        return _key_from_aws(cfg)
    if source == "databricks":
        return _key_from_databricks(cfg)
    raise ReconError(f"unknown stripe.key_source {source!r}; use env, aws_secrets_manager or databricks")


def api_version(cfg: Config) -> str:
    """The pinned API version. Stripe names versions ``YYYY-MM-DD.<release>``; a bare date equal to
    the SDK's own pinned date is completed with the SDK's release name."""
    pinned = cfg.stripe.api_version
    current = stripe._ApiVersion.CURRENT  # noqa: SLF001 - the SDK's published pin
    if "." not in pinned and current.split(".", 1)[0] == pinned:
        return current
    return pinned


def build_client(cfg: Config, api_key: str | None = None) -> stripe.StripeClient:
    """A ``StripeClient`` for ``cfg`` (key from :func:`resolve_api_key` unless given).

    Example::

        client = build_client(cfg.with_overrides("stripe.api_base=http://127.0.0.1:12111"))
        client.v1.products.list({"limit": 10})
    """
    key = api_key if api_key is not None else resolve_api_key(cfg)
    base = cfg.stripe.api_base
    install_log_redaction()
    return stripe.StripeClient(
        key,
        stripe_version=api_version(cfg),
        base_addresses={"api": base.rstrip("/")} if base else None,
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=cfg.stripe.timeout_seconds),
    )
