"""ISO 4217 currencies Stripe accepts, with their minor-unit exponents, as data and as Spark SQL.

Stripe amounts are integers in the currency's minor unit: JPY has exponent 0, USD 2, KWD 3
(and for three-decimal currencies Stripe requires the last digit to be 0).

Example::

    exponent_expr("currency")          # Spark SQL: CASE ... END, null for an unknown currency
    to_minor_units_expr("amount", "currency")
"""

from __future__ import annotations

ZERO_DECIMAL = ("bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf")
THREE_DECIMAL = ("bhd", "jod", "kwd", "omr", "tnd")
# Two-decimal currencies Stripe settles or presents (ISO 4217 codes; lower case as the API uses).
TWO_DECIMAL = (
    "aed", "afn", "all", "amd", "ang", "aoa", "ars", "aud", "awg", "azn", "bam", "bbd", "bdt", "bgn", "bmd", "bnd",
    "bob", "brl", "bsd", "bwp", "byn", "bzd", "cad", "cdf", "chf", "cny", "cop", "crc", "cve", "czk", "dkk", "dop",
    "dzd", "egp", "etb", "eur", "fjd", "fkp", "gbp", "gel", "gip", "gmd", "gtq", "gyd", "hkd", "hnl", "htg", "huf",
    "idr", "ils", "inr", "isk", "jmd", "kes", "kgs", "khr", "kyd", "kzt", "lak", "lbp", "lkr", "lrd", "lsl", "mad",
    "mdl", "mkd", "mmk", "mnt", "mop", "mur", "mvr", "mwk", "mxn", "myr", "mzn", "nad", "ngn", "nio", "nok", "npr",
    "nzd", "pab", "pen", "pgk", "php", "pkr", "pln", "qar", "ron", "rsd", "rub", "sar", "sbd", "scr", "sek", "sgd",
    "shp", "sle", "sos", "srd", "std", "szl", "thb", "tjs", "top", "try", "ttd", "twd", "tzs", "uah", "usd", "uyu",
    "uzs", "wst", "xcd", "yer", "zar", "zmw",
)
EXPONENTS: dict[str, int] = {
    **{c: 2 for c in TWO_DECIMAL},
    **{c: 0 for c in ZERO_DECIMAL},
    **{c: 3 for c in THREE_DECIMAL},
}


def exponent(currency: str) -> int | None:
    """Minor-unit exponent of a currency code (any case, surrounding spaces ignored), or None."""
    return EXPONENTS.get(currency.strip().lower())


def _in_list(codes: tuple[str, ...]) -> str:
    return ", ".join(f"'{c}'" for c in codes)


def exponent_expr(currency_col: str) -> str:
    """Spark SQL: the exponent of an already lower-cased, trimmed currency column; null if unknown."""
    return (
        f"CASE WHEN {currency_col} IN ({_in_list(ZERO_DECIMAL)}) THEN 0 "
        f"WHEN {currency_col} IN ({_in_list(THREE_DECIMAL)}) THEN 3 "
        f"WHEN {currency_col} IN ({_in_list(TWO_DECIMAL)}) THEN 2 END"
    )


def to_minor_units_expr(amount_col: str, currency_col: str) -> str:
    """Spark SQL: a decimal major-unit amount in minor units (decimal; integral iff representable).

    The factor is a DECIMAL, not ``pow()``'s DOUBLE: decimal * double is a double, and
    19.99 * 100.0 = 1998.9999999999998 would make exact amounts look unrepresentable.
    """
    return f"({amount_col} * CAST(pow(10, {exponent_expr(currency_col)}) AS DECIMAL(4,0)))"
