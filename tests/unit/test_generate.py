"""`recon generate`: determinism, counts, the Stripe JSON shape, traps, and truth re-derived independently.

The re-derivation (``_expected_truth``) is a small detector written here in plain Python from
docs/internals.md and the default ownership; it reads only the generated files, never the
generator's internals, so a wrong truth row or a wrong file fails the test.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from decimal import Decimal
from pathlib import Path

import pytest

from stripe_recon.errors import ConfigError
from stripe_recon.generate import generate

N = 300
RATE = 0.02
PER_KIND = 6  # round(300 * 0.02)
EXPONENT = {"usd": 2, "eur": 2, "gbp": 2, "jpy": 0, "kwd": 3}

PRODUCT_KEYS = {
    "id", "object", "active", "created", "default_price", "description", "images", "livemode",
    "marketing_features", "metadata", "name", "package_dimensions", "shippable", "statement_descriptor",
    "tax_code", "unit_label", "updated", "url",
}
PRICE_KEYS = {
    "id", "object", "active", "billing_scheme", "created", "currency", "custom_unit_amount", "livemode",
    "lookup_key", "metadata", "nickname", "product", "recurring", "tax_behavior", "tiers_mode",
    "transform_quantity", "type", "unit_amount", "unit_amount_decimal",
}
ALL_TRUTH_KINDS = {
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
}


# -- reading the generated files (plain Python) ------------------------------------------------

def _parts(folder: Path, suffix: str) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.name.startswith("part-") and p.name.endswith(suffix))
    assert files, f"no part files in {folder}"
    return files


def _lines(folder: Path) -> list[str]:
    return [line for p in _parts(folder, ".txt") for line in p.read_text(encoding="utf-8").splitlines()]


def _jsonl(folder: Path) -> list[dict]:
    return [json.loads(line) for line in _lines(folder)]


def _csv(folder: Path) -> list[dict]:
    rows: list[dict] = []
    for p in _parts(folder, ".csv"):
        with p.open(encoding="utf-8", newline="") as fh:
            rows += list(csv.DictReader(fh))
    return rows


def _parquet(spark, path: Path) -> list[dict]:
    return [r.asDict() for r in spark.read.parquet(str(path)).collect()]  # N = 300: small


def _truth(out: Path) -> list[tuple]:
    return [(t["entity"], t["key"], t["kind"], t["attribute"]) for t in _jsonl(out / "truth.jsonl")]


@pytest.fixture(scope="module")
def gen(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "catalog"
    summary = generate(spark, str(out), products=N, seed=42, rate=RATE)
    return out, summary


@pytest.fixture(scope="module")
def data(spark, gen):
    out, _ = gen
    return {
        "products": _parquet(spark, out / "internal/products.parquet"),
        "prices": _parquet(spark, out / "internal/prices.parquet"),
        "s_products": _jsonl(out / "stripe/products"),
        "s_prices": _jsonl(out / "stripe/prices"),
        "truth": _truth(out),
    }


# -- an independent detector, straight from docs/internals.md ----------------------------------

def _norm(value: str | None, null_equals_empty: bool = False) -> str | None:
    """trim (Unicode whitespace) + NFC; optionally "" -> None."""
    if value is None:
        return None
    v = unicodedata.normalize("NFC", value).strip()
    return None if (null_equals_empty and v == "") else v


def _minor(amount: Decimal, currency: str) -> int:
    scaled = amount * (10 ** EXPONENT[currency.strip().lower()])
    assert scaled == scaled.to_integral_value(), (amount, currency)
    return int(scaled)


def _primary(recs: list[dict]) -> dict:
    return sorted(recs, key=lambda r: (not r["active"], r["created"], r["id"]))[0]


def _expected_truth(d: dict) -> set[tuple]:
    rows: set[tuple] = set()
    internal = {p["product_id"]: p for p in d["products"]}
    by_key: dict[str | None, list[dict]] = {}
    for s in d["s_products"]:
        by_key.setdefault(s["metadata"].get("internal_id"), []).append(s)
    key_of_stripe_product = {s["id"]: s["metadata"].get("internal_id") for s in d["s_products"]}

    for key in set(internal) | set(by_key):
        recs = by_key.get(key, [])
        if key not in internal:
            rows |= {("product", key, "missing_in_internal", None) for s in recs if s["active"]}
            continue
        p = internal[key]
        p_active = (p["active"] is None or p["active"]) and p["deleted_at"] is None
        if not recs:
            if p_active:
                rows.add(("product", key, "missing_in_stripe", None))
            continue
        if sum(1 for s in recs if s["active"]) >= 2:
            rows.add(("product", key, "duplicate_in_stripe", None))
        s = _primary(recs)
        if not p_active and not s["active"]:
            continue
        if _norm(p["name"]) != _norm(s["name"]):
            rows.add(("product", key, "field_mismatch", "name"))
        if _norm(p["description"], True) != _norm(s["description"], True):
            rows.add(("product", key, "field_mismatch", "description"))
        if p_active != s["active"]:
            rows.add(("product", key, "field_mismatch", "active"))
        if _norm(p["tax_code"], True) != _norm(s["tax_code"], True):
            rows.add(("product", key, "field_mismatch", "tax_code"))
        im = {k: v for k, v in (p["metadata"] or {}).items() if k != "internal_id"}
        sm = {k: v for k, v in s["metadata"].items() if k != "internal_id"}
        for mk in set(im) | set(sm):
            if im.get(mk) != sm.get(mk):
                rows.add(("product", key, "field_mismatch", f"metadata.{mk}"))

    prices = {p["price_id"]: p for p in d["prices"]}
    s_by_key: dict[str | None, list[dict]] = {}
    for s in d["s_prices"]:
        s_by_key.setdefault(s["lookup_key"], []).append(s)
    for key in set(prices) | set(s_by_key):
        recs = s_by_key.get(key, [])
        if key not in prices:
            rows |= {("price", key, "missing_in_internal", None) for s in recs if s["active"]}
            continue
        p = prices[key]
        p_active = p["active"] is None or p["active"]
        if not recs:
            if p_active:
                rows.add(("price", key, "missing_in_stripe", None))
            continue
        s = _primary(recs)
        if not p_active and not s["active"]:
            continue
        recurring = s["recurring"] or {}
        if _minor(p["amount"], p["currency"]) != s["unit_amount"]:
            rows.add(("price", key, "field_mismatch", "amount"))
        if p["currency"].strip().lower() != s["currency"]:
            rows.add(("price", key, "field_mismatch", "currency"))
        if p["interval"] != recurring.get("interval") or p["interval_count"] != recurring.get("interval_count"):
            rows.add(("price", key, "field_mismatch", "interval"))
        if p_active != s["active"]:
            rows.add(("price", key, "field_mismatch", "active"))
        if _norm(p["nickname"], True) != _norm(s["nickname"], True):
            rows.add(("price", key, "field_mismatch", "nickname"))
        if key_of_stripe_product.get(s["product"]) != p["product_id"]:
            rows.add(("price", key, "price_product_mismatch", "product"))
    return rows


# -- tests ---------------------------------------------------------------------------------------

def test_truth_equals_independent_rederivation(data):
    truth = data["truth"]
    assert len(truth) == len(set(truth)), "truth rows must be unique"
    assert set(truth) == _expected_truth(data)


def test_every_kind_in_truth_and_exact_product_counts(data, gen):
    _, summary = gen
    truth = data["truth"]
    assert {(e, k, a) for e, _, k, a in truth} == ALL_TRUTH_KINDS
    per = {}
    for e, _, k, a in truth:
        per[(e, k, a)] = per.get((e, k, a), 0) + 1
    for attr in ("name", "description", "active", "tax_code"):
        assert per[("product", "field_mismatch", attr)] == PER_KIND
    assert per[("product", "field_mismatch", "metadata.color")] + per[
        ("product", "field_mismatch", "metadata.legacy_sku")] == PER_KIND
    assert per[("product", "missing_in_stripe", None)] == PER_KIND
    assert per[("product", "duplicate_in_stripe", None)] == PER_KIND
    assert per[("product", "missing_in_internal", None)] == PER_KIND
    assert per[("price", "missing_in_internal", None)] == 2 * PER_KIND
    # The summary's truth counts are what the file holds.
    labels = {".".join(x for x in t if x): n for t, n in per.items()}
    assert summary["truth"] == labels


def test_cascade_missing_product_makes_its_active_prices_missing(data):
    truth = set(data["truth"])
    missing = {k for e, k, kind, _ in truth if e == "product" and kind == "missing_in_stripe"}
    assert len(missing) == PER_KIND
    for p in data["prices"]:
        if p["product_id"] in missing:
            assert p["active"] is True
            assert ("price", p["price_id"], "missing_in_stripe", None) in truth
    stripe_keys = {s["lookup_key"] for s in data["s_prices"]}
    assert not {p["price_id"] for p in data["prices"] if p["product_id"] in missing} & stripe_keys


def test_counts_match_files(gen, data):
    out, summary = gen
    files = summary["files"]
    assert files["internal/products.parquet"] == len(data["products"]) == N
    assert files["internal/products.csv"] == len(_csv(out / "internal/products.csv")) == N
    assert files["internal/prices.parquet"] == len(data["prices"]) == len(_csv(out / "internal/prices.csv"))
    assert files["internal/prices.csv"] == len(data["prices"])
    assert files["stripe/products"] == len(data["s_products"])
    assert files["stripe/prices"] == len(data["s_prices"])
    assert files["truth.jsonl"] == len(data["truth"])
    # 2 kinds absent from Stripe, duplicates add one copy each, orphans: as many active as archived.
    assert len(data["s_products"]) == N - 2 * PER_KIND + PER_KIND + 2 * PER_KIND
    per_product: dict[str, int] = {}
    for p in data["prices"]:
        per_product[p["product_id"]] = per_product.get(p["product_id"], 0) + 1
    assert len(per_product) == N and set(per_product.values()) == {1, 2, 3}


def test_stripe_json_shape(gen):
    out, _ = gen
    for line in _lines(out / "stripe/products"):
        o = json.loads(line)
        assert set(o) == PRODUCT_KEYS, line
        assert o["object"] == "product" and o["id"].startswith("prod_") and o["livemode"] is False
        assert isinstance(o["active"], bool) and isinstance(o["created"], int) and isinstance(o["updated"], int)
        assert o["updated"] >= o["created"] > 1_500_000_000
        assert isinstance(o["metadata"], dict) and all(isinstance(v, str) for v in o["metadata"].values())
        assert o["metadata"]["internal_id"].startswith("P")
        assert o["images"] == [] and o["marketing_features"] == [] and o["url"] is None
        assert o["default_price"] is None or o["default_price"].startswith("price_")
    for line in _lines(out / "stripe/prices"):
        o = json.loads(line)
        assert set(o) == PRICE_KEYS, line
        assert o["object"] == "price" and o["id"].startswith("price_") and o["product"].startswith("prod_")
        assert o["currency"] == o["currency"].lower() and o["currency"] in EXPONENT
        assert isinstance(o["unit_amount"], int) and o["unit_amount_decimal"] == str(o["unit_amount"])
        assert o["billing_scheme"] == "per_unit" and o["tax_behavior"] == "unspecified"
        assert o["metadata"] == {} and isinstance(o["lookup_key"], str)
        if o["type"] == "one_time":
            assert o["recurring"] is None
        else:
            assert o["type"] == "recurring"
            assert o["recurring"]["interval"] in {"month", "year"} and o["recurring"]["usage_type"] == "licensed"
            assert isinstance(o["recurring"]["interval_count"], int)


def test_valid_input_nothing_to_quarantine(data):
    products, prices = data["products"], data["prices"]
    assert len({p["product_id"] for p in products}) == len(products)
    assert all(p["product_id"] for p in products)
    assert len({p["price_id"] for p in prices}) == len(prices)
    product_ids = {p["product_id"] for p in products}
    for p in prices:
        assert p["product_id"] in product_ids
        cur = p["currency"].lower()
        assert cur in EXPONENT
        minor = _minor(p["amount"], cur)  # exact in minor units or it raises
        if cur == "kwd":
            assert minor % 10 == 0
        assert (p["interval"] is None) == (p["interval_count"] is None)
    for side in ("s_products", "s_prices"):
        ids = [o["id"] for o in data[side]]
        assert len(set(ids)) == len(ids)
    lookup_keys = [o["lookup_key"] for o in data["s_prices"]]
    assert len(set(lookup_keys)) == len(lookup_keys)  # unique per account in Stripe


def test_traps_present_and_not_in_truth(data, gen):
    out, summary = gen
    truth_keys = {(e, k) for e, k, _, _ in data["truth"]}
    internal = {p["product_id"]: p for p in data["products"]}
    stripe = {s["metadata"]["internal_id"]: s for s in data["s_products"]}
    clean = [k for k in internal if ("product", k) not in truth_keys]

    nfd = [k for k in clean if k in stripe and "e\u0301" in internal[k]["name"]]
    assert nfd and all("\u00e9" in stripe[k]["name"] and internal[k]["name"] != stripe[k]["name"] for k in nfd)
    padded = [k for k in clean if k in stripe and internal[k]["name"] != internal[k]["name"].strip()]
    assert padded and any("\u2003" in internal[k]["name"] for k in padded)
    assert all(internal[k]["name"].strip() == stripe[k]["name"] for k in padded)
    assert any(internal[k]["description"] is None and stripe.get(k, {}).get("description") == "" for k in clean)
    assert any(internal[k]["description"] == "" and k in stripe and stripe[k]["description"] is None for k in clean)
    both_off = [k for k in clean if k in stripe and not stripe[k]["active"]
                and (internal[k]["deleted_at"] is not None or not internal[k]["active"])]
    assert both_off and all(internal[k]["name"] != stripe[k]["name"] for k in both_off)
    assert any(internal[k]["deleted_at"] is not None for k in both_off)
    assert any(internal[k]["active"] is False and internal[k]["deleted_at"] is None for k in both_off)
    absent = [k for k in clean if k not in stripe and (internal[k]["deleted_at"] is not None or not internal[k]["active"])]
    assert len(absent) == PER_KIND
    # Metadata key order differs (the CSV JSON and the Stripe object keep their order).
    csv_meta = {r["product_id"]: list(json.loads(r["metadata"])) for r in _csv(out / "internal/products.csv")}
    k0 = next(k for k in clean if k in stripe and stripe[k]["active"])
    assert csv_meta[k0] == ["color", "tier"] and [k for k in stripe[k0]["metadata"] if k != "internal_id"] == ["tier", "color"]
    # Archived orphans in Stripe: not reported.
    archived_orphans = [s for s in data["s_products"] if s["metadata"]["internal_id"] not in internal and not s["active"]]
    assert len(archived_orphans) == PER_KIND
    assert not {("product", s["metadata"]["internal_id"]) for s in archived_orphans} & truth_keys

    prices = {p["price_id"]: p for p in data["prices"]}
    s_prices = {s["lookup_key"]: s for s in data["s_prices"]}
    clean_prices = [k for k in prices if ("price", k) not in truth_keys]
    assert {prices[k]["currency"] for k in prices} >= {"USD", "JPY", "KWD"}
    assert all(prices[k]["currency"].isupper() for k in prices)
    kwd = [k for k in clean_prices if prices[k]["currency"] == "KWD" and k in s_prices]
    assert kwd and all(s_prices[k]["unit_amount"] == _minor(prices[k]["amount"], "KWD") for k in kwd)
    archived = [k for k in clean_prices if k in s_prices and not prices[k]["active"] and not s_prices[k]["active"]]
    assert archived and all(s_prices[k]["nickname"] != prices[k]["nickname"] for k in archived)
    assert any(not prices[k]["active"] and k not in s_prices for k in clean_prices)
    ws = [k for k in clean_prices if prices[k]["nickname"] and prices[k]["nickname"] != prices[k]["nickname"].strip()]
    assert ws and all(s_prices[k]["nickname"] == prices[k]["nickname"].strip() for k in ws)
    for name in ("product.trap_unicode", "product.trap_whitespace", "product.trap_null_empty",
                 "product.trap_inactive_both", "product.trap_inactive_absent", "product.trap_inactive_orphan"):
        assert summary["traps"][name] == PER_KIND
    assert summary["traps"]["price.trap_archived_both"] == len(archived)


def test_csv_holds_the_parquet_rows(gen, data):
    out, _ = gen
    rows = {r["product_id"]: r for r in _csv(out / "internal/products.csv")}
    for p in data["products"]:
        r = rows[p["product_id"]]
        assert r["name"] == p["name"]  # whitespace traps survive the CSV writer
        assert json.loads(r["metadata"]) == p["metadata"]
        assert r["updated_at"] == p["updated_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
        assert r["active"] == str(p["active"]).lower()
    price_rows = {r["price_id"]: r for r in _csv(out / "internal/prices.csv")}
    for p in data["prices"]:
        r = price_rows[p["price_id"]]
        assert Decimal(r["amount"]) == p["amount"] and r["currency"] == p["currency"]
        decimals = len(r["amount"].partition(".")[2])
        assert decimals == EXPONENT[p["currency"].lower()]


def test_determinism_same_seed_same_files_other_seed_differs(spark, gen, tmp_path):
    out, summary = gen
    again = tmp_path / "again"
    other = tmp_path / "other"
    s2 = generate(spark, str(again), products=N, seed=42, rate=RATE)
    generate(spark, str(other), products=N, seed=7, rate=RATE)
    assert s2["files"] == summary["files"] and s2["truth"] == summary["truth"]
    for sub in ("stripe/products", "stripe/prices", "truth.jsonl"):
        assert _lines(out / sub) == _lines(again / sub), sub
        assert _lines(out / sub) != _lines(other / sub), sub
    for sub in ("internal/products.csv", "internal/prices.csv"):
        assert _csv(out / sub) == _csv(again / sub), sub
        assert _csv(out / sub) != _csv(other / sub), sub
    assert _parquet(spark, out / "internal/prices.parquet") == _parquet(spark, again / "internal/prices.parquet")
    # The other catalog's truth holds too (another permutation and other hashed price kinds).
    other_data = {
        "products": _parquet(spark, other / "internal/products.parquet"),
        "prices": _parquet(spark, other / "internal/prices.parquet"),
        "s_products": _jsonl(other / "stripe/products"),
        "s_prices": _jsonl(other / "stripe/prices"),
    }
    other_truth = _truth(other)
    assert set(other_truth) == _expected_truth(other_data) and len(other_truth) == len(set(other_truth))


@pytest.mark.parametrize("kwargs", [{"products": 0}, {"products": 10, "rate": 0.5}, {"products": 10, "rate": -0.1}])
def test_bad_arguments_say_what_to_do(spark, tmp_path, kwargs):
    with pytest.raises(ConfigError, match="generate: --(products|rate)"):
        generate(spark, str(tmp_path / "x"), **kwargs)
    assert not (tmp_path / "x").exists()
