"""Expectation suites as data (conf/expectations/*.json) and their row rules as Spark SQL.

A suite is GX 1.x ExpectationSuite JSON: ``{"name", "meta", "expectations": [{"type", "kwargs",
"meta": {"severity": "error"|"warn", "rule": "<row-rule name>"}}]}``.

Row-level vs table-level is decided by the expectation's ``meta.rule``:

* with ``meta.rule`` the expectation is a **row rule**: it is compiled here to a Spark SQL predicate
  (TRUE when a row breaks it) and evaluated for every row in one projection
  (:mod:`stripe_recon.quarantine`); rows breaking an ``error`` rule are quarantined with the rule's
  name as a reason. GX then validates the remaining rows, where the rule holds by construction (GX
  re-checks it with its own semantics, so a compiler mistake shows up as a failed gate);
* without ``meta.rule`` the expectation is **table-level** (column types, row-count band, uniqueness of
  Stripe ids, warn-only checks): GX alone evaluates it and its failure decides the gate.

The suite's ``meta.row_failures`` says what quarantined rows mean for the gate: ``quarantine`` (the
gate passes on the remaining rows; internal inputs) or ``hold`` (any rejected row holds the gate;
Stripe inputs and the plan, where dropping a row would make detect or push do the wrong thing).

Values known only at run time are GX suite parameters (``{"$PARAMETER": "iso_currencies"}``) and SQL
macros in ``unexpected_rows_query`` (``${exponent:currency}``, ``${minor_units:amount:currency}``,
``${touches_stripe_owned:entity:payload}``, ``${sets_replaced_price_param:payload}``), expanded by
:func:`load_suite` from code and config (catalog.py says which price parameters need a replace_price).

Stripe's limits (stripe_limits.py) reach the suites the same way: the parameter
``stripe_limit_<key>`` and the macro ``${stripe_limit:<key>}`` hold the number, and a rule checking
one says so in ``meta.stripe_limit: <key>``: :func:`load_suite` then requires the expectation to use
that limit and appends it to the rule's name, the quarantine reason (``name_too_long: Stripe accepts
at most 250 characters in a product name``). ``${metadata_keys_sent:metadata}`` counts the metadata
keys a product create sends and ``${product_key_in_metadata}`` is TRUE when the product id is sent as
``metadata.internal_id`` (both follow plan.py and the ``mapping`` / ``metadata`` config).

Example::

    suite = load_suite("internal_prices", cfg)
    rules = row_rules(suite, parameters(cfg))     # [Rule("null_key", "price_id IS NULL"), ...]
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from . import catalog, currencies, stripe_limits
from .config import Config, expectations_dir
from .errors import ConfigError
from .quarantine import Rule

SEVERITIES = ("error", "warn")
ROW_FAILURE_POLICIES = ("quarantine", "hold")
QUERY_PREFIX = "SELECT * FROM {batch} WHERE "
# Schema expectations: checked on the raw frame before any row rule is compiled against it.
SCHEMA_TYPES = ("expect_column_to_exist", "expect_column_values_to_be_of_type")
ROW_RULE_TYPES = (
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_not_be_in_set",
    "expect_column_values_to_be_between",
    "expect_column_value_lengths_to_be_between",
    "expect_column_values_to_match_regex",
    "expect_column_values_to_not_match_regex",
    "expect_column_values_to_be_unique",
)
_MACRO = re.compile(r"\$\{([a-z_]+)((?::[A-Za-z_][A-Za-z0-9_]*)*)\}")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def suite_path(name: str, directory: Path | None = None) -> Path:
    return (directory or expectations_dir()) / f"{name}.json"


def load_suite(name: str, cfg: Config, directory: Path | None = None) -> dict[str, Any]:
    """Read conf/expectations/{name}.json, check its shape and expand the SQL macros."""
    path = suite_path(name, directory)
    try:
        suite = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"expectation suite {name!r} not found at {path}: restore conf/expectations/") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"expectation suite {path} is not valid JSON: {exc}") from None
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise ConfigError(f"expectation suite {path} must be an object with an 'expectations' list")
    meta = suite.setdefault("meta", {})
    if meta.get("row_failures", "quarantine") not in ROW_FAILURE_POLICIES:
        raise ConfigError(f"{path}: meta.row_failures must be one of {ROW_FAILURE_POLICIES}")
    seen_rules: set[str] = set()
    for i, exp in enumerate(suite["expectations"]):
        if not isinstance(exp, dict) or "type" not in exp:
            raise ConfigError(f"{path}: expectation #{i} needs a 'type' (GX 1.x suites use 'type', not 'expectation_type')")
        exp.setdefault("kwargs", {})
        emeta = exp.setdefault("meta", {})
        emeta.setdefault("severity", "error")
        if emeta["severity"] not in SEVERITIES:
            raise ConfigError(f"{path}: expectation #{i} ({exp['type']}) meta.severity must be one of {SEVERITIES}")
        if emeta.get("stripe_limit") is not None:
            _apply_stripe_limit(exp, where=f"{path} #{i}")
        rule = emeta.get("rule")
        if rule in seen_rules:
            raise ConfigError(f"{path}: row rule name {rule!r} is used twice; each row rule needs its own name")
        if rule:
            seen_rules.add(rule)
        query = exp["kwargs"].get("unexpected_rows_query")
        if isinstance(query, str):
            exp["kwargs"]["unexpected_rows_query"] = expand_macros(query, cfg, where=f"{path} #{i}")
    return suite


def _apply_stripe_limit(exp: dict[str, Any], where: str) -> None:
    """An expectation checking a Stripe limit (``meta.stripe_limit``, a key of stripe_limits.LIMITS):
    it must use that limit's number (suite parameter or macro), and its rule's quarantine reason gets
    the limit appended (``name_too_long: Stripe accepts at most 250 characters in a product name``)."""
    key, emeta = exp["meta"]["stripe_limit"], exp["meta"]
    lim = stripe_limits.LIMITS.get(key) if isinstance(key, str) else None
    if lim is None:
        raise ConfigError(f"{where}: meta.stripe_limit {key!r} is not a Stripe limit; known: "
                          f"{', '.join(stripe_limits.LIMITS)} (stripe_recon/stripe_limits.py)")
    text = json.dumps(exp["kwargs"])
    if f'"{lim.parameter}"' not in text and f"${{stripe_limit:{key}}}" not in text:
        raise ConfigError(f"{where}: an expectation with meta.stripe_limit {key!r} must use that limit: "
                          f'{{"$PARAMETER": "{lim.parameter}"}} or ${{stripe_limit:{key}}}')
    if not emeta.get("rule"):
        raise ConfigError(f"{where}: meta.stripe_limit {key!r} needs meta.rule (a Stripe limit is a row rule)")
    if not emeta["rule"].endswith(": " + lim.reason):
        emeta["rule"] = f"{emeta['rule']}: {lim.reason}"


def expand_macros(sql: str, cfg: Config, where: str = "suite") -> str:
    """Replace ``${name:arg:...}`` with the SQL the macro stands for."""

    def repl(m: re.Match[str]) -> str:
        name, args = m.group(1), [a for a in m.group(2).split(":") if a]
        fn = MACROS.get(name)
        if fn is None:
            raise ConfigError(f"{where}: unknown macro ${{{name}}}; known: {', '.join(sorted(MACROS))}")
        try:
            return "(" + fn(cfg, *args) + ")"
        except TypeError:
            raise ConfigError(f"{where}: macro ${{{name}}} got the wrong number of arguments {args}") from None

    out = _MACRO.sub(repl, sql)
    if "${" in out:
        raise ConfigError(f"{where}: malformed macro in {sql!r} (write ${{name:column}})")
    return out


def _exponent(cfg: Config, currency_col: str) -> str:
    return currencies.exponent_expr(currency_col)


def _minor_units(cfg: Config, amount_col: str, currency_col: str) -> str:
    # Decimal arithmetic (pow() alone is a double and would hide sub-minor digits).
    return f"{amount_col} * CAST(pow(10, {currencies.exponent_expr(currency_col)}) AS DECIMAL(4, 0))"


def _touches_stripe_owned(cfg: Config, entity_col: str, payload_col: str) -> str:
    """TRUE when a correction's payload writes an attribute or metadata key owned by Stripe."""
    keys = f"coalesce(json_object_keys({payload_col}), array())"
    parts: list[str] = []
    for entity, attrs in (("product", cfg.attributes.product), ("price", cfg.attributes.price)):
        checks = []
        for attr in attrs.values():
            if attr.owner != "stripe":
                continue
            param = catalog.param_of(entity, attr.stripe)
            if attr.compare == "map" or attr.stripe == "metadata":
                checks.append(f"array_contains({keys}, 'metadata')")
            elif attr.stripe.startswith("metadata."):  # one metadata key mapped to its own attribute
                key = _lit(attr.stripe.removeprefix("metadata."))
                checks.append(f"array_contains({_json_keys(payload_col, 'metadata')}, {key})")
            elif param is not None and param.name != attr.stripe:  # sent inside its parameter: recurring.interval
                checks.append(f"array_contains({_json_keys(payload_col, param.name)}, {_lit(attr.stripe)})")
            else:
                checks.append(f"array_contains({keys}, {_lit(attr.stripe)})")
        if checks:
            parts.append(f"({entity_col} = {_lit(entity)} AND ({' OR '.join(checks)}))")
    owned = [k for k, owner in cfg.metadata.owners.items() if owner == "stripe"]
    if owned:
        mkeys = _json_keys(payload_col, "metadata")
        tests = [f"k LIKE {_lit(_like_prefix(k[:-1]))}" if k.endswith("*") else f"k = {_lit(k)}" for k in owned]
        parts.append(f"exists({mkeys}, k -> {' OR '.join(tests)})")
    return " OR ".join(parts) if parts else "false"


def _json_keys(payload_col: str, field: str) -> str:
    """The keys of the JSON object ``payload.<field>`` (an empty array when there is none)."""
    return f"coalesce(json_object_keys(get_json_object({payload_col}, '$.{field}')), array())"


def _sets_replaced_price_param(cfg: Config, payload_col: str) -> str:
    """TRUE when a payload sets a price parameter Stripe cannot update (catalog.py: replace_price)."""
    fixed = ", ".join(_lit(n) for n in sorted(catalog.names("price", change="replace")))
    return f"arrays_overlap(coalesce(json_object_keys({payload_col}), array()), array({fixed}))"


def _stripe_limit(cfg: Config, key: str) -> str:
    """The number of a Stripe limit (stripe_recon/stripe_limits.py)."""
    if key not in stripe_limits.LIMITS:
        raise ConfigError(f"unknown Stripe limit {key!r} in ${{stripe_limit:...}}; known: {', '.join(stripe_limits.LIMITS)}")
    return str(stripe_limits.limit(key))


def _product_key_in_metadata(cfg: Config) -> str:
    """TRUE when a product create sends the internal product_id as ``metadata.internal_id``."""
    return "true" if cfg.mapping.product_key == "metadata.internal_id" else "false"


def _metadata_keys_sent(cfg: Config, metadata_col: str) -> str:
    """How many metadata keys a product create sends (plan.py): the keys with a value, except
    ``metadata.excluded_keys``, plus ``internal_id`` when the product key lives there."""
    excluded = ", ".join(_lit(k) for k in cfg.metadata.excluded_keys) or "''"
    col = _col(metadata_col, "${metadata_keys_sent}")
    in_metadata = cfg.mapping.product_key == "metadata.internal_id"
    sent = f"v IS NOT NULL AND NOT array_contains(array({excluded}), k)"
    if in_metadata:
        sent += f" AND k != {_lit('internal_id')}"
    count = f"size(map_filter(coalesce({col}, map()), (k, v) -> {sent}))"
    return f"{count} + 1" if in_metadata else count


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching strings that start with ``prefix`` (its % and _ taken literally)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


MACROS = {
    "exponent": _exponent,
    "minor_units": _minor_units,
    "touches_stripe_owned": _touches_stripe_owned,
    "sets_replaced_price_param": _sets_replaced_price_param,
    "stripe_limit": _stripe_limit,
    "product_key_in_metadata": _product_key_in_metadata,
    "metadata_keys_sent": _metadata_keys_sent,
}


def parameters(cfg: Config) -> dict[str, Any]:
    """Suite parameters every suite may use (``{"$PARAMETER": name}``); row-count ones are added per table."""
    return {"iso_currencies": sorted(currencies.EXPONENTS), **stripe_limits.parameters()}


def _lit(value: Any) -> str:
    """A Spark SQL literal for a JSON scalar."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return f"{value}"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def _col(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ConfigError(f"{where}: column {name!r} must be a plain column name")
    return f"`{name}`"


def _resolve(value: Any, params: dict[str, Any], where: str) -> Any:
    if isinstance(value, dict) and "$PARAMETER" in value:
        name = value["$PARAMETER"]
        if name not in params:
            raise ConfigError(f"{where}: suite parameter {name!r} has no value; known: {', '.join(sorted(params))}")
        return params[name]
    return value


def compile_rule(exp: dict[str, Any], params: dict[str, Any], where: str = "suite") -> Rule:
    """The Spark SQL predicate (TRUE = row breaks it) equivalent to one GX expectation.

    Null handling follows GX: column-map expectations other than not_be_null ignore nulls.
    """
    etype, kw = exp["type"], exp["kwargs"]
    name, severity = exp["meta"]["rule"], exp["meta"]["severity"]
    if kw.get("mostly") not in (None, 1, 1.0):
        raise ConfigError(f"{where}: row rule {name!r} cannot use 'mostly' (a row either passes or not)")
    if etype == "unexpected_rows_expectation":
        query = kw.get("unexpected_rows_query", "")
        if not isinstance(query, str) or not query.startswith(QUERY_PREFIX):
            raise ConfigError(f"{where}: row rule {name!r} query must start with {QUERY_PREFIX!r}")
        return Rule(name, f"({query[len(QUERY_PREFIX):]})", severity)
    if etype not in ROW_RULE_TYPES:
        raise ConfigError(
            f"{where}: expectation {etype} cannot be a row rule ({name!r}); remove meta.rule to make it "
            "table-level, or write it as an unexpected_rows_expectation"
        )
    col = _col(kw.get("column"), where)
    if etype == "expect_column_values_to_not_be_null":
        return Rule(name, f"{col} IS NULL", severity)
    if etype in ("expect_column_values_to_be_in_set", "expect_column_values_to_not_be_in_set"):
        values = _resolve(kw.get("value_set"), params, where)
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"{where}: row rule {name!r} needs a non-empty value_set")
        in_list = f"{col} IN ({', '.join(_lit(v) for v in values)})"
        broken = f"NOT ({in_list})" if etype.endswith("_be_in_set") else in_list
        return Rule(name, f"{col} IS NOT NULL AND {broken}", severity)
    if etype in ("expect_column_values_to_be_between", "expect_column_value_lengths_to_be_between"):
        target = col if etype == "expect_column_values_to_be_between" else f"length({col})"
        lo, hi = _resolve(kw.get("min_value"), params, where), _resolve(kw.get("max_value"), params, where)
        conds = []
        if lo is not None:
            conds.append(f"{target} {'<=' if kw.get('strict_min') else '<'} {_lit(lo)}")
        if hi is not None:
            conds.append(f"{target} {'>=' if kw.get('strict_max') else '>'} {_lit(hi)}")
        if not conds:
            raise ConfigError(f"{where}: row rule {name!r} needs min_value or max_value")
        return Rule(name, " OR ".join(conds), severity)
    if etype in ("expect_column_values_to_match_regex", "expect_column_values_to_not_match_regex"):
        regex = _lit(_resolve(kw.get("regex"), params, where))
        broken = f"NOT ({col} RLIKE {regex})" if "_to_match_" in etype else f"{col} RLIKE {regex}"
        return Rule(name, f"{col} IS NOT NULL AND {broken}", severity)
    # expect_column_values_to_be_unique: every row of a repeated value breaks it, unless the table's
    # writer guarantees the column unique (validate marks the expectation ``vouched_by``; see there)
    if exp["meta"].get("vouched_by"):
        return Rule(name, "false", severity)
    return Rule(name, f"{col} IS NOT NULL AND count(1) OVER (PARTITION BY {col}) > 1", severity)


def row_rules(suite: dict[str, Any], params: dict[str, Any]) -> list[Rule]:
    """All row rules of a suite, in suite order."""
    out = []
    for i, exp in enumerate(suite["expectations"]):
        if exp["meta"].get("rule"):
            out.append(compile_rule(exp, params, where=f"suite {suite['name']} #{i}"))
    return out


def landing_row_rules(suite: dict[str, Any], key: str, cfg: Config) -> list[Rule]:
    """The suite's error row rules as land evaluates them on every record it lands: all of them but
    the uniqueness of the key, which land guarantees itself (repeated keys rejected, or one version
    per Stripe id kept). A uniqueness rule on another column is a ConfigError (make it table-level)."""
    keep = [e for e in suite["expectations"]
            if e["meta"].get("rule") and e["meta"]["severity"] == "error"
            and not (e["type"] == "expect_column_values_to_be_unique" and e["kwargs"].get("column") == key)]
    unique = [e["kwargs"]["column"] for e in keep if e["type"] == "expect_column_values_to_be_unique"]
    if unique:
        raise ConfigError(f"suite {suite['name']}: uniqueness row rules on columns other than the key "
                          f"({', '.join(unique)}) cannot be evaluated per record at landing; make them table-level "
                          "(remove meta.rule)")
    return row_rules({**suite, "expectations": keep}, parameters(cfg))


def landing_rules_spec(suite: dict[str, Any], key: str, cfg: Config) -> str:
    """Id of the row rules land evaluates for a suite (the input gate vouches only for the same id)."""
    rules = [(r.name, r.fails, r.severity) for r in landing_row_rules(suite, key, cfg)]
    return hashlib.sha256(json.dumps([suite["name"], key, rules]).encode()).hexdigest()[:24]


def schema_problems(suite: dict[str, Any], schema) -> list[str]:
    """Required columns missing or of the wrong Spark type (checked before row rules can run)."""
    fields = {f.name: type(f.dataType).__name__ for f in schema.fields}
    problems = []
    for exp in suite["expectations"]:
        if exp["type"] not in SCHEMA_TYPES:
            continue
        col = exp["kwargs"].get("column")
        if col not in fields:
            problems.append(f"column {col} is missing")
        elif exp["type"] == "expect_column_values_to_be_of_type" and fields[col] != exp["kwargs"].get("type_"):
            problems.append(f"column {col} is {fields[col]}, expected {exp['kwargs'].get('type_')}")
    return problems


def schema_only(suite: dict[str, Any]) -> dict[str, Any]:
    """The suite reduced to its schema expectations (used when the schema itself is broken)."""
    out = copy.deepcopy(suite)
    out["expectations"] = [e for e in out["expectations"] if e["type"] in SCHEMA_TYPES]
    return out
