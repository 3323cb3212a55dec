"""Synthetic catalogs with known ground truth (``recon generate``), any size, built with Spark.

Every value is a pure function of ``(seed, row index)``: ``spark.range`` plus Spark SQL expressions
(``xxhash64`` of the seed, a salt and the index gives the pseudo-randomness). There is no Python loop
over rows, no shuffle and no collect, so 10M products run on 2 cores; the same seed gives the same
file contents, another seed another catalog.

Layout under OUT (local path or any Hadoop URI)::

    internal/products.parquet  internal/prices.parquet    Spark Parquet folders
    internal/products.csv      internal/prices.csv        same rows; header; RFC 4180 quoting ("" in
                                                          quotes); metadata as a JSON string; ISO
                                                          timestamps (2025-03-01T10:00:00Z); amounts
                                                          as decimal strings in the currency's precision
    stripe/products/  stripe/prices/                      JSON lines (text part files), one API object
                                                          per line, as ``GET /v1/products|prices`` returns
    truth.jsonl/                                          JSON lines: entity, key, kind, attribute

Seeded discrepancies (each on disjoint rows, so ``truth.jsonl`` is exactly what ``recon detect``
must report under docs/internals.md and the default conf/base.yaml):

- products, exactly ``max(1, round(products * rate))`` rows per kind and trap (an affine permutation
  of the index picks them; with fewer than 12 x that many products the last kinds get fewer rows):
  missing_in_stripe (its active prices cascade to price missing_in_stripe rows),
  field_mismatch on name, description, active (soft-deleted internally through ``deleted_at``, still
  active in Stripe), tax_code and ``metadata.color`` (other value) / ``metadata.legacy_sku`` (extra
  Stripe key), picked by a hashed variant,
  duplicate_in_stripe (a later-created active copy with the same ``metadata.internal_id`` and another
  name: only the older primary is compared, so the copy's name is no field_mismatch);
- prices, each with probability ``rate`` (prices of products present in Stripe): missing_in_stripe,
  field_mismatch on amount, nickname, active (archived internally, active in Stripe),
  price_product_mismatch (the Stripe price hangs off the next product's Stripe product; when that
  product is not in Stripe the price stays clean);
- missing_in_internal: ``round(products * rate)`` active orphan Stripe products (their
  ``internal_id`` is an id beyond the internal range) with two active orphan prices each, plus as
  many archived orphans with one archived price (a trap: inactive and unmapped is no row).

Traps normalisation must erase (never in truth; the same number of rows as a seeded kind):

- product ``trap_unicode``: internal name NFD (``"Cafe\\u0301 ..."``), Stripe NFC (``"Caf\\u00e9 ..."``);
- product ``trap_whitespace``: internal name/description padded with spaces, a tab and an em space
  (U+2003, Unicode whitespace);
- product ``trap_null_empty``: description null on one side, ``""`` on the other;
- product ``trap_inactive_both``: inactive on both sides (internally via ``active=false`` or
  ``deleted_at``) and a different name in Stripe;
- product ``trap_inactive_absent``: inactive internally, absent in Stripe, and so are all its prices;
- price ``trap_archived_both``: archived on both sides, different nickname in Stripe;
- price ``trap_inactive_absent``: inactive internally, absent in Stripe;
- price ``trap_whitespace``: internal nickname padded with whitespace;
- every row: currency upper case internally (``"USD"``) and lower case in Stripe; USD/EUR/GBP
  (exponent 2), JPY (0) and KWD (3, last minor digit 0) amounts; metadata keys in another order in
  Stripe (``internal_id`` first); inactive orphan Stripe products/prices (inactive, unmapped: no row).

All rows are valid input (unique non-null keys, known currencies, amounts exact in minor units):
nothing here is meant to be quarantined.

Example::

    summary = generate(spark, "/tmp/cat", products=1000, seed=7)
    summary["truth"]["product.missing_in_stripe"]   # 20
    spark.read.parquet("/tmp/cat/internal/prices.parquet")
"""

from __future__ import annotations

import math
import time

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from .errors import ConfigError

T0 = 1735689600  # 2025-01-01T00:00:00Z: internal timestamps fall in the 300 days after it
DAY = 86400
ROWS_PER_PARTITION = 500_000  # products per Spark partition (one part file per partition and output)

# Product slot kinds, each on exactly ``count`` rows. Attribute kinds are field_mismatch rows.
PRODUCT_KINDS = (
    "missing_in_stripe", "name", "description", "active", "tax_code", "metadata", "duplicate_in_stripe",
    "trap_unicode", "trap_whitespace", "trap_null_empty", "trap_inactive_both", "trap_inactive_absent",
)
# Price kinds, each with probability ``rate`` among prices of products present in Stripe.
PRICE_KINDS = (
    "missing_in_stripe", "amount", "nickname", "active", "price_product_mismatch",
    "trap_archived_both", "trap_inactive_absent", "trap_whitespace",
)
MAX_RATE = 1.0 / len(PRODUCT_KINDS)

ADJECTIVES = ("Basic", "Pro", "Premium", "Team", "Enterprise", "Starter", "Ultra", "Classic")
NOUNS = ("Plan", "Widget", "Caf\u00e9 Blend", "M\u00fcsli Box", "Subscription", "License", "Bundle", "Kit")
COLORS = ("red", "green", "blue", "black")
TIERS = ("free", "basic", "gold")
TAX_CODES = ("txcd_10000000", "txcd_10103001", "txcd_20030000", "txcd_30011000")
# Weighted currency pick (internal spelling; Stripe gets lower case).
CURRENCIES = ("USD", "USD", "USD", "USD", "EUR", "GBP", "JPY", "JPY", "KWD", "KWD")
WS = " \t\u2003"  # trailing whitespace of the whitespace traps (em space is Unicode whitespace)

# Every (entity, kind, attribute) truth can hold, in report order.
TRUTH_KEYS: tuple[tuple[str, str, str | None], ...] = (
    ("product", "missing_in_stripe", None),
    ("product", "missing_in_internal", None),
    ("product", "field_mismatch", "name"),
    ("product", "field_mismatch", "description"),
    ("product", "field_mismatch", "active"),
    ("product", "field_mismatch", "tax_code"),
    ("product", "field_mismatch", "metadata.color"),
    ("product", "field_mismatch", "metadata.legacy_sku"),
    ("product", "duplicate_in_stripe", None),
    ("price", "missing_in_stripe", None),
    ("price", "missing_in_internal", None),
    ("price", "field_mismatch", "amount"),
    ("price", "field_mismatch", "nickname"),
    ("price", "field_mismatch", "active"),
    ("price", "price_product_mismatch", "product"),
)


def _q(value: str | None) -> str:
    """A Spark SQL string literal (or NULL)."""
    if value is None:
        return "CAST(NULL AS STRING)"
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _arr(values: tuple[str | None, ...]) -> str:
    return "array(" + ", ".join(_q(v) for v in values) + ")"


def _truth_label(entity: str, kind: str, attribute: str | None) -> str:
    return ".".join(x for x in (entity, kind, attribute) if x)


class _Exprs:
    """Spark SQL snippets for one (products, seed, rate): hashing, kinds, ids."""

    def __init__(self, products: int, seed: int, rate: float) -> None:
        self.n = products
        self.seed = seed
        self.rate = rate
        self.count = max(1, round(products * rate)) if rate > 0 else 0
        self.width = max(7, len(str(products + max(self.count, 1) * 2)))
        # An affine permutation p = (a*i + b) mod n spreads each kind's block over the whole range.
        a = max(1, int(products * 0.6180339887) + seed % max(products, 1)) % max(products, 1) or 1
        while math.gcd(a, products) != 1:
            a += 1
        self.a, self.b = a, (seed * 7919) % max(products, 1)

    def hash(self, salt: str, *cols: str) -> str:
        return f"xxhash64(CAST({self.seed} AS BIGINT), '{salt}', {', '.join(cols)})"

    def pick(self, salt: str, n: int, *cols: str) -> str:
        """An int in [0, n) from the seed, a salt and the columns."""
        return f"CAST(pmod({self.hash(salt, *cols)}, {n}) AS INT)"

    def choose(self, salt: str, values: tuple[str | None, ...], *cols: str) -> str:
        return f"element_at({_arr(values)}, {self.pick(salt, len(values), *cols)} + 1)"

    def product_kind(self, idx: str) -> str:
        """The product slot kind of index ``idx`` (a pure function: usable for any index)."""
        if self.count == 0:
            return "'none'"
        slot = f"(pmod({idx} * {self.a}L + {self.b}L, {self.n}L) DIV {self.count})"
        return f"coalesce(try_element_at({_arr(PRODUCT_KINDS)}, CAST({slot} AS INT) + 1), 'none')"

    def price_kind(self, i: str, k: str) -> str:
        """The hashed price kind of price ``k`` of product ``i`` (before product-level overrides)."""
        if self.rate <= 0:
            return "'none'"
        slot = f"CAST(floor(pmod({self.hash('pkind', i, k)}, 1000000) / 1000000.0 / {self.rate}) AS INT)"
        return f"coalesce(try_element_at({_arr(PRICE_KINDS)}, {slot} + 1), 'none')"

    def product_id(self, idx: str) -> str:
        return f"concat('P', lpad(CAST({idx} AS STRING), {self.width}, '0'))"

    def stripe_id(self, prefix: str, marker: str, num: str) -> str:
        """Deterministic, unique Stripe-looking id: 8 hash hex chars, a marker letter, base36(num)."""
        token = f"substr(lower(lpad(hex({self.hash(prefix + marker, num)}), 16, '0')), 1, 8)"
        return f"concat('{prefix}_', {token}, '{marker}', lower(conv(CAST({num} AS STRING), 10, 36)))"

    def ts(self, salt: str, base: int, spread_days: int, *cols: str) -> str:
        return f"({base}L + {self.pick(salt, spread_days * DAY, *cols)})"


def _validate(products: int, rate: float) -> None:
    if not isinstance(products, int) or products < 1:
        raise ConfigError(f"generate: --products must be a positive integer, got {products!r}")
    if not (0.0 <= rate <= MAX_RATE):
        raise ConfigError(
            f"generate: --rate must be between 0 and {MAX_RATE:.4f} (each of the {len(PRODUCT_KINDS)} product "
            f"kinds and traps is seeded on its own disjoint rows), got {rate!r}"
        )


def _products_wide(spark: SparkSession, x: _Exprs) -> DataFrame:
    """One row per internal product with its kind and both sides' values (no output shape yet)."""
    parts = max(1, math.ceil(x.n / ROWS_PER_PARTITION))
    base = spark.range(0, x.n, 1, parts).withColumnRenamed("id", "i")
    step1 = base.selectExpr(
        "i",
        f"{x.product_id('i')} AS product_id",
        f"{x.product_kind('i')} AS kind",
        f"{x.product_kind(f'pmod(i + 1, {x.n}L)')} AS next_kind",
        f"1 + {x.pick('nprices', 3, 'i')} AS n_prices",
        f"{x.pick('variant', 4, 'i')} AS var",  # picks the variant of a kind (e.g. which metadata key)
        f"concat_ws(' ', {x.choose('adj', ADJECTIVES, 'i')}, {x.choose('noun', NOUNS, 'i')}, CAST(i AS STRING))"
        " AS base_name",
        f"{x.choose('color', COLORS, 'i')} AS color",
        f"{x.choose('tier', TIERS, 'i')} AS tier",
        f"{x.pick('tax', len(TAX_CODES) + 1, 'i')} AS tax_pick",
        f"{x.pick('descnull', 100, 'i')} < 15 AS desc_null",
        f"{x.ts('updated', T0, 300, 'i')} AS updated_s",
        f"{x.ts('created', T0 - 400 * DAY, 300, 'i')} AS created_s",
        f"{x.pick('supdated', 60 * DAY, 'i')} AS stripe_updated_after",
        f"{x.stripe_id('prod', 'x', 'i')} AS stripe_id",
        f"{x.stripe_id('prod', 'y', 'i')} AS dup_stripe_id",
        f"{x.stripe_id('price', 'x', 'i * 4')} AS first_price_stripe_id",
        f"{x.price_kind('i', '0')} AS first_price_kind",
    )
    tax = f"try_element_at({_arr(TAX_CODES)}, tax_pick + 1)"  # index 5 -> null (no tax code)
    return step1.selectExpr(
        "*",
        "CASE WHEN desc_null THEN CAST(NULL AS STRING) "
        "ELSE concat(base_name, ', item ', CAST(i AS STRING), '. Ships worldwide.') END AS base_desc",
        f"{tax} AS tax_code",
        f"element_at({_arr(TAX_CODES)}, pmod(tax_pick + 1, {len(TAX_CODES)}) + 1) AS other_tax_code",
        "kind NOT IN ('missing_in_stripe', 'trap_inactive_absent') AS in_stripe",
        "next_kind NOT IN ('missing_in_stripe', 'trap_inactive_absent') AND i <> pmod(i + 1, "
        f"{x.n}L) AS next_in_stripe",
        f"{x.product_id(f'pmod(i + 1, {x.n}L)')} AS next_product_id",
        f"{x.stripe_id('prod', 'x', f'pmod(i + 1, {x.n}L)')} AS next_stripe_id",
    )


def _internal_products(w: DataFrame) -> DataFrame:
    return w.selectExpr(
        "product_id",
        "CASE kind WHEN 'trap_unicode' THEN concat('Cafe\u0301 ', base_name) "
        f"WHEN 'trap_whitespace' THEN concat('  ', base_name, {_q(WS)}) ELSE base_name END AS name",
        "CASE WHEN kind = 'trap_null_empty' THEN (CASE WHEN var % 2 = 0 THEN '' END) "
        f"WHEN kind = 'trap_whitespace' AND base_desc IS NOT NULL THEN concat(' ', base_desc, {_q(WS)}) "
        "ELSE base_desc END AS description",
        "NOT ((kind IN ('trap_inactive_both', 'trap_inactive_absent') AND var % 2 = 1) "
        "OR (kind = 'active' AND var = 1)) AS active",
        "CASE WHEN kind = 'active' OR (kind IN ('trap_inactive_both', 'trap_inactive_absent') AND var % 2 = 0) "
        "THEN timestamp_seconds(updated_s) END AS deleted_at",
        "tax_code",
        "map('color', color, 'tier', tier) AS metadata",
        "timestamp_seconds(updated_s) AS updated_at",
    )


_EMPTY_ARR = "CAST(array() AS array<string>)"
_NULL_S = "CAST(NULL AS STRING)"


def _product_json(id_: str, active: str, created: str, default_price: str, description: str, metadata: str,
                  name: str, tax_code: str, updated: str) -> str:
    """``to_json`` of a Stripe product object in the API's field order, nulls kept."""
    struct = (
        f"named_struct('id', {id_}, 'object', 'product', 'active', {active}, 'created', {created}, "
        f"'default_price', {default_price}, 'description', {description}, 'images', {_EMPTY_ARR}, "
        f"'livemode', false, 'marketing_features', {_EMPTY_ARR}, 'metadata', {metadata}, 'name', {name}, "
        f"'package_dimensions', {_NULL_S}, 'shippable', CAST(NULL AS BOOLEAN), "
        f"'statement_descriptor', {_NULL_S}, 'tax_code', {tax_code}, 'unit_label', {_NULL_S}, "
        f"'updated', {updated}, 'url', {_NULL_S})"
    )
    return f"to_json({struct}, map('ignoreNullFields', 'false'))"


def _price_json(id_: str, active: str, created: str, currency: str, lookup_key: str, nickname: str,
                product: str, interval: str, interval_count: str, unit_amount: str) -> str:
    """``to_json`` of a Stripe price object in the API's field order, nulls kept."""
    recurring = (
        f"CASE WHEN {interval} IS NULL THEN NULL ELSE named_struct('interval', {interval}, "
        f"'interval_count', {interval_count}, 'meter', {_NULL_S}, 'trial_period_days', CAST(NULL AS INT), "
        "'usage_type', 'licensed') END"
    )
    struct = (
        f"named_struct('id', {id_}, 'object', 'price', 'active', {active}, 'billing_scheme', 'per_unit', "
        f"'created', {created}, 'currency', {currency}, 'custom_unit_amount', {_NULL_S}, 'livemode', false, "
        f"'lookup_key', {lookup_key}, 'metadata', CAST(map() AS map<string,string>), 'nickname', {nickname}, "
        f"'product', {product}, 'recurring', {recurring}, 'tax_behavior', 'unspecified', "
        f"'tiers_mode', {_NULL_S}, 'transform_quantity', {_NULL_S}, "
        f"'type', CASE WHEN {interval} IS NULL THEN 'one_time' ELSE 'recurring' END, "
        f"'unit_amount', {unit_amount}, 'unit_amount_decimal', CAST({unit_amount} AS STRING))"
    )
    return f"to_json({struct}, map('ignoreNullFields', 'false'))"


def _stripe_products(w: DataFrame, orphans: DataFrame) -> DataFrame:
    default_price = (
        "CASE WHEN first_price_kind IN ('none', 'amount', 'nickname', 'trap_whitespace') "
        f"THEN first_price_stripe_id ELSE {_NULL_S} END"
    )
    name = (
        "CASE kind WHEN 'name' THEN concat(base_name, ' (legacy)') WHEN 'trap_unicode' THEN concat('Caf\u00e9 ', "
        "base_name) WHEN 'trap_inactive_both' THEN concat('Old ', base_name) ELSE base_name END"
    )
    description = (
        "CASE kind WHEN 'description' THEN concat('Outdated copy of ', base_name) "
        "WHEN 'trap_null_empty' THEN (CASE WHEN var % 2 = 1 THEN '' END) ELSE base_desc END"
    )
    metadata = (
        "CASE WHEN kind = 'metadata' AND var % 2 = 0 THEN "
        f"map('internal_id', product_id, 'tier', tier, 'color', element_at({_arr(COLORS)}, "
        f"CAST(pmod(array_position({_arr(COLORS)}, color), {len(COLORS)}) AS INT) + 1)) "
        "WHEN kind = 'metadata' THEN map('internal_id', product_id, 'tier', tier, 'color', color, "
        "'legacy_sku', concat('SKU-', CAST(i AS STRING))) "
        "ELSE map('internal_id', product_id, 'tier', tier, 'color', color) END"
    )
    tax = "CASE WHEN kind = 'tax_code' THEN other_tax_code ELSE tax_code END"
    present = w.filter("in_stripe")
    primary = present.select(
        F.expr(_product_json("stripe_id", "kind <> 'trap_inactive_both'", "created_s", default_price,
                             description, metadata, name, tax, "created_s + stripe_updated_after")).alias("value")
    )
    dup_created = f"created_s + 1 + pmod(i, {3600})"
    dups = w.filter("kind = 'duplicate_in_stripe'").select(
        F.expr(_product_json("dup_stripe_id", "true", dup_created, _NULL_S, description, metadata,
                             "concat(base_name, ' (retry)')", tax, dup_created)).alias("value")
    )
    orphan_rows = orphans.select(
        F.expr(_product_json("stripe_id", "active", "created_s", _NULL_S, _NULL_S,
                             "map('internal_id', product_id, 'tier', 'free', 'color', 'red')",
                             "concat('Retired ', product_id)", _NULL_S, "created_s")).alias("value")
    )
    return primary.unionByName(dups).unionByName(orphan_rows)


def _prices_wide(w: DataFrame, x: _Exprs) -> DataFrame:
    """One row per internal price with its effective kind and both sides' values."""
    exploded = w.selectExpr(
        "i", "product_id", "kind AS product_kind", "in_stripe AS product_in_stripe", "next_in_stripe",
        "stripe_id AS product_stripe_id", "next_stripe_id", "created_s AS product_created_s",
        "explode(sequence(0, n_prices - 1)) AS k",
    )
    step1 = exploded.selectExpr(
        "*",
        "concat(product_id, '-', CAST(k AS STRING)) AS price_id",
        f"{x.stripe_id('price', 'x', 'i * 4 + k')} AS stripe_id",
        f"{x.choose('cur', CURRENCIES, 'i', 'k')} AS currency",
        f"{x.pick('amount', 99900, 'i', 'k')} + 100 AS amount_pick",
        f"{x.choose('interval', (None, None, 'month', 'month', 'year'), 'i', 'k')} AS interval",
        f"{x.choose('icount', ('1', '1', '3'), 'i', 'k')} AS icount_pick",
        f"{x.pick('nick', 10, 'i', 'k')} AS nick_pick",
        f"{x.ts('pupdated', T0, 300, 'i', 'k')} AS updated_s",
        f"{x.pick('pcreated', 30 * DAY, 'i', 'k')} AS created_after",
        f"{x.price_kind('i', 'k')} AS hashed_kind",
    )
    eff_kind = (
        "CASE WHEN product_kind = 'missing_in_stripe' THEN 'cascade_missing' "
        "WHEN product_kind = 'trap_inactive_absent' THEN 'trap_product_absent' "
        "WHEN hashed_kind = 'price_product_mismatch' AND NOT next_in_stripe THEN 'none' "
        "ELSE hashed_kind END"
    )
    exponent = "CASE currency WHEN 'JPY' THEN 0 WHEN 'KWD' THEN 3 ELSE 2 END"
    return step1.selectExpr(
        "*",
        f"{eff_kind} AS kind",
        f"{exponent} AS exponent",
        "CAST(CASE WHEN currency = 'KWD' THEN amount_pick * 10 ELSE amount_pick END AS BIGINT) AS minor",
        "CASE WHEN interval = 'month' THEN CAST(icount_pick AS INT) WHEN interval = 'year' THEN 1 END "
        "AS interval_count",
        "CASE WHEN nick_pick < 3 THEN CAST(NULL AS STRING) WHEN interval IS NULL THEN 'One-time' "
        "WHEN interval = 'year' THEN 'Yearly' ELSE 'Monthly' END AS base_nick",
    ).selectExpr(
        "*",
        "CAST(CAST(minor AS DECIMAL(18, 0)) / CASE exponent WHEN 0 THEN 1 WHEN 3 THEN 1000 ELSE 100 END "
        "AS DECIMAL(18, 3)) AS amount",
        "NOT (kind IN ('active', 'trap_archived_both', 'trap_inactive_absent', 'trap_product_absent')) AS active",
        "kind NOT IN ('cascade_missing', 'trap_product_absent', 'missing_in_stripe', 'trap_inactive_absent') "
        "AS in_stripe",
    )


def _internal_prices(p: DataFrame) -> DataFrame:
    return p.selectExpr(
        "price_id",
        "product_id",
        "currency",
        "amount",
        "interval",
        "interval_count",
        "active",
        f"CASE WHEN kind = 'trap_whitespace' THEN concat('  ', coalesce(base_nick, 'Standard'), {_q(WS)}) "
        "ELSE base_nick END AS nickname",
        "timestamp_seconds(updated_s) AS updated_at",
    )


def _stripe_prices(p: DataFrame, orphan_prices: DataFrame) -> DataFrame:
    nickname = (
        "CASE kind WHEN 'nickname' THEN concat(coalesce(base_nick, 'Standard'), ' (old)') "
        "WHEN 'trap_whitespace' THEN coalesce(base_nick, 'Standard') "
        "WHEN 'trap_archived_both' THEN 'Archived' ELSE base_nick END"
    )
    unit_amount = "CASE WHEN kind = 'amount' THEN minor + CAST(pow(10, exponent) AS BIGINT) ELSE minor END"
    present = p.filter("in_stripe").select(
        F.expr(_price_json(
            "stripe_id", "kind NOT IN ('trap_archived_both')", "product_created_s + created_after",
            "lower(currency)", "price_id", nickname,
            "CASE WHEN kind = 'price_product_mismatch' THEN next_stripe_id ELSE product_stripe_id END",
            "interval", "interval_count", unit_amount,
        )).alias("value")
    )
    orphans = orphan_prices.select(
        F.expr(_price_json("stripe_id", "active", "created_s", "'usd'", "price_id", "'Monthly'",
                           "product_stripe_id", "'month'", "1", "CAST(1000 + k * 500 AS BIGINT)")).alias("value")
    )
    return present.unionByName(orphans)


def _orphans(spark: SparkSession, x: _Exprs) -> tuple[DataFrame, DataFrame]:
    """Stripe-only products (first ``count`` active, next ``count`` archived) and their prices."""
    n_orphans = 2 * x.count
    base = spark.range(0, n_orphans, 1, 1).selectExpr(
        f"id + {x.n}L AS idx", f"id < {x.count} AS active"
    )
    products = base.selectExpr(
        "idx", "active",
        f"{x.product_id('idx')} AS product_id",
        f"{x.stripe_id('prod', 'z', 'idx')} AS stripe_id",
        f"{x.ts('ocreated', T0 - 400 * DAY, 300, 'idx')} AS created_s",
    )
    prices = products.selectExpr(
        "idx", "active", "product_id", "stripe_id AS product_stripe_id", "created_s AS product_created_s",
        "explode(sequence(0, CASE WHEN active THEN 1 ELSE 0 END)) AS k",
    ).selectExpr(
        "*",
        "concat(product_id, '-', CAST(k AS STRING)) AS price_id",
        f"{x.stripe_id('price', 'z', 'idx * 4 + k')} AS stripe_id",
        "product_created_s + 60 + k AS created_s",
    )
    return products, prices


def _truth(w: DataFrame, p: DataFrame, orphans: DataFrame, orphan_prices: DataFrame) -> DataFrame:
    cols = ["entity", "key", "kind", "attribute"]
    product_rows = w.filter(
        "kind IN ('missing_in_stripe', 'name', 'description', 'active', 'tax_code', 'metadata', "
        "'duplicate_in_stripe')"
    ).selectExpr(
        "'product' AS entity",
        "product_id AS key",
        "CASE WHEN kind IN ('missing_in_stripe', 'duplicate_in_stripe') THEN kind ELSE 'field_mismatch' END "
        "AS kind",
        "CASE WHEN kind IN ('missing_in_stripe', 'duplicate_in_stripe') THEN CAST(NULL AS STRING) "
        "WHEN kind = 'metadata' THEN (CASE WHEN var % 2 = 0 THEN 'metadata.color' ELSE 'metadata.legacy_sku' END) "
        "ELSE kind END AS attribute",
    )
    price_rows = p.filter(
        "kind IN ('cascade_missing', 'missing_in_stripe', 'amount', 'nickname', 'active', 'price_product_mismatch')"
    ).selectExpr(
        "'price' AS entity",
        "price_id AS key",
        "CASE WHEN kind IN ('cascade_missing', 'missing_in_stripe') THEN 'missing_in_stripe' "
        "WHEN kind = 'price_product_mismatch' THEN kind ELSE 'field_mismatch' END AS kind",
        "CASE WHEN kind IN ('cascade_missing', 'missing_in_stripe') THEN CAST(NULL AS STRING) "
        "WHEN kind = 'price_product_mismatch' THEN 'product' ELSE kind END AS attribute",
    )
    orphan_rows = orphans.filter("active").selectExpr(
        "'product' AS entity", "product_id AS key", "'missing_in_internal' AS kind",
        "CAST(NULL AS STRING) AS attribute",
    )
    orphan_price_rows = orphan_prices.filter("active").selectExpr(
        "'price' AS entity", "price_id AS key", "'missing_in_internal' AS kind",
        "CAST(NULL AS STRING) AS attribute",
    )
    return product_rows.select(*cols).unionByName(price_rows).unionByName(orphan_rows).unionByName(orphan_price_rows)


def _to_csv_frame(df: DataFrame, entity: str) -> DataFrame:
    """CSV shape: metadata as a JSON string; amounts as decimal strings in the currency's precision."""
    if entity == "product":
        return df.withColumns({"metadata": F.to_json("metadata")})
    amount = F.expr(
        "CASE currency WHEN 'JPY' THEN CAST(CAST(amount AS DECIMAL(18, 0)) AS STRING) "
        "WHEN 'KWD' THEN CAST(amount AS STRING) ELSE CAST(CAST(amount AS DECIMAL(18, 2)) AS STRING) END"
    )
    return df.withColumns({"amount": amount})


def _write_csv(df: DataFrame, path: str) -> None:
    (
        df.write.mode("overwrite")
        .option("header", "true")
        .option("escape", '"')  # RFC 4180: a quote inside a quoted value is doubled (not backslashed)
        # Keep the whitespace traps: Spark trims CSV values on write unless told not to.
        .option("ignoreLeadingWhiteSpace", "false")
        .option("ignoreTrailingWhiteSpace", "false")
        .option("timestampFormat", "yyyy-MM-dd'T'HH:mm:ssXXX")
        .option("encoding", "UTF-8")
        .csv(path)
    )


def generate(spark: SparkSession, out: str, products: int, seed: int = 42, rate: float = 0.02) -> dict:
    """Write a synthetic catalog with seeded discrepancies and its ``truth.jsonl`` under ``out``.

    Returns a summary: row counts per output (measured while writing, no extra pass), truth counts
    per ``entity.kind[.attribute]``, trap counts, seconds taken and the paths written.

    Example::

        s = generate(spark, "/tmp/cat", products=300, seed=1)
        s["files"]["stripe/prices"], s["truth"]["price.field_mismatch.amount"], s["seconds"]
    """
    _validate(products, rate)
    started = time.monotonic()
    out = out.rstrip("/")
    x = _Exprs(products, seed, rate)

    wide = _products_wide(spark, x)
    prices = _prices_wide(wide, x)
    orphans, orphan_prices = _orphans(spark, x)

    paths = {
        "internal/products.parquet": f"{out}/internal/products.parquet",
        "internal/prices.parquet": f"{out}/internal/prices.parquet",
        "internal/products.csv": f"{out}/internal/products.csv",
        "internal/prices.csv": f"{out}/internal/prices.csv",
        "stripe/products": f"{out}/stripe/products",
        "stripe/prices": f"{out}/stripe/prices",
        "truth.jsonl": f"{out}/truth.jsonl",
    }
    counts: dict[str, int] = {}

    def observed(df: DataFrame, name: str, *extra) -> tuple[DataFrame, Observation]:
        obs = Observation(name.replace("/", "_").replace(".", "_"))
        return df.observe(obs, F.count(F.lit(1)).alias("rows"), *extra), obs

    traps: dict[str, int] = {}
    for name, entity, src, project, kinds in (
        ("internal/products", "product", wide, _internal_products, PRODUCT_KINDS),
        ("internal/prices", "price", prices, _internal_prices, PRICE_KINDS),
    ):
        trap_kinds = [k for k in kinds if k.startswith("trap_")]
        trap_metrics = [F.sum(F.expr(f"CASE WHEN kind = '{k}' THEN 1 ELSE 0 END")).alias(k) for k in trap_kinds]
        src_o, obs = observed(src, name, *trap_metrics)
        df = project(src_o)
        df.write.mode("overwrite").parquet(paths[f"{name}.parquet"])
        got = obs.get
        counts[f"{name}.parquet"] = int(got["rows"])
        traps.update({f"{entity}.{k}": int(got[k] or 0) for k in trap_kinds})
        df_o, obs = observed(_to_csv_frame(project(src), entity), name + "_csv")
        _write_csv(df_o, paths[f"{name}.csv"])
        counts[f"{name}.csv"] = int(obs.get["rows"])

    for name, df in (("stripe/products", _stripe_products(wide, orphans)),
                     ("stripe/prices", _stripe_prices(prices, orphan_prices))):
        df_o, obs = observed(df, name)
        df_o.write.mode("overwrite").text(paths[name])
        counts[name] = int(obs.get["rows"])

    truth = _truth(wide, prices, orphans, orphan_prices)
    metrics = [
        F.sum(F.expr(
            f"CASE WHEN entity = '{e}' AND kind = '{k}' AND attribute {'IS NULL' if a is None else f'= {_q(a)}'} "
            "THEN 1 ELSE 0 END"
        )).alias(_truth_label(e, k, a))
        for e, k, a in TRUTH_KEYS
    ]
    truth_o, obs = observed(truth, "truth", *metrics)
    truth_o.select(
        F.to_json(F.struct("entity", "key", "kind", "attribute"), {"ignoreNullFields": "false"}).alias("value")
    ).write.mode("overwrite").text(paths["truth.jsonl"])
    got = obs.get
    counts["truth.jsonl"] = int(got["rows"])
    truth_counts = {label: int(got[label] or 0) for label in (_truth_label(*t) for t in TRUTH_KEYS)}

    traps["product.trap_inactive_orphan"] = x.count  # archived Stripe-only products (and their prices)
    return {
        "out": out,
        "products": products,
        "seed": seed,
        "rate": rate,
        "rows_per_product_kind": x.count,
        "files": counts,
        "truth": truth_counts,
        "traps": traps,
        "seconds": round(time.monotonic() - started, 1),
        "paths": paths,
    }

