"""FHIR JSON in and out, keeping decimals exactly as written.

FHIR decimals carry their precision (0.40 is not 0.4), and a 17-digit decimal does not survive a
trip through a binary float. Bodies holding a number with a fraction or exponent are parsed with
`Decimal`, and decimals are written back digit for digit. Bodies without one (most of them) take
the fast path through orjson.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson

# Where a JSON number with a fraction or an exponent may stand: a member's value (after its
# name's closing quote and the ':'), an array element (after '[' or ','), or the whole
# document. Searched apart, each from a literal or a short set of bytes, which is quicker than
# one pattern with a choice at its start. Strings can match too (e.g. "dose, 2.5 mg"); that only
# sends the body down the exact path. The fraction of a time ("08:00:00.123", as in every
# meta.lastUpdated) and hex ids ("9e4f...") do not: neither stands in a number's place.
_NUMBER = rb"[ \t\n\r]*-?[0-9]+(?:\.[0-9]|[eE])"
_MEMBER_NUMBER = re.compile(rb'"[ \t\n\r]*:' + _NUMBER)
_ELEMENT_NUMBER = re.compile(rb"[\[,]" + _NUMBER)
_DOCUMENT_NUMBER = re.compile(_NUMBER)


class JSONDecodeError(ValueError):
    """The text is not JSON this server can read: a syntax error, bad UTF-8, an integer longer
    than Python converts (4300 digits) or arrays and objects nested too deeply."""


# Request bodies nest at most this deep. The official R4B examples need 21 levels; resources
# nested a few hundred levels deep would exhaust the validator's stack.
MAX_DEPTH = 100
_TOO_DEEP = f"arrays and objects are nested too deeply; at most {MAX_DEPTH} levels are accepted"
_SYNTAX_ERRORS = (json.JSONDecodeError, orjson.JSONDecodeError, UnicodeError)


def loads(raw: bytes | str, *, max_depth: int | None = None) -> Any:
    """Parse FHIR JSON; every way of failing raises `JSONDecodeError`.

    `max_depth` bounds how deeply arrays and objects nest (request bodies pass `MAX_DEPTH`), so
    that code walking the result recursively (validation) cannot run out of stack.
    """
    try:
        data = raw.encode() if isinstance(raw, str) else raw
        if not _maybe_decimal(data):
            value = orjson.loads(data)
        else:
            value = json.loads(data, parse_float=Decimal)
    except RecursionError:
        raise JSONDecodeError(_TOO_DEEP) from None
    except _SYNTAX_ERRORS as exc:
        raise JSONDecodeError(str(exc)) from None
    except ValueError:  # what is left: an integer beyond Python's int conversion limit
        raise JSONDecodeError(
            "a number has too many digits; send numbers of at most 4300 digits"
        ) from None
    if max_depth is not None and _deeper_than(value, max_depth):
        raise JSONDecodeError(_TOO_DEEP)
    return value


def _maybe_decimal(data: bytes) -> bool:
    return bool(
        _DOCUMENT_NUMBER.match(data) or _MEMBER_NUMBER.search(data) or _ELEMENT_NUMBER.search(data)
    )


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels (walked level by level)."""
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(limit):
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)
