"""The emulator's state: products and prices with Stripe's rules, list ordering and cursors, the
Idempotency-Key store, the request journal, and seeding from an export folder.

Everything here is plain Python (no HTTP); one re-entrant lock serialises every operation, so a
request's checks and its write are atomic, as they are in Stripe.

Ordering: lists are newest ``created`` first; objects created in the same second are ordered by
insertion (later first), and seeded objects by their position in the seed files; the key is
``(-created, -seq)``, so cursors (``starting_after`` / ``ending_before``) are stable.
"""

from __future__ import annotations

import bisect
import copy
import json
import random
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

from .. import catalog
from ..currencies import EXPONENTS
from ..stripe_limits import limit
from .errors import StripeAPIError, invalid, missing, unknown_param
from .events import EventLog, changed_fields
from .forms import as_bool, as_dict, as_int, as_list, as_str

# What each request accepts, from the one declaration of Stripe's parameters (catalog.py); ``expand`` is
# a request option, not a field.
PRODUCT_CREATE = catalog.names("product", create=True) | {"expand"}
PRODUCT_UPDATE = catalog.updatable("product") | {"expand"}
#: Price parameters Stripe accepts that this emulator does not implement yet: refused, not ignored.
PRICE_NOT_EMULATED = frozenset({"tiers", "tiers_mode", "transform_quantity", "custom_unit_amount"})
PRICE_CREATE = (catalog.names("price", create=True) - PRICE_NOT_EMULATED) | {"expand"}
PRICE_UPDATE = catalog.updatable("price") | {"expand"}
PRICE_IMMUTABLE = catalog.names("price", change="replace")
LIST_COMMON = {"limit", "starting_after", "ending_before", "created", "active", "expand"}
PRODUCT_LIST = LIST_COMMON | {"ids", "shippable", "url"}
PRICE_LIST = LIST_COMMON | {"lookup_keys", "product", "currency", "type"}
DELETE_PARAMS: set[str] = set()

INTERVAL_MAX = {"day": 1095, "week": 156, "month": 36, "year": 3}
TAX_CODE = re.compile(r"^txcd_\d{8}$")
CUSTOM_ID = re.compile(r"^[A-Za-z0-9_\-.:]{1,255}$")
_ALNUM = string.ascii_letters + string.digits


def _check_params(params: dict[str, Any], allowed: AbstractSet[str], hint: Callable[[str], str] | None = None) -> None:
    for name in params:
        if name not in allowed:
            raise unknown_param(name, hint(name) if hint else "")


def _empty_not_allowed(param: str) -> StripeAPIError:
    return invalid(
        param,
        f"You passed an empty string for '{param}'. We assume empty values are an attempt to unset a "
        f"parameter; however '{param}' cannot be unset. You should remove '{param}' from your request or "
        "supply a non-empty value.",
    )


def _metadata_apply(current: dict[str, str], raw: Any, *, merge: bool) -> dict[str, str]:
    """Stripe metadata rules: string values, ``""`` unsets a key, at most ``metadata_keys`` keys of
    ``metadata_key`` characters (not empty) and values of ``metadata_value`` (stripe_limits.py)."""
    given = as_dict(raw, "metadata")
    out = dict(current) if merge else {}
    if raw == "":  # metadata="" clears every key
        return {}
    for key, value in given.items():
        if isinstance(value, (dict, list)):
            raise invalid(f"metadata[{key}]", f"Invalid value for metadata key '{key}': must be a string.",
                          code="parameter_invalid_string")
        if not key or len(key) > limit("metadata_key") or "[" in key or "]" in key:
            raise invalid(f"metadata[{key}]", f"Metadata keys must be 1 to {limit('metadata_key')} characters long, "
                          "without square brackets.", code="parameter_invalid_string")
        if len(value) > limit("metadata_value"):
            raise invalid(f"metadata[{key}]", f"Metadata values can be at most {limit('metadata_value')} characters "
                          "long.", code="parameter_invalid_string")
        if value == "":
            out.pop(key, None)
        else:
            out[key] = value
    if len(out) > limit("metadata_keys"):
        raise invalid("metadata", f"Metadata can have at most {limit('metadata_keys')} keys.",
                      code="parameter_invalid_string")
    return out


def _optional_text(value: Any, param: str, max_len: int | None = None) -> str | None:
    """A clearable text field: ``""`` -> None."""
    text = as_str(value, param, max_len)
    return text or None


class Store:
    """All objects and bookkeeping of one emulated Stripe account."""

    def __init__(self, seed: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        self._clock = clock
        self._seed = seed
        self.reset()

    # -- lifecycle ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every object, idempotency record and journal entry."""
        with self.lock:
            self.objects: dict[str, dict[str, dict[str, Any]]] = {"product": {}, "price": {}}
            self._order: dict[str, list[tuple[int, int, str]]] = {"product": [], "price": []}
            self._key: dict[str, tuple[int, int, str]] = {}
            self._seq = 0
            self.lookup_index: dict[str, str] = {}
            self.prices_by_product: dict[str, set[str]] = {}
            self.idempotency: dict[str, dict[str, Any]] = {}
            self.journal: list[dict[str, Any]] = []
            self.seed_report: dict[str, Any] = {}
            self._rng = random.Random(self._seed)
            self.events = EventLog(self.now, lambda: self.new_id("evt_", 24))

    def now(self) -> int:
        return int(self._clock())

    def new_id(self, prefix: str, length: int) -> str:
        with self.lock:
            while True:
                oid = prefix + "".join(self._rng.choice(_ALNUM) for _ in range(length))
                if oid not in self.objects["product"] and oid not in self.objects["price"]:
                    return oid

    def _insert(self, kind: str, obj: dict[str, Any]) -> None:
        self._seq += 1
        key = (-int(obj["created"]), -self._seq, obj["id"])
        self.objects[kind][obj["id"]] = obj
        self._key[obj["id"]] = key
        bisect.insort(self._order[kind], key)
        if kind == "price":
            self.prices_by_product.setdefault(obj["product"], set()).add(obj["id"])
            if obj.get("lookup_key"):
                self.lookup_index.setdefault(obj["lookup_key"], obj["id"])

    def _remove(self, kind: str, oid: str) -> None:
        key = self._key.pop(oid)
        order = self._order[kind]
        order.pop(bisect.bisect_left(order, key))
        del self.objects[kind][oid]

    # -- reading --------------------------------------------------------------------------------

    def get(self, kind: str, oid: str, param: str = "id") -> dict[str, Any]:
        obj = self.objects[kind].get(oid)
        if obj is None:
            raise missing(kind, oid, param)
        return obj

    def render(self, kind: str, obj: dict[str, Any], expand: list[str] | None = None) -> dict[str, Any]:
        """A JSON-ready copy of ``obj`` with ``expand`` paths (``product``, ``default_price``) inlined."""
        out = copy.deepcopy(obj)
        for path in expand or []:
            if kind == "price" and path == "product" and out.get("product") in self.objects["product"]:
                out["product"] = copy.deepcopy(self.objects["product"][out["product"]])
            elif kind == "product" and path == "default_price" and out.get("default_price") in self.objects["price"]:
                out["default_price"] = copy.deepcopy(self.objects["price"][out["default_price"]])
            elif path not in ("product", "default_price"):
                raise StripeAPIError(400, f"This property cannot be expanded ({path}).", param="expand")
        return out

    def counts(self) -> dict[str, Any]:
        with self.lock:
            products = self.objects["product"].values()
            prices = self.objects["price"].values()
            applied = sum(1 for e in self.journal if e.get("applied"))
            return {
                "products": len(self.objects["product"]),
                "active_products": sum(1 for p in products if p["active"]),
                "prices": len(self.objects["price"]),
                "active_prices": sum(1 for p in prices if p["active"]),
                "lookup_keys": len(self.lookup_index),
                "requests": len(self.journal),
                "writes_applied": applied,
                "replays": sum(1 for e in self.journal if e.get("replayed")),
                "idempotency_keys": len(self.idempotency),
                "seed": dict(self.seed_report),
            }

    # -- products -------------------------------------------------------------------------------

    def create_product(self, params: dict[str, Any]) -> dict[str, Any]:
        _check_params(params, PRODUCT_CREATE)
        if "name" not in params:
            raise StripeAPIError(400, "Missing required param: name.", code="parameter_missing", param="name")
        name = as_str(params["name"], "name", limit("product_name"))
        if not name:
            raise _empty_not_allowed("name")
        with self.lock:
            if "id" in params:
                oid = as_str(params["id"], "id")
                if not CUSTOM_ID.match(oid):
                    raise invalid("id", f"Invalid id: {oid!r}", code="parameter_invalid_string")
                if oid in self.objects["product"]:
                    raise StripeAPIError(400, "Product already exists.", code="resource_already_exists", param="id")
            else:
                oid = self.new_id("prod_", 14)
            now = self.now()
            obj: dict[str, Any] = {
                "id": oid, "object": "product", "active": True, "created": now, "default_price": None,
                "description": None, "images": [], "livemode": False, "marketing_features": [], "metadata": {},
                "name": name, "package_dimensions": None, "shippable": None, "statement_descriptor": None,
                "tax_code": None, "type": "service", "unit_label": None, "updated": now, "url": None,
            }
            self._apply_product_fields(obj, params, creating=True)
            self._insert("product", obj)
            self.events.record("product.created", obj)
            return obj

    def _apply_product_fields(self, obj: dict[str, Any], params: dict[str, Any], *, creating: bool) -> None:
        if "name" in params:
            name = as_str(params["name"], "name", limit("product_name"))
            if not name:
                raise _empty_not_allowed("name")
            obj["name"] = name
        if "description" in params:
            obj["description"] = _optional_text(params["description"], "description", limit("product_description"))
        if "active" in params:
            obj["active"] = as_bool(params["active"], "active")
        if "metadata" in params:
            obj["metadata"] = _metadata_apply(obj["metadata"], params["metadata"], merge=not creating)
        if "tax_code" in params:
            code = _optional_text(params["tax_code"], "tax_code")
            if code is not None and not TAX_CODE.match(code):
                raise invalid("tax_code", f"Invalid tax code: {code}", code="parameter_invalid_string")
            obj["tax_code"] = code
        for field in ("url", "unit_label", "statement_descriptor"):
            if field in params:
                obj[field] = _optional_text(params[field], field, limit(f"product_{field}"))
        if "shippable" in params:
            obj["shippable"] = as_bool(params["shippable"], "shippable")
        if "images" in params:
            images = [] if params["images"] == "" else as_list(params["images"], "images")
            if len(images) > limit("product_images"):
                raise invalid("images", f"A product can have at most {limit('product_images')} images.",
                              code="parameter_invalid_array")
            obj["images"] = [as_str(i, "images", limit("product_image_url")) for i in images]
        if "marketing_features" in params:
            feats = [] if params["marketing_features"] == "" else as_list(params["marketing_features"], "marketing_features")
            if len(feats) > limit("product_marketing_features"):
                raise invalid("marketing_features", f"At most {limit('product_marketing_features')} marketing "
                              "features.", code="parameter_invalid_array")
            obj["marketing_features"] = [{"name": as_str(as_dict(f, "marketing_features").get("name", ""),
                                                         "marketing_features", limit("product_marketing_feature_name"))}
                                         for f in feats]
        if "package_dimensions" in params:
            dims = params["package_dimensions"]
            obj["package_dimensions"] = None if dims == "" else {
                k: float(v) for k, v in as_dict(dims, "package_dimensions").items()
            }
        if "default_price" in params:
            pid = as_str(params["default_price"], "default_price")
            if pid:
                price = self.get("price", pid, "default_price")
                if price["product"] != obj["id"]:
                    raise invalid("default_price", f"The price `{pid}` does not belong to product `{obj['id']}`.",
                                  code="parameter_invalid_string")
                if not price["active"]:
                    raise invalid("default_price", f"The price `{pid}` is archived and cannot be the default price.",
                                  code="parameter_invalid_string")
            obj["default_price"] = pid or None

    def update_product(self, oid: str, params: dict[str, Any]) -> dict[str, Any]:
        _check_params(params, PRODUCT_UPDATE)
        with self.lock:
            current = self.get("product", oid)
            obj = copy.deepcopy(current)
            self._apply_product_fields(obj, params, creating=False)  # validates everything first
            obj["updated"] = self.now()
            previous = changed_fields(current, obj)
            current.clear()
            current.update(obj)
            self.events.record("product.updated", current, previous)
            return current

    def delete_product(self, oid: str, params: dict[str, Any]) -> dict[str, Any]:
        _check_params(params, DELETE_PARAMS)
        with self.lock:
            self.get("product", oid)
            if self.prices_by_product.get(oid):
                raise StripeAPIError(
                    400, "This product cannot be deleted because it has one or more user-created prices. "
                    "Archive it instead (active=false).", param="id")
            self.events.record("product.deleted", self.objects["product"][oid])
            self._remove("product", oid)
            return {"id": oid, "object": "product", "deleted": True}

    # -- prices ---------------------------------------------------------------------------------

    def create_price(self, params: dict[str, Any]) -> dict[str, Any]:
        _check_params(params, PRICE_CREATE)
        for required in ("currency", "product"):
            if required not in params:
                raise StripeAPIError(400, f"Missing required param: {required}.", code="parameter_missing",
                                     param=required)
        with self.lock:
            product = as_str(params["product"], "product")
            self.get("product", product, "product")
            currency = as_str(params["currency"], "currency").lower()
            if currency not in EXPONENTS:
                raise invalid("currency", f"Invalid currency: {currency}. Stripe currently supports these "
                              "currencies: usd, eur, gbp, jpy, ... (lowercase ISO 4217).",
                              code="parameter_invalid_string")
            if "unit_amount" in params and "unit_amount_decimal" in params:
                raise invalid("unit_amount", "You may only specify one of these parameters: unit_amount, "
                              "unit_amount_decimal.", code="parameter_invalid_string")
            decimal_str = None
            if "unit_amount" in params:
                amount: int | None = as_int(params["unit_amount"], "unit_amount", 0, 99_999_999_999)
            elif "unit_amount_decimal" in params:
                decimal_str = as_str(params["unit_amount_decimal"], "unit_amount_decimal")
                if not re.fullmatch(r"\d+(\.\d{1,12})?", decimal_str):
                    raise invalid("unit_amount_decimal", f"Invalid decimal: {decimal_str}",
                                  code="parameter_invalid_string")
                amount = int(decimal_str) if "." not in decimal_str else None
            else:
                raise StripeAPIError(400, "Missing required param: unit_amount.", code="parameter_missing",
                                     param="unit_amount")
            if amount is not None and EXPONENTS[currency] == 3 and amount % 10:
                raise invalid("unit_amount", f"Amounts in {currency.upper()} must end in 0 (Stripe rounds "
                              "three-decimal currencies to 2 decimals).", code="parameter_invalid_integer")
            recurring = None
            if "recurring" in params and params["recurring"] != "":
                raw = as_dict(params["recurring"], "recurring")
                unknown = set(raw) - {"interval", "interval_count", "usage_type", "trial_period_days", "meter"}
                if unknown:
                    raise unknown_param(f"recurring[{sorted(unknown)[0]}]")
                interval = raw.get("interval")
                if interval not in INTERVAL_MAX:
                    raise invalid("recurring[interval]", f"Invalid recurring[interval]: must be one of day, week, "
                                  f"month, or year (got {interval!r}).", code="parameter_invalid_string")
                count = as_int(raw.get("interval_count", 1), "recurring[interval_count]", 1)
                if count > INTERVAL_MAX[interval]:
                    raise invalid("recurring[interval_count]", "The maximum billing interval is 3 years.",
                                  code="parameter_invalid_integer")
                usage = raw.get("usage_type", "licensed")
                if usage not in ("licensed", "metered"):
                    raise invalid("recurring[usage_type]", "Invalid usage_type.", code="parameter_invalid_string")
                recurring = {"interval": interval, "interval_count": count, "meter": raw.get("meter"),
                             "trial_period_days": None, "usage_type": usage}
            now = self.now()
            oid = self.new_id("price_", 24)
            obj: dict[str, Any] = {
                "id": oid, "object": "price", "active": True, "billing_scheme": "per_unit", "created": now,
                "currency": currency, "custom_unit_amount": None, "livemode": False, "lookup_key": None,
                "metadata": {}, "nickname": None, "product": product, "recurring": recurring,
                "tax_behavior": "unspecified", "tiers_mode": None, "transform_quantity": None,
                "type": "recurring" if recurring else "one_time", "unit_amount": amount,
                "unit_amount_decimal": decimal_str if decimal_str is not None else str(amount),
            }
            if params.get("billing_scheme", "per_unit") != "per_unit":
                raise invalid("billing_scheme", "The emulator supports billing_scheme=per_unit only.",
                              code="parameter_invalid_string")
            self._apply_price_fields(obj, params, creating=True)
            self._insert("price", obj)
            self.events.record("price.created", obj)
            return obj

    def _apply_price_fields(self, obj: dict[str, Any], params: dict[str, Any], *, creating: bool) -> None:
        if "active" in params:
            active = as_bool(params["active"], "active")
            product = self.objects["product"].get(obj.get("product") or "")
            if not creating and not active and obj["active"] and product and product.get("default_price") == obj["id"]:
                # Stripe's rule: unset (or move) the product's default_price first.
                raise StripeAPIError(400, "This price cannot be archived because it is the default price of its "
                                     "product.", param="active")
            obj["active"] = active
        if "nickname" in params:
            obj["nickname"] = _optional_text(params["nickname"], "nickname", limit("price_nickname"))
        if "metadata" in params:
            obj["metadata"] = _metadata_apply(obj["metadata"], params["metadata"], merge=not creating)
        if "tax_behavior" in params:
            behavior = as_str(params["tax_behavior"], "tax_behavior")
            if behavior not in ("inclusive", "exclusive", "unspecified"):
                raise invalid("tax_behavior", "Invalid tax_behavior.", code="parameter_invalid_string")
            if not creating and obj["tax_behavior"] in ("inclusive", "exclusive") and behavior != obj["tax_behavior"]:
                raise invalid("tax_behavior", "tax_behavior cannot be changed once it is inclusive or exclusive.",
                              code="parameter_invalid_string")
            obj["tax_behavior"] = behavior
        transfer = as_bool(params.get("transfer_lookup_key", False), "transfer_lookup_key")
        if "lookup_key" in params:
            key = _optional_text(params["lookup_key"], "lookup_key", limit("price_lookup_key"))
            holder = self.lookup_index.get(key) if key else None
            if holder is not None and holder != obj["id"] and not transfer:
                # Stripe's wording; its error code for this case is not documented, so none is sent.
                raise StripeAPIError(400, f"A price (`{holder}`) already uses that lookup key.",
                                     param="lookup_key")
            old = obj.get("lookup_key")
            if old and old != key and self.lookup_index.get(old) == obj["id"]:
                del self.lookup_index[old]
            if holder is not None and holder != obj["id"]:
                self.objects["price"][holder]["lookup_key"] = None
                self.events.record("price.updated", self.objects["price"][holder], {"lookup_key": key})
            obj["lookup_key"] = key
            if key:
                self.lookup_index[key] = obj["id"]
        elif transfer:
            raise invalid("transfer_lookup_key", "transfer_lookup_key requires lookup_key.",
                          code="parameter_missing")

    def update_price(self, oid: str, params: dict[str, Any]) -> dict[str, Any]:
        def hint(name: str) -> str:
            if name in PRICE_IMMUTABLE:
                return (f"Prices are immutable in {name}: create a new price (with lookup_key and "
                        "transfer_lookup_key=true) and archive this one.")
            return ""

        _check_params(params, PRICE_UPDATE, hint)
        with self.lock:
            current = self.get("price", oid)
            obj = copy.deepcopy(current)
            # _apply_price_fields validates everything before it moves a lookup key, so an error
            # leaves the store untouched.
            self._apply_price_fields(obj, params, creating=False)
            previous = changed_fields(current, obj)
            current.clear()
            current.update(obj)
            self.events.record("price.updated", current, previous)
            return current

    # -- lists ----------------------------------------------------------------------------------

    def list(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        _check_params(params, PRODUCT_LIST if kind == "product" else PRICE_LIST)
        limit = as_int(params.get("limit", 10), "limit", 1, 100)
        after = params.get("starting_after")
        before = params.get("ending_before")
        if after and before:
            raise invalid("ending_before", "You may only specify one of these parameters: ending_before, "
                          "starting_after.", code="parameter_invalid_string")
        preds = self._list_predicates(kind, params)
        expand = [e[5:] if e.startswith("data.") else e for e in as_list(params.get("expand", []), "expand")]
        with self.lock:
            candidates = self._candidates(kind, params)
            if after:
                cursor = self._key_of(kind, as_str(after, "starting_after"), "starting_after")
                start = bisect.bisect_right(candidates, cursor)
                it: Iterator[tuple[int, int, str]] = iter(candidates[start:])
            elif before:
                cursor = self._key_of(kind, as_str(before, "ending_before"), "ending_before")
                end = bisect.bisect_left(candidates, cursor)
                it = reversed(candidates[:end])
            else:
                it = iter(candidates)
            found: list[dict[str, Any]] = []
            for key in it:
                obj = self.objects[kind][key[2]]
                if all(p(obj) for p in preds):
                    found.append(obj)
                    if len(found) > limit:
                        break
            has_more = len(found) > limit
            found = found[:limit]
            if before:
                found.reverse()
            data = [self.render(kind, o, expand) for o in found]
        return {"object": "list", "data": data, "has_more": has_more, "url": f"/v1/{kind}s"}

    def _key_of(self, kind: str, oid: str, param: str) -> tuple[int, int, str]:
        if oid not in self.objects[kind]:
            raise missing(kind, oid, param)
        return self._key[oid]

    def _candidates(self, kind: str, params: dict[str, Any]) -> list[tuple[int, int, str]]:
        """The ordered keys to scan: the whole order, or a small indexed subset."""
        if kind == "price" and params.get("lookup_keys"):
            keys = as_list(params["lookup_keys"], "lookup_keys")
            if len(keys) > 10:
                raise invalid("lookup_keys", "lookup_keys can contain at most 10 keys.", code="parameter_invalid_array")
            ids = {self.lookup_index[k] for k in keys if k in self.lookup_index}
            return sorted(self._key[i] for i in ids)
        if kind == "price" and params.get("product"):
            return sorted(self._key[i] for i in self.prices_by_product.get(params["product"], ()))
        if kind == "product" and params.get("ids"):
            ids = [i for i in as_list(params["ids"], "ids") if i in self.objects["product"]]
            return sorted(self._key[i] for i in set(ids))
        return self._order[kind]

    def _list_predicates(self, kind: str, params: dict[str, Any]) -> list[Callable[[dict[str, Any]], bool]]:
        preds: list[Callable[[dict[str, Any]], bool]] = []
        if "active" in params:
            want = as_bool(params["active"], "active")
            preds.append(lambda o: o["active"] == want)
        elif kind == "price":
            # Stripe lists only active prices unless active=false is asked for (../shared/notes/stripe.md).
            preds.append(lambda o: o["active"])
        if "created" in params:
            created = params["created"]
            if isinstance(created, dict):
                ops = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}
                for op, value in created.items():
                    if op not in ops:
                        raise unknown_param(f"created[{op}]")
                    bound = as_int(value, f"created[{op}]")
                    preds.append(lambda o, f=ops[op], b=bound: f(int(o["created"]), b))
            else:
                exact = as_int(created, "created")
                preds.append(lambda o: int(o["created"]) == exact)
        if kind == "price":
            if params.get("currency"):
                cur = as_str(params["currency"], "currency").lower()
                preds.append(lambda o: o["currency"] == cur)
            if params.get("type"):
                typ = as_str(params["type"], "type")
                preds.append(lambda o: o["type"] == typ)
            if params.get("product"):
                prod = as_str(params["product"], "product")
                preds.append(lambda o: o["product"] == prod)
        else:
            if "shippable" in params:
                ship = as_bool(params["shippable"], "shippable")
                preds.append(lambda o: o.get("shippable") == ship)
            if params.get("url"):
                url = params["url"]
                preds.append(lambda o: o.get("url") == url)
        return preds

    # -- seeding --------------------------------------------------------------------------------

    def seed(self, objects: Iterable[dict[str, Any]]) -> dict[str, int]:
        """Load API objects as they are (ids, created, updated kept). Products are loaded before prices.
        Returns counts; a lookup_key held by two seeded prices stays with the first (counted)."""
        products: list[dict[str, Any]] = []
        prices: list[dict[str, Any]] = []
        skipped = 0
        for raw in objects:
            obj = raw.get("_airbyte_data", raw) if isinstance(raw, dict) else None
            if isinstance(obj, str):
                obj = json.loads(obj)
            if not isinstance(obj, dict) or obj.get("is_deleted") or obj.get("deleted"):
                skipped += 1
                continue
            kind = obj.get("object")
            if kind == "product":
                products.append(obj)
            elif kind == "price":
                prices.append(obj)
            else:
                skipped += 1
        report = {"products": 0, "prices": 0, "skipped": skipped, "replaced": 0, "lookup_key_conflicts": 0,
                  "prices_without_product": 0}
        with self.lock:
            for obj in products:
                report["products"] += 1
                self._seed_one("product", self._norm_product(obj), report)
            for obj in prices:
                report["prices"] += 1
                price = self._norm_price(obj)
                if price["product"] not in self.objects["product"]:
                    report["prices_without_product"] += 1
                key = price.get("lookup_key")
                if key and self.lookup_index.get(key) not in (None, price["id"]):
                    report["lookup_key_conflicts"] += 1
                self._seed_one("price", price, report)
            for k, v in report.items():
                self.seed_report[k] = self.seed_report.get(k, 0) + v
        return report

    def _seed_one(self, kind: str, obj: dict[str, Any], report: dict[str, int]) -> None:
        if obj["id"] in self.objects[kind]:
            report["replaced"] += 1
            old = self.objects[kind][obj["id"]]
            if kind == "price" and old.get("lookup_key") and self.lookup_index.get(old["lookup_key"]) == obj["id"]:
                del self.lookup_index[old["lookup_key"]]
            if kind == "price":
                self.prices_by_product.get(old["product"], set()).discard(obj["id"])
            self._remove(kind, obj["id"])
        self._insert(kind, obj)

    def _norm_product(self, obj: dict[str, Any]) -> dict[str, Any]:
        now = self.now()
        out = {
            "id": obj.get("id") or self.new_id("prod_", 14), "object": "product", "active": True, "created": now,
            "default_price": None, "description": None, "images": [], "livemode": False,
            "marketing_features": [], "metadata": {}, "name": "", "package_dimensions": None,
            "shippable": None, "statement_descriptor": None, "tax_code": None, "type": "service",
            "unit_label": None, "updated": None, "url": None,
        }
        out.update({k: v for k, v in obj.items() if not k.startswith("_")})
        if isinstance(out.get("default_price"), dict):
            out["default_price"] = out["default_price"].get("id")
        if isinstance(out.get("tax_code"), dict):
            out["tax_code"] = out["tax_code"].get("id")
        out["created"] = int(out.get("created") or now)
        out["updated"] = int(out.get("updated") or out["created"])
        out["metadata"] = {str(k): str(v) for k, v in (out.get("metadata") or {}).items()}
        out["active"] = bool(out.get("active", True))
        return out

    def _norm_price(self, obj: dict[str, Any]) -> dict[str, Any]:
        now = self.now()
        out = {
            "id": obj.get("id") or self.new_id("price_", 24), "object": "price", "active": True,
            "billing_scheme": "per_unit", "created": now, "currency": "usd", "custom_unit_amount": None,
            "livemode": False, "lookup_key": None, "metadata": {}, "nickname": None, "product": None,
            "recurring": None, "tax_behavior": "unspecified", "tiers_mode": None, "transform_quantity": None,
            "type": "one_time", "unit_amount": None, "unit_amount_decimal": None,
        }
        out.update({k: v for k, v in obj.items() if not k.startswith("_") and k != "updated"})
        if isinstance(out.get("product"), dict):
            out["product"] = out["product"].get("id")
        out["created"] = int(out.get("created") or now)
        out["metadata"] = {str(k): str(v) for k, v in (out.get("metadata") or {}).items()}
        out["active"] = bool(out.get("active", True))
        out["type"] = "recurring" if out.get("recurring") else "one_time"
        if out.get("unit_amount") is not None and out.get("unit_amount_decimal") is None:
            out["unit_amount_decimal"] = str(out["unit_amount"])
        return out


SEED_SUFFIXES = (".json", ".jsonl", ".ndjson")


def iter_seed_files(root: str | Path) -> list[Path]:
    """Seed files under ``root``: every *.json/*.jsonl/*.ndjson (any depth), plus any other file
    directly inside a ``products/`` or ``prices/`` folder."""
    base = Path(root)
    if base.is_file():
        return [base]
    if not base.is_dir():
        raise FileNotFoundError(f"seed folder {base} does not exist; pass --seed-from an export folder "
                                "(recon generate writes one under OUT/stripe)")
    files = []
    for path in sorted(base.rglob("*")):
        if not path.is_file() or path.name.startswith((".", "_")):
            continue
        if path.suffix in SEED_SUFFIXES or path.parent.name in ("products", "prices"):
            files.append(path)
    return files


def read_seed_objects(root: str | Path) -> Iterator[dict[str, Any]]:
    """API objects from the seed files: JSON lines, or a JSON document holding an object, a list of
    objects, or a list object (``{"object": "list", "data": [...]}``). A malformed line raises a
    ValueError naming the file and line."""
    for path in iter_seed_files(root):
        text = path.read_text(encoding="utf-8")
        stripped = text.lstrip()
        if stripped.startswith("[") or (path.suffix == ".json" and stripped.startswith("{") and "\n{" not in text.strip()):
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc}); fix or remove the file") from None
            if isinstance(doc, dict) and doc.get("object") == "list":
                doc = doc.get("data", [])
            yield from (doc if isinstance(doc, list) else [doc])
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg}); fix or remove the line") from None
