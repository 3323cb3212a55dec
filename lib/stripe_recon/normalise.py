"""Normalisers and comparators as Spark Column expressions (no Python UDFs).

Every attribute compared by detect goes through :func:`compared_value`: the configured normalisers
(``trim``, ``nfc``, ``lower``, ``collapse_spaces``, applied in order), then null-equals-empty, then the
comparator's canonical form (``case_insensitive`` lower-cases, ``set`` sorts the distinct elements).
Two sides are then equal when their canonical values are null-safe equal (``numeric`` with a tolerance
compares ``abs(a - b) <= tolerance`` instead). The ``py_*`` functions are the plain-Python reference
the property tests check the Spark expressions against.

NFC: Spark 4 ships icu4j, so ``reflect('com.ibm.icu.text.Normalizer', 'compose', s, false)`` gives exact
NFC. Spark 3.5 (the Glue lane) may lack it: :func:`icu_available` checks once, on the driver, whether the
class loads; without it :func:`nfc` falls back to an approximation that composes a Latin letter followed
by one common combining mark (grave, acute, circumflex, tilde, macron, breve, dot above, diaeresis, ring,
double acute, caron, cedilla, ogonek). Other decomposed sequences stay as they are on that lane.

Example::

    icu = icu_available(spark)
    df.select(normalise(F.col("name"), ["trim", "nfc"], icu=icu, null_equals_empty=True))
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .config import Attribute
from .errors import ConfigError

# Characters Python's str.strip()/str.split() treat as whitespace (Unicode White_Space plus the ASCII
# information separators); the Spark expressions use exactly this set so both agree.
WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_WS_CLASS = "[" + WHITESPACE.replace("\\", "\\\\") + "]"
_TRIM_RE = f"^{_WS_CLASS}+|{_WS_CLASS}+$"
_RUN_RE = f"{_WS_CLASS}+"

ICU_CLASS = "com.ibm.icu.text.Normalizer"
_COMBINING_MARKS = "\u0300\u0301\u0302\u0303\u0304\u0306\u0307\u0308\u030a\u030b\u030c\u0327\u0328"
_ICU_CACHE: dict[int, bool] = {}


def _fallback_pairs() -> list[tuple[str, str]]:
    """(decomposed, composed) pairs: Latin letter + one combining mark that NFC turns into one char."""
    pairs = []
    for base in "ABCDEGHIJKLNORSTUWXYZabcdeghijklnorstuwxyz":
        for mark in _COMBINING_MARKS:
            composed = unicodedata.normalize("NFC", base + mark)
            if len(composed) == 1:
                pairs.append((base + mark, composed))
    return pairs


FALLBACK_PAIRS = _fallback_pairs()


def icu_available(spark: SparkSession) -> bool:
    """True when the JVM can load icu4j's Normalizer (Spark 4); checked once per JVM, on the driver."""
    key = id(spark.sparkContext)
    if key not in _ICU_CACHE:
        try:
            jvm = spark.sparkContext._jvm
            loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
            jvm.java.lang.Class.forName(ICU_CLASS, False, loader)
            _ICU_CACHE[key] = True
        except Exception:  # py4j wraps ClassNotFoundException; any failure means: not usable
            _ICU_CACHE[key] = False
    return _ICU_CACHE[key]


def trim(c: Column) -> Column:
    """Strip Unicode whitespace (the :data:`WHITESPACE` set) at both ends. The regex runs only when the
    first or last character is whitespace (a hash-set lookup), so clean values cost almost nothing."""
    ws = list(WHITESPACE)
    padded = F.substring(c, 1, 1).isin(ws) | F.substring(c, -1, 1).isin(ws)
    return F.when(padded, F.regexp_replace(c, _TRIM_RE, "")).otherwise(c)


def collapse_spaces(c: Column) -> Column:
    """Every run of whitespace becomes one ASCII space."""
    return F.regexp_replace(c, _RUN_RE, " ")


def nfc(c: Column, icu: bool = True) -> Column:
    """Unicode NFC. ASCII-only strings are already NFC, so the (costly) call is skipped for them."""
    ascii_only = F.length(c) == F.octet_length(c)
    if icu:
        composed = F.reflect(F.lit(ICU_CLASS), F.lit("compose"), c, F.lit(False))
    else:
        composed = c
        for decomposed, single in FALLBACK_PAIRS:
            composed = F.replace(composed, F.lit(decomposed), F.lit(single))
    return F.when(c.isNull() | ascii_only, c).otherwise(composed)


def lower(c: Column) -> Column:
    return F.lower(c)


_STEPS = {"trim": trim, "collapse_spaces": collapse_spaces, "lower": lower}


def normalise(c: Column, steps: Sequence[str], icu: bool = True, null_equals_empty: bool = False) -> Column:
    """Apply normalisers in order to a string column; then "" becomes null if ``null_equals_empty``."""
    for step in steps:
        if step == "nfc":
            c = nfc(c, icu)
        elif step in _STEPS:
            c = _STEPS[step](c)
        else:
            raise ConfigError(f"unknown normaliser {step!r}; allowed: trim, nfc, lower, collapse_spaces")
    if null_equals_empty:
        c = F.nullif(c, F.lit(""))
    return c


def compared_value(c: Column, attr: Attribute, dtype: T.DataType, icu: bool, name: str = "?") -> Column:
    """The canonical value of one side of a scalar attribute: what is compared and what is reported."""
    is_string = isinstance(dtype, T.StringType)
    if (attr.normalise or attr.null_equals_empty) and not is_string and attr.compare != "set":
        raise ConfigError(
            f"attributes.*.{name}: normalise/null_equals_empty need a string column, got {dtype.simpleString()}; "
            "remove them or point the attribute at a string column"
        )
    if attr.compare == "set":
        if isinstance(dtype, T.ArrayType):
            elems = F.transform(c, lambda x: normalise(x.cast("string"), attr.normalise, icu))
        elif is_string:
            elems = F.transform(F.split(c, ","), lambda x: normalise(x, attr.normalise, icu))
        else:
            raise ConfigError(f"attributes.*.{name}: compare 'set' needs an array or comma-separated string column")
        elems = F.array_sort(F.array_distinct(F.filter(elems, lambda x: x.isNotNull() & (x != ""))))
        joined = F.array_join(elems, ",")
        return F.nullif(joined, F.lit("")) if attr.null_equals_empty else F.when(c.isNotNull(), joined)
    if attr.compare == "map":
        raise ConfigError(f"attributes.*.{name}: compare 'map' is for the metadata map column only")
    if is_string:
        c = normalise(c, attr.normalise, icu, attr.null_equals_empty)
        if attr.compare == "case_insensitive":
            c = F.lower(c)
    elif attr.compare == "case_insensitive":
        raise ConfigError(f"attributes.*.{name}: compare 'case_insensitive' needs a string column")
    if attr.compare == "numeric":
        return c.cast("decimal(38,9)") if is_string else c
    return c


def tolerant(attr: Attribute) -> bool:
    """A numeric comparison with a tolerance cannot be fingerprinted; detect compares it directly."""
    return attr.compare == "numeric" and attr.tolerance > 0


def differ(a: Column, b: Column, attr: Attribute) -> Column:
    """TRUE when two canonical values differ under the attribute's comparator (never null)."""
    if tolerant(attr):
        close = F.abs(a.cast("double") - b.cast("double")) <= F.lit(attr.tolerance)
        return ~(a.eqNullSafe(b) | F.coalesce(close, F.lit(False)))
    return ~a.eqNullSafe(b)


def as_text(c: Column) -> Column:
    """Reported form: strings as they are, numbers as digits, booleans 'true'/'false', null stays null."""
    return c.cast("string")


def map_normalise(m: Column, attr: Attribute, keep_key: Callable[[Column], Column], icu: bool) -> Column:
    """A metadata map with ignored/excluded keys removed and the attribute's normalisers on the values."""
    m = F.coalesce(m, F.create_map().cast("map<string,string>"))
    m = F.map_filter(m, lambda k, v: keep_key(k))
    if attr.normalise or attr.null_equals_empty:
        m = F.transform_values(m, lambda k, v: normalise(v, attr.normalise, icu, attr.null_equals_empty))
        m = F.map_filter(m, lambda k, v: v.isNotNull())
    return m


def fingerprint(values: Sequence[Column]) -> Column:
    """xxhash64 over the canonical values. Each value is preceded by its null flag: xxhash64 skips
    nulls, so without the flag (null, 'a') and ('a', null) would hash alike."""
    parts: list[Column] = []
    for v in values:
        parts += [v.isNull(), v]
    return F.xxhash64(*parts)


def map_fingerprint_input(m: Column) -> Column:
    """Maps cannot be hashed; their entries sorted by key can (key order becomes irrelevant)."""
    return F.array_sort(F.map_entries(m))


# -- plain-Python reference (for the property tests) -------------------------------------------

def py_normalise(s: str | None, steps: Sequence[str], null_equals_empty: bool = False) -> str | None:
    if s is None:
        return None
    for step in steps:
        if step == "trim":
            s = s.strip(WHITESPACE)
        elif step == "nfc":
            s = unicodedata.normalize("NFC", s)
        elif step == "lower":
            s = s.lower()
        elif step == "collapse_spaces":
            s = " ".join(_split_keep_edges(s))
    if null_equals_empty and s == "":
        return None
    return s


def _split_keep_edges(s: str) -> list[str]:
    """Split on whitespace runs but keep a leading/trailing empty part (a run at the edge -> one space)."""
    out, cur, in_ws = [], [], False
    for ch in s:
        if ch in WHITESPACE:
            if not in_ws:
                out.append("".join(cur))
                cur = []
            in_ws = True
        else:
            cur.append(ch)
            in_ws = False
    out.append("".join(cur))
    return out
