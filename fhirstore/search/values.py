"""Parsed search values, one class per kind, and the parsers that build them from query text.

A parser raises `ValueError` with a message saying what is accepted; `query` turns it into an
`InvalidSearch` that names the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from fhirstore.search import definitions as d
from fhirstore.search.normalize import (
    MAX_CODE,
    MAX_SYSTEM,
    MAX_TEXT,
    date_range,
    decimal_range,
    normalize_text,
    parse_decimal,
)

PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
EXACT_BOUND_PREFIXES = frozenset({"gt", "lt", "ge", "le"})
_PREFIXED = re.compile(r"([a-z]{2})(.*)", re.DOTALL)
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_HISTORY = re.compile(r"/_history/[^/]*$")
DATE_FORMAT = "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.sss]][Z|+hh:mm]"


@dataclass(frozen=True, slots=True)
class TokenValue:
    """`[system]|[code]`: system None means any system, unless `no_system` (`|code`)."""

    code: str | None
    system: str | None = None
    no_system: bool = False


@dataclass(frozen=True, slots=True)
class StringValue:
    value: str  # as given (`:exact`)
    normalized: str  # folded like the index text (default, `:contains`, `:text`)


@dataclass(frozen=True, slots=True)
class UriValue:
    value: str


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    codes: tuple[str, ...]  # the index codes that match: `Patient/1` (one per type) or a URL


@dataclass(frozen=True, slots=True)
class RangeValue:
    """A date, number or quantity with its prefix.

    `low` / `high` is the closed range the prefix compares with: the implied range of the value
    (`2020-03` is the month, `5.4` is [5.35, 5.45)), the exact number for gt/lt/ge/le on numbers
    and quantities (the spec compares those with the precise value), widened for `ap`.
    """

    prefix: str
    low: float
    high: float
    system: str | None = None  # quantity unit system
    code: str | None = None  # quantity unit code
    quantity: bool = False  # a quantity's value (compared in base units when UCUM)


@dataclass(frozen=True, slots=True)
class MissingValue:
    missing: bool


@dataclass(frozen=True, slots=True)
class OfTypeValue:
    """`:of-type=[system]|code|value`: an Identifier whose type has that coding, with that value."""

    system: str | None
    code: str
    value: str


@dataclass(frozen=True, slots=True)
class ValueSetRef:
    """`:in` / `:not-in` as parsed: the ValueSet, by canonical url or `ValueSet/id`.

    Not yet comparable: the search or the filter expands it (`fhirstore.search.valuesets`)
    into a `CodeSetValue` through the store, inside the reader's access."""

    reference: str


@dataclass(frozen=True, slots=True)
class CodeSetValue:
    """An expanded ValueSet: matches a token whose (system, code) is in `codes`."""

    reference: str  # as the client named it
    codes: frozenset[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class CompositeValue:
    """`a$b`: one value per component of a composite parameter, in order."""

    parts: tuple[SearchValue, ...]


SearchValue = (
    TokenValue
    | StringValue
    | UriValue
    | ReferenceValue
    | RangeValue
    | MissingValue
    | OfTypeValue
    | ValueSetRef
    | CodeSetValue
    | CompositeValue
)


class TooManyParts(Exception):
    """More parts than the caller takes (`split_escaped(..., most=)`), counted, not cut."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


def split_escaped(text: str, separator: str, most: int | None = None) -> list[str]:
    """Split on `separator` where it is not escaped by a backslash; escapes are kept.

    At C speed, since a query string may be megabytes: escapes are masked by same-length
    stand-ins, the masked text split, and the text cut at the same places. More than `most`
    parts raise TooManyParts before any is cut.
    """
    masked = text
    if "\\" in text:
        # Runs of backslashes pair up from their start, so masking `\\` pairs first and
        # then `\` + separator masks exactly the escaped separators (the stand-in only has
        # to differ from the separator and the backslash: the text is cut, not the mask).
        masked = text.replace("\\\\", "__").replace("\\" + separator, "__")
    count = masked.count(separator) + 1
    if most is not None and count > most:
        raise TooManyParts(count)
    if masked is text:
        return text.split(separator)
    parts, start = [], 0
    for part in masked.split(separator):
        parts.append(text[start : start + len(part)])
        start += len(part) + 1
    return parts


def unescape(text: str) -> str:
    """Undo the search escapes `\\,`, `\\|`, `\\$` and `\\\\`."""
    return re.sub(r"\\([,|$\\])", r"\1", text) if "\\" in text else text


def _prefixed(text: str) -> tuple[str, str]:
    match = _PREFIXED.fullmatch(text)
    if match is None:
        return "eq", text
    if match.group(1) not in PREFIXES:
        accepted = ", ".join(sorted(PREFIXES))
        raise ValueError(f"unknown prefix {match.group(1)!r} (accepted: {accepted})")
    return match.group(1), match.group(2)


def parse_missing(text: str) -> MissingValue:
    if text not in ("true", "false"):
        raise ValueError("`:missing` takes true or false")
    return MissingValue(text == "true")


def parse_token(text: str) -> TokenValue:
    parts = [unescape(part) for part in split_escaped(text, "|")]
    if len(parts) == 1:
        return TokenValue(code=parts[0][:MAX_CODE])
    if len(parts) > 2 or parts == ["", ""]:
        raise ValueError("a token is [system]|[code] or code")
    system, code = parts
    return TokenValue(
        code=code[:MAX_CODE] or None, system=system[:MAX_SYSTEM] or None, no_system=not system
    )


def parse_of_type(text: str) -> OfTypeValue:
    parts = [unescape(part) for part in split_escaped(text, "|")]
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise ValueError("`:of-type` takes [system]|code|value (the Identifier's type and value)")
    system, code, value = parts
    return OfTypeValue(system[:MAX_SYSTEM] or None, code[:MAX_CODE], value[:MAX_TEXT])


def parse_value_set(text: str) -> ValueSetRef:
    text = unescape(text).strip()
    if "://" in text or text.startswith("urn:"):
        return ValueSetRef(text[:MAX_CODE])
    kind, _, ident = text.partition("/")
    if kind == "ValueSet" and _ID.fullmatch(ident):
        return ValueSetRef(text)
    raise ValueError("`:in` and `:not-in` take a ValueSet's canonical url or ValueSet/id")


def parse_composite(text: str, parsers: Sequence[Callable[[str], SearchValue]]) -> CompositeValue:
    try:
        texts = split_escaped(text, "$", len(parsers))
    except TooManyParts:
        texts = []
    if len(texts) != len(parsers):
        raise ValueError(f"a composite value is {len(parsers)} values joined by $")
    parts = tuple(parse(part) for parse, part in zip(parsers, texts, strict=True))
    for part in parts[1:]:
        if isinstance(part, TokenValue) and part.code is None:
            raise ValueError("after the $ a token is code, system|code or |code")
        if isinstance(part, RangeValue) and part.system is not None and part.code is None:
            raise ValueError("after the $ a quantity's unit is system|code or |code")
    return CompositeValue(parts)


def parse_string(text: str) -> StringValue:
    text = unescape(text)
    return StringValue(value=text[:MAX_CODE], normalized=normalize_text(text)[:MAX_TEXT])


def parse_uri(text: str) -> UriValue:
    return UriValue(unescape(text)[:MAX_CODE])


def uri_ancestors(uri: str) -> tuple[str, ...]:
    """`uri` and its path parents, up to the authority (what `:above` matches)."""
    ancestors = [uri]
    scheme_end = uri.find("://")
    floor = uri.find("/", scheme_end + 3) if scheme_end >= 0 else -1
    current = uri.rstrip("/")
    while floor > 0 and len(current) > floor:
        current = current[: current.rfind("/")]
        if current and current not in ancestors:
            ancestors.append(current)
    return tuple(ancestors)


def parse_reference(
    text: str, targets: tuple[str, ...], type_modifier: str | None
) -> ReferenceValue:
    """`Type/id`, `id` (any allowed target type) or an absolute URL."""
    text = unescape(text)
    if "://" in text or text.startswith("urn:"):
        return ReferenceValue((text[:MAX_CODE],))
    text = _HISTORY.sub("", text.strip())
    if "/" in text:
        resource_type, _, resource_id = text.partition("/")
        if resource_type not in d.resource_types() or not _ID.fullmatch(resource_id):
            raise ValueError("a reference is Type/id, id or an absolute URL")
        if type_modifier and resource_type != type_modifier:
            raise ValueError(f"{text!r} does not match the modifier :{type_modifier}")
        return ReferenceValue((text,))
    if not _ID.fullmatch(text):
        raise ValueError("a reference is Type/id, id or an absolute URL")
    types = (type_modifier,) if type_modifier else targets or tuple(sorted(d.resource_types()))
    return ReferenceValue(tuple(f"{resource_type}/{text}" for resource_type in types))


def parse_date(text: str, now: datetime) -> RangeValue:
    prefix, rest = _prefixed(text)
    try:
        low, high = date_range(rest)
    except ValueError:
        raise ValueError(f"a date is [prefix]{DATE_FORMAT}") from None
    if prefix == "ap":
        gap = abs(now.timestamp() - (low + high) / 2) * 0.1
        low, high = low - gap, high + gap
    return RangeValue(prefix, low, high)


def _number_bounds(prefix: str, text: str) -> tuple[float, float]:
    number = parse_decimal(text)
    if prefix in EXACT_BOUND_PREFIXES:
        return float(number), float(number)
    low, high = decimal_range(number)
    if prefix == "ap":
        margin = abs(float(number)) * 0.1
        low, high = min(low, float(number) - margin), max(high, float(number) + margin)
    return low, high


def parse_number(text: str) -> RangeValue:
    prefix, rest = _prefixed(text)
    try:
        low, high = _number_bounds(prefix, rest)
    except ValueError:
        raise ValueError("a number is [prefix]decimal, e.g. 5.4, gt100, 1e3") from None
    return RangeValue(prefix, low, high)


def parse_quantity(text: str) -> RangeValue:
    parts = [unescape(part) for part in split_escaped(text, "|")]
    if len(parts) not in (1, 3):
        raise ValueError(
            "a quantity is [prefix]number[|system|code], e.g. 5.4|http://unitsofmeasure.org|mg"
        )
    prefix, rest = _prefixed(parts[0])
    try:
        low, high = _number_bounds(prefix, rest)
    except ValueError:
        raise ValueError("a quantity is [prefix]number[|system|code], e.g. gt5.4||mg") from None
    system, code = (parts[1] or None, parts[2] or None) if len(parts) == 3 else (None, None)
    return RangeValue(prefix, low, high, system=system, code=code, quantity=True)
