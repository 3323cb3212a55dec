"""Stripe's form encoding: ``metadata[k]=v``, ``recurring[interval]=month``, ``expand[]=x`` and
``lookup_keys[0]=a`` into nested Python values, plus typed readers that answer Stripe's 400s.

>>> parse_form("metadata[a]=1&expand[0]=product&expand[1]=x&name=Pro")
{'metadata': {'a': '1'}, 'expand': ['product', 'x'], 'name': 'Pro'}
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from .errors import StripeAPIError, bad_value

_TOKEN = re.compile(r"\[([^\[\]]*)\]")
#: Top-level params that are arrays: ``name[0]`` indexes them. Elsewhere (``metadata[0]``) a digit is a key.
LIST_PARAMS = frozenset({"expand", "lookup_keys", "ids", "images", "marketing_features", "types"})


def _split_key(key: str) -> list[str]:
    """``a[b][]`` -> ``["a", "b", ""]``; a malformed key is kept whole."""
    head, bracket, _ = key.partition("[")
    if not bracket:
        return [key]
    rest = key[len(head):]
    tokens = _TOKEN.findall(rest)
    if "".join(f"[{t}]" for t in tokens) != rest or not head:
        return [key]
    return [head, *tokens]


def _listify(node: Any) -> Any:
    """Dicts whose keys are all array markers become lists (in index order)."""
    if isinstance(node, dict):
        node = {k: _listify(v) for k, v in node.items()}
        if node and all(isinstance(k, int) for k in node):
            return [node[k] for k in sorted(node)]
        return {str(k): v for k, v in node.items()}
    return node


def parse_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Nested params from decoded (key, value) pairs. ``[]`` appends; ``[0]`` indexes a list."""
    root: dict[Any, Any] = {}
    counters: dict[int, int] = {}
    for key, value in pairs:
        tokens = _split_key(key)
        node = root
        for i, token in enumerate(tokens):
            last = i == len(tokens) - 1
            if token == "":
                idx = counters.get(id(node), 0)
                counters[id(node)] = idx + 1
                tok: Any = idx
            elif i > 0 and tokens[0] in LIST_PARAMS and token.isdigit() and len(token) < 6:
                tok = int(token)
            else:
                tok = token
            if last:
                node[tok] = value
            else:
                child = node.get(tok)
                if not isinstance(child, dict):
                    child = {}
                    node[tok] = child
                node = child
    return _listify(root)


def parse_form(text: str) -> dict[str, Any]:
    """Nested params from an ``application/x-www-form-urlencoded`` string (body or query)."""
    return parse_pairs(parse_qsl(text, keep_blank_values=True))


# -- typed readers (raise Stripe-shaped 400s) ---------------------------------------------------

def as_bool(value: Any, param: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise StripeAPIError(400, f"Invalid boolean: {value}", code="parameter_invalid_boolean", param=param)


def as_int(value: Any, param: str, minimum: int | None = None, maximum: int | None = None) -> int:
    try:
        if isinstance(value, bool) or not re.fullmatch(r"-?\d+", str(value)):
            raise ValueError
        out = int(str(value))
    except ValueError:
        raise StripeAPIError(400, f"Invalid integer: {value}", code="parameter_invalid_integer",
                             param=param) from None
    if minimum is not None and out < minimum:
        raise StripeAPIError(400, f"This value must be greater than or equal to {minimum}.",
                             code="parameter_invalid_integer", param=param)
    if maximum is not None and out > maximum:
        raise StripeAPIError(400, f"This value must be less than or equal to {maximum}.",
                             code="parameter_invalid_integer", param=param)
    return out


def as_str(value: Any, param: str, max_len: int | None = None) -> str:
    if not isinstance(value, str):
        raise bad_value(param, f"Invalid string: {value!r}")
    if max_len is not None and len(value) > max_len:
        raise bad_value(param, f"Invalid string: must be at most {max_len} characters")
    return value


def as_dict(value: Any, param: str) -> dict[str, Any]:
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise StripeAPIError(400, f"Invalid hash: {param} must be a hash", code="parameter_invalid_hash",
                             param=param)
    return value


def as_list(value: Any, param: str) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return [value]
    raise StripeAPIError(400, f"Invalid array: {param} must be an array", code="parameter_invalid_array",
                         param=param)
