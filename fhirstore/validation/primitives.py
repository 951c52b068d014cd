"""FHIR primitive values as the JSON representation spells them (R4B, "JSON representation").

`problem(kind, value)` says what is wrong with one value of primitive type `kind`, or None:

- boolean is JSON `true`/`false`; integer, unsignedInt and positiveInt are JSON numbers without
  a fraction, in the 32-bit range and above their floor; decimal is a JSON number;
- every other primitive is a JSON string that matches the regex of its StructureDefinition
  (date, dateTime, instant, time, code, id, uri, oid, uuid, base64Binary...). The spec's regexes
  are XML Schema regexes, whose `\\s` is only space, tab, CR and LF: they are compiled with
  `re.ASCII`, which is that set plus form feed and vertical tab;
- no string is empty (ele-1: an element has a value or children);
- no string holds NUL or a lone surrogate: neither database can store them, and neither is a
  Unicode character a FHIR string may hold.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache
from typing import Any

from fhirstore.validation.table import table

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_INT_RANGE = (-(2**31), 2**31 - 1)
_FLOORS = {"integer": _INT_RANGE[0], "unsignedInt": 0, "positiveInt": 1}
# Strings the spec's regex accepts whenever they are not empty: no need to run it.
_ANY_TEXT = frozenset({"string", "markdown", "xhtml"})


def unstorable(text: str) -> str | None:
    """What in `text` no database can store, or None."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "holds a NUL character (U+0000), which cannot be stored; remove it"
    return "holds a lone surrogate (invalid Unicode), which cannot be stored; send valid UTF-8"


@cache
def _pattern(kind: str) -> re.Pattern[str] | None:
    regex = table().primitives.get(kind)
    if regex is None or kind in _ANY_TEXT:
        return None
    return re.compile(regex, re.ASCII)


def shown(value: Any) -> str:
    """A value as a message quotes it: JSON-ish, cut short."""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {text!r}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return f"the number {value}"


def problem(kind: str, value: Any) -> str | None:
    """What is wrong with `value` as a FHIR `kind`, or None when it is right."""
    if kind == "boolean":
        boolean = value is True or value is False
        return None if boolean else f"must be true or false, not {shown(value)}"
    if kind in _FLOORS:
        return _integer(kind, value)
    if kind == "decimal":
        number = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
        return None if number else f"must be a JSON number (a FHIR decimal), not {shown(value)}"
    if not isinstance(value, str):
        return f"must be a JSON string (a FHIR {kind}), not {shown(value)}"
    if not value:
        return "must not be an empty string; leave the element out instead"
    bad = unstorable(value)
    if bad is not None:
        return bad
    pattern = _pattern(kind)
    if pattern is not None and pattern.fullmatch(value) is None:
        return f"{shown(value)} is not a valid FHIR {kind}"
    return None


def _integer(kind: str, value: Any) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return f"must be a JSON number without a fraction (a FHIR {kind}), not {shown(value)}"
    if not _FLOORS[kind] <= value <= _INT_RANGE[1]:
        return f"{value} is out of range for a FHIR {kind} ({_FLOORS[kind]} to {_INT_RANGE[1]})"
    return None
