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

# A digit followed by '.', 'e' or 'E' and another digit or sign: maybe a non-integer number.
# Strings can match too (e.g. "v1.2"); that only sends the body down the exact path.
_MAYBE_DECIMAL = re.compile(rb"\d[.eE][-+\d]")

JSONDecodeError = (json.JSONDecodeError, orjson.JSONDecodeError, UnicodeDecodeError)


def loads(raw: bytes | str) -> Any:
    data = raw.encode() if isinstance(raw, str) else raw
    if _MAYBE_DECIMAL.search(data) is None:
        return orjson.loads(data)
    return json.loads(data, parse_float=Decimal)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)
