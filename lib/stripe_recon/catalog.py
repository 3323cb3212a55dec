"""Stripe's catalog request parameters, each declared once: what can change in place and what cannot.

Stripe lets most product and price fields change with an update, but a price's amount, currency,
recurring terms, product, billing scheme, tiers and transform are fixed once created: changing one
means a new price that takes over the lookup key (``replace_price``), and ``tax_behavior`` can be set
on an existing price only while it is ``unspecified`` (../shared/notes/stripe.md). That fact used to
be written in four places that had to agree (detect's push-or-replace choice, plan's in-place payload,
the emulator's update checks and the corrections suite's ``immutable_price_field`` rule); they all
derive it from :data:`PARAMS` now.

A parameter names the ``silver.stripe_*`` columns that land from it (``recurring`` -> ``interval``,
``interval_count``), so an attribute configured on a column (``attributes.price.*.stripe``) finds its
parameter with :func:`param_of`, and a column that is not a top-level parameter is sent inside its
parameter (``recurring.interval``).

Example::

    param_of("price", "interval").change        # "replace"
    sorted(names("price", change="replace"))    # ["billing_scheme", "currency", ...]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Entity = Literal["product", "price"]
#: What an update may do with the parameter on an existing object: change it (``update``), never
#: (``replace``: a price needs a new price; a product's id is fixed), or set it only while the
#: object's value is ``unspecified`` (``while_unspecified``; otherwise as ``replace``).
Change = Literal["update", "replace", "while_unspecified"]


@dataclass(frozen=True)
class Param:
    entity: Entity
    name: str  # the create/update request parameter
    change: Change
    columns: tuple[str, ...] = ()  # silver.stripe_* columns landed from it (metadata: also metadata.<key>)
    create: bool = True  # accepted by the create request


def _product(name: str, change: Change = "update", create: bool = True) -> Param:
    return Param("product", name, change, (name,), create)


def _price(name: str, change: Change, columns: tuple[str, ...] | None = None, create: bool = True) -> Param:
    return Param("price", name, change, (name,) if columns is None else columns, create)


PARAMS: tuple[Param, ...] = (
    _product("id", "replace"),
    _product("name"),
    _product("description"),
    _product("active"),
    _product("metadata"),
    _product("tax_code"),
    _product("images"),
    _product("url"),
    _product("unit_label"),
    _product("shippable"),
    _product("statement_descriptor"),
    _product("marketing_features"),
    _product("package_dimensions"),
    _product("default_price", create=False),
    _price("product", "replace"),
    _price("currency", "replace"),
    _price("unit_amount", "replace"),
    _price("unit_amount_decimal", "replace", ()),
    _price("recurring", "replace", ("recurring", "interval", "interval_count")),
    _price("billing_scheme", "replace"),
    _price("tiers", "replace"),
    _price("tiers_mode", "replace"),
    _price("transform_quantity", "replace"),
    _price("custom_unit_amount", "replace"),
    # Stripe derives a price's type from ``recurring``: never sent, and an update naming it is refused.
    _price("type", "replace", create=False),
    _price("active", "update"),
    _price("nickname", "update"),
    _price("lookup_key", "update"),
    _price("transfer_lookup_key", "update", ()),
    _price("metadata", "update"),
    _price("tax_behavior", "while_unspecified"),
)

_BY_COLUMN: dict[tuple[str, str], Param] = {(p.entity, c): p for p in PARAMS for c in p.columns}


def param_of(entity: Entity, column: str) -> Param | None:
    """The request parameter a ``silver.stripe_*`` column lands from (``metadata.<key>``: metadata),
    or None for a column Stripe's catalog requests do not set."""
    if column.startswith("metadata."):
        column = "metadata"
    return _BY_COLUMN.get((entity, column))


def names(entity: Entity, *, change: Change | None = None, create: bool | None = None) -> frozenset[str]:
    """The parameter names of an entity, optionally only those with this ``change`` / ``create``."""
    return frozenset(
        p.name for p in PARAMS
        if p.entity == entity and (change is None or p.change == change) and (create is None or p.create == create)
    )


def updatable(entity: Entity) -> frozenset[str]:
    """Parameters an update request accepts (``while_unspecified`` ones included: Stripe checks the value)."""
    return names(entity) - names(entity, change="replace")


def replaces(entity: Entity, column: str) -> bool:
    """True when a change of this column cannot be an update: a price needs ``replace_price``."""
    param = param_of(entity, column)
    return param is not None and param.change == "replace"


_CHANGE_TEXT = {
    "update": "yes",
    "replace": "no: a new price (replace_price)",
    "while_unspecified": "only while `unspecified`; otherwise replace_price",
}


def markdown_table() -> str:
    """The parameters as the Markdown table docs/internals.md shows."""
    rows = ["| entity | parameter | silver columns | on create | an update may change it |", "|---|---|---|---|---|"]
    for p in PARAMS:
        change = "no: fixed" if p.entity == "product" and p.change == "replace" else _CHANGE_TEXT[p.change]
        columns = ", ".join(f"`{c}`" for c in p.columns) or "-"
        rows.append(f"| {p.entity} | `{p.name}` | {columns} | {'yes' if p.create else 'no'} | {change} |")
    return "\n".join(rows)
