"""Every request stripe-recon sends to Stripe, built in one place.

The exporter (``land/stripe_api.py``) and the pusher (``push.py``) build their requests with the
functions below and send them with :func:`execute` / :func:`iter_all`; the stripe-mock contract suite
(tests/contract/test_stripe_mock.py) sends the very same requests, so anything built here is proven
to be accepted by Stripe's OpenAPI spec.

A builder returns a :class:`StripeRequest` (method, path, params); nothing is sent until
:func:`execute`. Params are plain Python values (dicts, lists, bools, ints, str); the SDK form-encodes
them (``metadata[k]=v``, ``lookup_keys[0]=x``, booleans as ``true``/``false``).

Clearing values (Stripe semantics): on update, ``None`` for ``description``/``tax_code``/``nickname``
is sent as ``""`` (which clears it), and a metadata value of ``None`` or ``""`` is sent as ``""``
(which unsets that key). Keys that are not passed at all are left unchanged by Stripe.

Example::

    client = build_client(cfg)                              # stripe_client.build_client
    req = update_product("prod_1", name="Pro", description=None, metadata={"old": None})
    obj = execute(client, req, idempotency_key="corr-3f2a")  # -> dict of the updated product
    for price in iter_all(client, list_prices(active=False, created_gte=1700000000)):
        ...
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .stripe_client import redacting
from .stripe_limits import limit

if TYPE_CHECKING:  # pragma: no cover
    import stripe

Method = Literal["get", "post", "delete"]
Resource = Literal["product", "price", "event"]
Action = Literal["list", "retrieve", "create", "update", "delete"]

#: Stripe caps list pages at 100 objects and ``lookup_keys[]`` filters at 10 keys.
MAX_PAGE = 100
MAX_LOOKUP_KEYS = 10


@dataclass(frozen=True)
class StripeRequest:
    """One Stripe API call, not yet sent.

    ``path`` is the URL path (``/v1/prices/price_1``); ``object_id`` is the id in it, if any;
    ``params`` are the request parameters before form encoding.
    """

    method: Method
    path: str
    resource: Resource
    action: Action
    object_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def is_write(self) -> bool:
        """True for requests that change state (they need an Idempotency-Key)."""
        return self.method != "get"


# -- helpers ------------------------------------------------------------------------------------

def _metadata(meta: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Metadata as Stripe wants it: every value a string; None/"" -> "" (unset that key)."""
    if meta is None:
        return None
    out: dict[str, str] = {}
    for key, value in meta.items():
        if not isinstance(key, str) or not key or "[" in key or "]" in key or len(key) > limit("metadata_key"):
            raise ValueError(f"metadata key {key!r} is not allowed by Stripe (1-{limit('metadata_key')} chars, "
                             "no '[' or ']')")
        if value is None:
            out[key] = ""
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)
    return out


def _clearable(value: str | None) -> str:
    """An optional text field on update: None clears it (sent as "")."""
    return "" if value is None else value


def _created_filter(gt: int | None, gte: int | None, lt: int | None, lte: int | None) -> dict[str, int] | None:
    created = {k: int(v) for k, v in (("gt", gt), ("gte", gte), ("lt", lt), ("lte", lte)) if v is not None}
    return created or None


def _list_params(
    *,
    active: bool | None,
    limit: int,
    starting_after: str | None,
    ending_before: str | None,
    created_gt: int | None,
    created_gte: int | None,
    created_lt: int | None,
    created_lte: int | None,
) -> dict[str, Any]:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    if starting_after and ending_before:
        raise ValueError("pass starting_after or ending_before, not both")
    params: dict[str, Any] = {"limit": int(limit)}
    if active is not None:
        params["active"] = bool(active)
    created = _created_filter(created_gt, created_gte, created_lt, created_lte)
    if created:
        params["created"] = created
    if starting_after:
        params["starting_after"] = starting_after
    if ending_before:
        params["ending_before"] = ending_before
    return params


# -- products -----------------------------------------------------------------------------------

def list_products(
    *,
    active: bool | None = None,
    limit: int = MAX_PAGE,
    starting_after: str | None = None,
    ending_before: str | None = None,
    created_gt: int | None = None,
    created_gte: int | None = None,
    created_lt: int | None = None,
    created_lte: int | None = None,
    ids: list[str] | None = None,
) -> StripeRequest:
    """``GET /v1/products``: newest first. ``active=None`` lists active and archived products.
    ``ids`` (at most 100) returns just those products: the pusher's batched verify-before-write read.

    Example: ``list_products(created_gte=t0, created_lt=t1)`` is one export window.
    """
    params = _list_params(
        active=active, limit=limit, starting_after=starting_after, ending_before=ending_before,
        created_gt=created_gt, created_gte=created_gte, created_lt=created_lt, created_lte=created_lte,
    )
    if ids:
        if len(ids) > MAX_PAGE:
            raise ValueError(f"ids takes at most {MAX_PAGE} product ids, got {len(ids)}")
        params["ids"] = list(ids)
    return StripeRequest("get", "/v1/products", "product", "list", None, params)


def retrieve_product(product_id: str) -> StripeRequest:
    """``GET /v1/products/{id}`` (verify-before-write re-reads with this)."""
    return StripeRequest("get", f"/v1/products/{product_id}", "product", "retrieve", product_id, {})


def create_product(
    name: str,
    *,
    product_id: str | None = None,
    description: str | None = None,
    active: bool | None = None,
    metadata: Mapping[str, Any] | None = None,
    tax_code: str | None = None,
) -> StripeRequest:
    """``POST /v1/products``. A deterministic ``product_id`` makes the create idempotent forever: a
    second create answers 400 ``resource_already_exists``. Empty description/tax_code are omitted."""
    if not name:
        raise ValueError("a Stripe product needs a non-empty name")
    params: dict[str, Any] = {"name": name}
    if product_id:
        params["id"] = product_id
    if description:
        params["description"] = description
    if active is not None:
        params["active"] = bool(active)
    meta = _metadata(metadata)
    if meta:
        params["metadata"] = {k: v for k, v in meta.items() if v != ""}
    if tax_code:
        params["tax_code"] = tax_code
    return StripeRequest("post", "/v1/products", "product", "create", product_id, params)


_UNSET: Any = object()


def update_product(
    product_id: str,
    *,
    name: str = _UNSET,
    description: str | None = _UNSET,
    active: bool = _UNSET,
    metadata: Mapping[str, Any] | None = _UNSET,
    default_price: str = _UNSET,
    tax_code: str | None = _UNSET,
) -> StripeRequest:
    """``POST /v1/products/{id}``. Only the arguments passed are sent.

    ``description=None`` / ``tax_code=None`` clear the field; ``metadata`` is merged by Stripe and a
    value of None/"" unsets that key. ``active=False`` is the archive (products with prices are never
    deleted).
    """
    params: dict[str, Any] = {}
    if name is not _UNSET:
        if not name:
            raise ValueError("a product name cannot be cleared")
        params["name"] = name
    if description is not _UNSET:
        params["description"] = _clearable(description)
    if active is not _UNSET:
        params["active"] = bool(active)
    if metadata is not _UNSET and metadata is not None:
        params["metadata"] = _metadata(metadata)
    if default_price is not _UNSET:
        params["default_price"] = default_price
    if tax_code is not _UNSET:
        params["tax_code"] = _clearable(tax_code)
    if not params:
        raise ValueError(f"update_product({product_id!r}) with nothing to change")
    return StripeRequest("post", f"/v1/products/{product_id}", "product", "update", product_id, params)


def archive_product(product_id: str) -> StripeRequest:
    """The soft delete: ``active=false``."""
    return update_product(product_id, active=False)


def delete_product(product_id: str) -> StripeRequest:
    """``DELETE /v1/products/{id}``; Stripe refuses it when the product has prices. Not used by the
    pusher (archive instead); here for tooling and tests."""
    return StripeRequest("delete", f"/v1/products/{product_id}", "product", "delete", product_id, {})


# -- prices -------------------------------------------------------------------------------------

def list_prices(
    *,
    active: bool | None = None,
    limit: int = MAX_PAGE,
    starting_after: str | None = None,
    ending_before: str | None = None,
    created_gt: int | None = None,
    created_gte: int | None = None,
    created_lt: int | None = None,
    created_lte: int | None = None,
    lookup_keys: list[str] | None = None,
    product: str | None = None,
) -> StripeRequest:
    """``GET /v1/prices``. Stripe lists only active prices unless asked: an export must call this
    twice (``active=True`` and ``active=False``). ``lookup_keys`` takes at most 10 keys.
    """
    params = _list_params(
        active=active, limit=limit, starting_after=starting_after, ending_before=ending_before,
        created_gt=created_gt, created_gte=created_gte, created_lt=created_lt, created_lte=created_lte,
    )
    if lookup_keys:
        if len(lookup_keys) > MAX_LOOKUP_KEYS:
            raise ValueError(f"lookup_keys takes at most {MAX_LOOKUP_KEYS} keys, got {len(lookup_keys)}")
        params["lookup_keys"] = list(lookup_keys)
    if product:
        params["product"] = product
    return StripeRequest("get", "/v1/prices", "price", "list", None, params)


def retrieve_price(price_id: str) -> StripeRequest:
    """``GET /v1/prices/{id}``."""
    return StripeRequest("get", f"/v1/prices/{price_id}", "price", "retrieve", price_id, {})


def create_price(
    product: str,
    currency: str,
    unit_amount: int,
    *,
    interval: str | None = None,
    interval_count: int | None = None,
    lookup_key: str | None = None,
    transfer_lookup_key: bool = False,
    nickname: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    active: bool | None = None,
) -> StripeRequest:
    """``POST /v1/prices``. ``unit_amount`` is in the currency's minor unit (1999 = 19.99 USD);
    ``interval=None`` makes a one-time price. ``transfer_lookup_key=True`` moves ``lookup_key`` from
    the price holding it (how replace_price keeps the key while changing an immutable field).
    """
    if isinstance(unit_amount, bool) or int(unit_amount) != unit_amount or unit_amount < 0:
        raise ValueError(f"unit_amount must be a non-negative integer in minor units, got {unit_amount!r}")
    if not currency or len(currency.strip()) != 3:
        raise ValueError(f"currency must be a 3-letter ISO code, got {currency!r}")
    params: dict[str, Any] = {
        "product": product,
        "currency": currency.strip().lower(),
        "unit_amount": int(unit_amount),
    }
    if interval:
        recurring: dict[str, Any] = {"interval": interval}
        if interval_count is not None:
            recurring["interval_count"] = int(interval_count)
        params["recurring"] = recurring
    if lookup_key:
        params["lookup_key"] = lookup_key
        if transfer_lookup_key:
            params["transfer_lookup_key"] = True
    if nickname:
        params["nickname"] = nickname
    meta = _metadata(metadata)
    if meta:
        params["metadata"] = {k: v for k, v in meta.items() if v != ""}
    if active is not None:
        params["active"] = bool(active)
    return StripeRequest("post", "/v1/prices", "price", "create", None, params)


def update_price(
    price_id: str,
    *,
    active: bool = _UNSET,
    nickname: str | None = _UNSET,
    lookup_key: str | None = _UNSET,
    transfer_lookup_key: bool = False,
    metadata: Mapping[str, Any] | None = _UNSET,
) -> StripeRequest:
    """``POST /v1/prices/{id}`` for the mutable fields only (active, nickname, lookup_key, metadata).
    Amount, currency, recurring and product are immutable: use :func:`create_price` with
    ``transfer_lookup_key=True`` and archive the old price instead. ``nickname=None`` and
    ``lookup_key=None`` clear the field.
    """
    params: dict[str, Any] = {}
    if active is not _UNSET:
        params["active"] = bool(active)
    if nickname is not _UNSET:
        params["nickname"] = _clearable(nickname)
    if lookup_key is not _UNSET:
        params["lookup_key"] = _clearable(lookup_key)
        if transfer_lookup_key and lookup_key:
            params["transfer_lookup_key"] = True
    if metadata is not _UNSET and metadata is not None:
        params["metadata"] = _metadata(metadata)
    if not params:
        raise ValueError(f"update_price({price_id!r}) with nothing to change")
    return StripeRequest("post", f"/v1/prices/{price_id}", "price", "update", price_id, params)


def archive_price(price_id: str) -> StripeRequest:
    """Prices cannot be deleted; archiving is ``active=false``."""
    return update_price(price_id, active=False)


# -- events -------------------------------------------------------------------------------------

#: Stripe caps ``types[]`` at 20 event types.
MAX_EVENT_TYPES = 20


def list_events(
    *,
    types: list[str] | None = None,
    limit: int = MAX_PAGE,
    starting_after: str | None = None,
    ending_before: str | None = None,
    created_gt: int | None = None,
    created_gte: int | None = None,
    created_lt: int | None = None,
    created_lte: int | None = None,
) -> StripeRequest:
    """``GET /v1/events``: newest first, the last 30 days only. ``types`` (at most 20) filters by event
    type, e.g. ``["product.updated", "price.created"]``.

    Example: ``list_events(types=["product.created", "product.updated"], created_gte=cursor)``.
    """
    params = _list_params(
        active=None, limit=limit, starting_after=starting_after, ending_before=ending_before,
        created_gt=created_gt, created_gte=created_gte, created_lt=created_lt, created_lte=created_lte,
    )
    if types:
        if len(types) > MAX_EVENT_TYPES:
            raise ValueError(f"types takes at most {MAX_EVENT_TYPES} event types, got {len(types)}")
        params["types"] = list(types)
    return StripeRequest("get", "/v1/events", "event", "list", None, params)


# -- sending ------------------------------------------------------------------------------------

def execute(
    client: stripe.StripeClient,
    req: StripeRequest,
    *,
    idempotency_key: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Send ``req`` through the SDK's typed services and return the response as a plain, JSON-ready
    dict (``json.dumps`` works: the SDK's Decimal ``unit_amount_decimal`` comes back as a string;
    lists: ``{"object": "list", "data": [...], "has_more": bool, "url": ...}``).

    ``idempotency_key`` is sent on writes (Stripe ignores it on GET, so it is dropped there). SDK
    errors (``stripe.StripeError`` subclasses) propagate with their type unchanged (callers classify
    them) but with any API key scrubbed from their text.
    """
    opts: dict[str, Any] = dict(options or {})
    if idempotency_key and req.is_write:
        opts["idempotency_key"] = idempotency_key
    service = {"product": client.v1.products, "price": client.v1.prices, "event": client.v1.events}[req.resource]
    params = dict(req.params)
    with redacting():
        obj = _send(client, service, req, params, opts)
    return obj.to_dict(recursive=True, for_json=True)


def _send(client: stripe.StripeClient, service: Any, req: StripeRequest, params: dict[str, Any],
          opts: dict[str, Any]) -> Any:
    if req.action == "list":
        obj = service.list(params, opts)
    elif req.action == "retrieve":
        obj = service.retrieve(req.object_id, params, opts)
    elif req.action == "create":
        obj = service.create(params, opts)
    elif req.action == "update":
        obj = service.update(req.object_id, params, opts)
    elif req.action == "delete" and req.resource == "product":
        obj = client.v1.products.delete(req.object_id, params, opts)
    else:  # pragma: no cover - builders never produce this
        raise ValueError(f"unsupported request {req.method} {req.path}")
    return obj


def iter_all(
    client: stripe.StripeClient,
    req: StripeRequest,
    *,
    options: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Every object of a list request, page after page (``starting_after`` = last id of the page),
    as plain dicts. Stops when ``has_more`` is false.
    """
    if req.action != "list":
        raise ValueError("iter_all needs a list request")
    params = dict(req.params)
    while True:
        page = execute(client, StripeRequest(req.method, req.path, req.resource, "list", None, params),
                       options=options)
        data = page.get("data") or []
        yield from data
        if not page.get("has_more") or not data:
            return
        params = {**params, "starting_after": data[-1]["id"]}
        params.pop("ending_before", None)


def retry_decision(exc: BaseException) -> tuple[bool, str]:
    """Whether a failed request may be retried (with the **same** Idempotency-Key), and why.

    Follows the SDK's own rules, which our clients replace (``max_network_retries=0``): the
    ``Stripe-Should-Retry`` header wins when present; then 429 (``rate_limit``: back off), connection
    errors (the write may or may not have been applied: only retry writes with the same key, or
    verify first), 409 and 5xx are retryable; other 4xx (invalid request, idempotency mismatch,
    authentication, permission) are not.

    >>> retry_decision(stripe.RateLimitError("slow down", http_status=429))
    (True, 'rate_limit')
    """
    import stripe

    if not isinstance(exc, stripe.StripeError):
        return False, type(exc).__name__
    headers = exc.headers or {}
    hint = next((str(v).lower() for k, v in headers.items() if k.lower() == "stripe-should-retry"), None)
    if hint == "true":
        return True, "stripe_should_retry"
    if hint == "false":
        return False, "stripe_should_not_retry"
    if isinstance(exc, stripe.RateLimitError) or exc.http_status == 429:
        return True, "rate_limit"
    if isinstance(exc, stripe.APIConnectionError):
        return True, "connection"
    if isinstance(exc, stripe.IdempotencyError):
        return False, "idempotency_error"
    status = exc.http_status or 0
    if status == 409:
        return True, "conflict"
    if status >= 500:
        return True, "server_error"
    return False, f"http_{status}" if status else type(exc).__name__
