"""The emulator's event log: one Stripe event per write, listed like ``GET /v1/events``.

Every applied write records ``product.created|updated|deleted`` or ``price.created|updated`` (a
lookup key moved off a price by ``transfer_lookup_key`` updates that price too), with ``data.object``
a copy of the object as it then was, ``data.previous_attributes`` for updates, ``created`` (the
store's clock) and an ``evt_`` id. Seeding records nothing (seeded objects predate the log), nor does
an idempotent replay (it changes nothing).

Listing follows Stripe: newest first (events of one second: later first), ``type`` (a ``*`` wildcard
allowed, ``product.*``) or ``types[]`` (at most 20), ``created`` (exact or ``gt|gte|lt|lte``),
``limit`` (1..100), ``starting_after`` / ``ending_before``, ``has_more``; events older than
``RETENTION_SECONDS`` (30 days) are neither listed nor retrievable. ``age(seconds)`` moves every
recorded event that far into the past, so tests can reach the retention limit without waiting.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable
from typing import Any

from .errors import StripeAPIError, invalid, missing, unknown_param
from .forms import as_int, as_list, as_str

RETENTION_SECONDS = 30 * 86_400
EVENT_LIST = {"limit", "starting_after", "ending_before", "created", "type", "types", "delivery_success"}
API_VERSION = "2026-10-28"


class EventLog:
    """Events of one emulated account, oldest first; the caller holds the store's lock."""

    def __init__(self, clock: Callable[[], int], new_id: Callable[[], str]) -> None:
        self._clock = clock
        self._new_id = new_id
        self.events: list[dict[str, Any]] = []
        self._position: dict[str, int] = {}

    def record(self, type_: str, obj: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        event = {
            "id": self._new_id(), "object": "event", "api_version": API_VERSION, "created": self._clock(),
            "data": data, "livemode": False, "pending_webhooks": 0,
            "request": {"id": None, "idempotency_key": None}, "type": type_,
        }
        self._position[event["id"]] = len(self.events)
        self.events.append(event)
        return event

    def age(self, seconds: int) -> int:
        """Move every event ``seconds`` into the past; returns how many there are."""
        for event in self.events:
            event["created"] -= int(seconds)
        return len(self.events)

    def _retained(self, event: dict[str, Any]) -> bool:
        return event["created"] >= self._clock() - RETENTION_SECONDS

    def retrieve(self, event_id: str) -> dict[str, Any]:
        pos = self._position.get(event_id)
        if pos is None or not self._retained(self.events[pos]):
            raise missing("event", event_id)
        return copy.deepcopy(self.events[pos])

    def list(self, params: dict[str, Any]) -> dict[str, Any]:
        for name in params:
            if name not in EVENT_LIST:
                raise unknown_param(name)
        limit = as_int(params.get("limit", 10), "limit", 1, 100)
        after, before = params.get("starting_after"), params.get("ending_before")
        if after and before:
            raise invalid("ending_before", "You may only specify one of these parameters: ending_before, "
                          "starting_after.", code="parameter_invalid_string")
        if params.get("type") and params.get("types"):
            raise invalid("types", "You may only specify one of these parameters: type, types.",
                          code="parameter_invalid_string")
        preds = self._predicates(params)
        # Newest first: created descending, then the later of one second first.
        order = sorted(range(len(self.events)), key=lambda i: (-self.events[i]["created"], -i))
        if after or before:
            cursor = as_str(after or before, "starting_after" if after else "ending_before")
            if cursor not in self._position:
                raise missing("event", cursor, "starting_after" if after else "ending_before")
            at = order.index(self._position[cursor])
            order = order[at + 1:] if after else list(reversed(order[:at]))
        found = []
        for i in order:
            event = self.events[i]
            if self._retained(event) and all(p(event) for p in preds):
                found.append(event)
                if len(found) > limit:
                    break
        has_more = len(found) > limit
        found = found[:limit]
        if before:
            found.reverse()
        return {"object": "list", "data": copy.deepcopy(found), "has_more": has_more, "url": "/v1/events"}

    @staticmethod
    def _predicates(params: dict[str, Any]) -> list[Callable[[dict[str, Any]], bool]]:
        preds: list[Callable[[dict[str, Any]], bool]] = []
        if params.get("type"):
            pattern = as_str(params["type"], "type")
            preds.append(lambda e: fnmatch.fnmatchcase(e["type"], pattern))
        if params.get("types"):
            types = [as_str(t, "types") for t in as_list(params["types"], "types")]
            if len(types) > 20:
                raise invalid("types", "types can contain at most 20 event types.", code="parameter_invalid_array")
            preds.append(lambda e: e["type"] in types)
        if "created" in params:
            created = params["created"]
            if isinstance(created, dict):
                ops = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}
                for op, value in created.items():
                    if op not in ops:
                        raise unknown_param(f"created[{op}]")
                    bound = as_int(value, f"created[{op}]")
                    preds.append(lambda e, f=ops[op], b=bound: f(int(e["created"]), b))
            else:
                exact = as_int(created, "created")
                preds.append(lambda e: int(e["created"]) == exact)
        return preds


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Stripe's ``previous_attributes``: the old values of the top-level fields an update changed."""
    return {k: old.get(k) for k in new if old.get(k) != new.get(k)}


__all__ = ["EventLog", "RETENTION_SECONDS", "StripeAPIError", "changed_fields"]
