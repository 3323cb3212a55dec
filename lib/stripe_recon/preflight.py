"""Checks a command runs before it starts Spark, so a user error costs a second and reads as one line.

- :func:`storage_root`: a local ``storage.root`` can be created and written (remote roots are left
  to their file system);
- :func:`internal_inputs`: the local internal input paths exist, their format can be told from the
  path (land/formats.py) and they are not empty files;
- :func:`stripe_api`: the Stripe key can be found, the API base answers and accepts the key (one
  ``GET /v1/products?limit=1`` under the run's rate budget, with the pusher's retries);
- :func:`stripe_error_line`: any Stripe SDK error as one line (401, unreachable base, others), used
  here and by the CLI for errors that surface later.

Example::

    preflight.storage_root(cfg); preflight.internal_inputs(cfg); preflight.stripe_api(cfg)
"""

from __future__ import annotations

import os
import re
import uuid

import stripe

from .config import Config
from .errors import InputError, ReconError
from .land import formats


def _local_root(root: str) -> str | None:
    if root.startswith("file:"):
        return "/" + root[len("file:"):].lstrip("/")
    return None if "://" in root else root


def storage_root(cfg: Config) -> None:
    """Raise InputError when a local ``storage.root`` cannot be created or written."""
    root = cfg.storage.root
    local = _local_root(root)
    if local is None:
        return
    probe = os.path.join(local, f".recon-write-probe-{uuid.uuid4().hex[:8]}")
    try:
        os.makedirs(local, exist_ok=True)
        with open(probe, "w") as fh:
            fh.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise InputError(f"storage root {root} is not writable ({exc.strerror or exc}): set storage.root "
                         "(or RECON_STORAGE_ROOT) to a folder this user can write") from None


def internal_inputs(cfg: Config) -> None:
    """Raise InputError for a local internal input path that is missing, unreadable as its format
    (by name), or an empty file. JDBC, remote URIs and unset paths are left to the landing stage."""
    src = cfg.sources.internal
    if src.format == "jdbc":
        return
    for plural in ("products", "prices"):
        path = getattr(src, plural)
        if not path:
            continue
        what = f"internal {plural}"
        listing = formats.local_listing(path, what)
        if listing is None:
            continue
        fmt = formats.resolve_format(path, src.format, listing, what)
        formats.check_not_empty(path, fmt, listing, what)


def stripe_error_line(exc: stripe.StripeError, cfg: Config) -> str:
    """One line saying what a Stripe SDK error means for the user and what to do (no key in it)."""
    from .stripe_client import redact

    base = cfg.stripe.api_base or "https://api.stripe.com"
    if isinstance(exc, stripe.AuthenticationError):
        return (f"the Stripe API at {base} refused the API key (HTTP 401: {redact(exc.user_message or exc)}): "
                f"check the key in {_key_origin(cfg)}")
    if isinstance(exc, stripe.PermissionError):
        return (f"the Stripe API key from {_key_origin(cfg)} may not read or write products and prices "
                f"(HTTP 403): use a secret key or a restricted key with product and price access")
    if isinstance(exc, stripe.APIConnectionError):
        return f"cannot reach the Stripe API at {base} ({_network_reason(exc)}): check stripe.api_base and the network"
    status = f"HTTP {exc.http_status}" if exc.http_status else type(exc).__name__
    text = " ".join(str(redact(exc.user_message or exc)).split())
    return f"the Stripe API at {base} answered {status}: {text[:300]}"


def _key_origin(cfg: Config) -> str:
    s = cfg.stripe
    if s.key_source == "env":
        return f"the environment variable {s.key_env} (stripe.key_env)"
    if s.key_source == "aws_secrets_manager":
        return f"AWS Secrets Manager secret {s.aws_secret_id}"
    return f"Databricks secret {s.databricks_scope}/{s.databricks_key}"


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def _network_reason(exc: BaseException) -> str:
    """``Connection refused`` / ``Name or service not known`` / ``timed out`` out of requests' text."""
    text = str(exc)
    found = _ERRNO.findall(text)
    if found:
        return found[-1].strip()
    for hint in ("timed out", "Connection refused", "Connection reset", "Name or service not known"):
        if hint.lower() in text.lower():
            return hint
    return text.strip().splitlines()[-1][:200] if text.strip() else type(exc).__name__


def stripe_api(cfg: Config) -> None:
    """Raise ReconError (one line) when the key is missing, the API base does not answer, or it
    refuses the key. Costs one list request of one object."""
    from . import stripe_requests as sr
    from .push import Sender
    from .ratelimit import global_bucket
    from .stripe_client import build_client

    sender = Sender(build_client(cfg), global_bucket(cfg.stripe.rate_limit_per_second), cfg.stripe.max_attempts)
    try:
        sender.send(sr.list_products(limit=1))
    except stripe.StripeError as exc:
        raise ReconError(stripe_error_line(exc, cfg)) from None
