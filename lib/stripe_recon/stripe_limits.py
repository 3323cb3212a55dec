"""Stripe's limits on every value stripe-recon sends, declared once.

Everything that needs one of these numbers derives it from :data:`LIMITS`:

* the internal expectation suites (conf/expectations/internal_*.json): a row rule names its limit in
  ``meta.stripe_limit`` and uses the number as the suite parameter ``stripe_limit_<key>``
  (``{"$PARAMETER": "stripe_limit_product_name"}``) or the SQL macro ``${stripe_limit:<key>}``
  (gx_suites.py); its quarantine reason becomes ``<rule>: <limit.reason>``, so a quarantined row
  says which limit it breaks (``name_too_long: Stripe accepts at most 250 characters in a product
  name``). Land evaluates these rules on every record, so a value Stripe would refuse is never
  planned or sent;
* the Stripe emulator (emulator/store.py), which refuses a longer value with a 400 as Stripe does;
* the request builders (stripe_requests.py) and the limits table in docs/internals.md
  (:func:`markdown_table`; tests/unit/test_stripe_limits.py checks the page holds it).

Sources, in the order preferred: Stripe's documentation where it states a figure (it can be
stricter than the OpenAPI spec, whose ``maxLength`` is often the generic 5000), else the ``maxLength``
/ the "up to N" description of the request parameter in Stripe's OpenAPI spec as embedded in
stripe-mock v0.197.0 (``embedded/openapi/spec3.json``, API version 2025-09-30.clover). ``spec`` holds
what that spec's request schema says, for comparison.

``column``: the internal canonical column the limit is checked on. A limit whose column the internal
tables do not have yet (statement_descriptor, unit_label, url, images, marketing_features: issue #13)
is declared here all the same; tests/unit/test_stripe_limits.py fails as soon as such a column joins
canonical.INTERNAL_*_COLUMNS without a suite rule naming its limit.

Lengths are counted as Spark's ``length()`` and Python's ``len()`` count them: Unicode code points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Unit = Literal["characters", "items", "keys"]

SPEC = "Stripe OpenAPI spec (stripe-mock v0.197.0 embedded/openapi/spec3.json)"
METADATA_DOCS = "Stripe docs, docs.stripe.com/api/metadata (also /work/shared/notes/stripe.md)"


@dataclass(frozen=True)
class Limit:
    """One Stripe limit: at most ``max`` ``unit`` in request parameter ``param`` of ``entity``."""

    key: str  # identifier: suite parameter stripe_limit_<key>, macro ${stripe_limit:<key>}, meta.stripe_limit
    entity: Literal["product", "price", "metadata"]  # metadata: products' and prices' alike
    param: str  # the Stripe request parameter (images[] = each item of images)
    max: int
    unit: Unit
    source: str  # where ``max`` comes from
    spec: str  # what the OpenAPI spec's request schema says
    column: str | None  # internal canonical column checked (None: sent from no internal column)
    what: str  # the value, as the reason names it
    note: str = ""
    min: int = 0  # the fewest ``unit`` Stripe accepts (metadata keys: 1)
    forbids: str = ""  # characters Stripe refuses in the value, as the reason names them

    @property
    def parameter(self) -> str:
        """The GX suite parameter holding ``max``."""
        return f"stripe_limit_{self.key}"

    @property
    def span(self) -> str:
        """``at most 250 characters``, ``1 to 40 characters``."""
        return f"{self.min} to {self.max} {self.unit}" if self.min else f"at most {self.max} {self.unit}"

    @property
    def reason(self) -> str:
        """The limit as a quarantine reason says it (after ``<rule>: ``)."""
        without = f", without {self.forbids}" if self.forbids else ""
        return f"Stripe accepts {self.span} in {self.what}{without}"


_LIMITS = (
    Limit("product_name", "product", "name", 250, "characters",
          "Stripe API changelog 2018-10-31 (docs.stripe.com/changelog/2018-10-31): \"the name field on product "
          "endpoints has a maximum character length limit of 250\"",
          "maxLength 5000", "name", "a product name",
          "the spec's 5000 is its generic string length; the documented 250 is stricter and wins"),
    Limit("product_description", "product", "description", 40000, "characters", SPEC,
          "maxLength 40000 (the product object's schema says 5000)", "description", "a product description",
          "Stripe documents no figure; the request schema's 40000 is what Stripe validates"),
    Limit("product_statement_descriptor", "product", "statement_descriptor", 22, "characters",
          SPEC + ": \"This may be up to 22 characters\"", "maxLength 22", "statement_descriptor",
          "a product statement_descriptor", "not modelled yet (#13); Stripe also refuses < > \\ \" ' in it"),
    Limit("product_unit_label", "product", "unit_label", 12, "characters", SPEC, "maxLength 12", "unit_label",
          "a product unit_label", "not modelled yet (#13)"),
    Limit("product_url", "product", "url", 2048, "characters",
          SPEC + ": the product object's url is maxLength 2048", "maxLength 5000 on create, none on update",
          "url", "a product url", "not modelled yet (#13); Stripe holds no longer url, so the stricter 2048"),
    Limit("product_images", "product", "images", 8, "items",
          SPEC + ": \"A list of up to 8 URLs of images\"", "no maxItems, the description says up to 8", "images",
          "product images", "not modelled yet (#13)"),
    Limit("product_image_url", "product", "images[]", 5000, "characters",
          SPEC + ": the product object's images items are maxLength 5000", "no maxLength", "images",
          "one product image url", "not modelled yet (#13)"),
    Limit("product_marketing_features", "product", "marketing_features", 15, "items",
          SPEC + ": \"A list of up to 15 marketing features\"", "no maxItems, the description says up to 15",
          "marketing_features", "product marketing_features", "not modelled yet (#13)"),
    Limit("product_marketing_feature_name", "product", "marketing_features[].name", 80, "characters",
          SPEC + ": product_marketing_feature.name \"Up to 80 characters long\"", "maxLength 5000",
          "marketing_features", "one marketing feature name",
          "not modelled yet (#13); the description's 80 is stricter than the maxLength and wins"),
    Limit("metadata_keys", "metadata", "metadata", 50, "keys", METADATA_DOCS, "no maxProperties", "metadata",
          "metadata", "counted as a create sends them: metadata.excluded_keys left out, internal_id added"),
    Limit("metadata_key", "metadata", "metadata (keys)", 40, "characters", METADATA_DOCS, "no limit on keys",
          "metadata", "a metadata key", "an empty key cannot be sent either (stripe_requests.py refuses it)",
          min=1, forbids="[ or ]"),
    Limit("metadata_value", "metadata", "metadata (values)", 500, "characters", METADATA_DOCS,
          "no limit on request values (the object's values are maxLength 500)", "metadata", "a metadata value",
          "also bounds product_id when it is sent as metadata.internal_id (mapping.product_key)"),
    Limit("price_nickname", "price", "nickname", 5000, "characters", SPEC, "maxLength 5000", "nickname",
          "a price nickname", "Stripe documents no stricter figure"),
    Limit("price_lookup_key", "price", "lookup_key", 200, "characters",
          SPEC + ": \"This may be up to 200 characters\"", "maxLength 200", "price_id", "a price lookup_key",
          "every price is created with lookup_key = the internal price_id"),
)

LIMITS: dict[str, Limit] = {lim.key: lim for lim in _LIMITS}


def limit(key: str) -> int:
    """The number of limit ``key`` (KeyError names the known keys)."""
    try:
        return LIMITS[key].max
    except KeyError:
        raise KeyError(f"unknown Stripe limit {key!r}; known: {', '.join(LIMITS)}") from None


def parameters() -> dict[str, int]:
    """Every limit as a GX suite parameter (``stripe_limit_<key>``)."""
    return {lim.parameter: lim.max for lim in _LIMITS}


def markdown_table() -> str:
    """The limits as the Markdown table docs/internals.md shows."""
    rows = ["| limit (`meta.stripe_limit`) | Stripe parameter | Stripe accepts | internal column | source | OpenAPI spec says | note |",
            "|---|---|---|---|---|---|---|"]
    for lim in _LIMITS:
        rows.append(f"| `{lim.key}` | {lim.entity if lim.entity != 'metadata' else 'product, price'} "
                    f"`{lim.param}` | {lim.span}{f', without {lim.forbids}' if lim.forbids else ''} | "
                    f"{f'`{lim.column}`' if lim.column else '-'} | "
                    f"{lim.source} | {lim.spec} | {lim.note} |")
    return "\n".join(rows)
