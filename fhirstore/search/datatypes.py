"""FHIR data type values -> `IndexEntry`s, one `ParamType` per search parameter type.

A value arrives with the FHIR type name the path gives it: known when the model names the
element's type (`Task.status` is a `code`, `Task.for` a `Reference`), None when the FHIRPath
engine lost it (e.g. after a union), in which case the type of a complex value is guessed from
its keys (`shape`). `value_converter` picks the conversion for one FHIR type once, so
indexing a write does not dispatch per value on what the extractor already knows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

from fhirstore.search import definitions as d
from fhirstore.search.index_entry import CANONICAL, IndexEntry
from fhirstore.search.normalize import (
    FAR_FUTURE,
    FAR_PAST,
    MAX_CODE,
    MAX_SYSTEM,
    MAX_TEXT,
    clip,
    date_range,
    normalize_text,
    to_float,
)
from fhirstore.search.ucum import canonical

# (parameter code, value) -> entries, for values of one FHIR type.
ValueConverter = Callable[[str, Any], list[IndexEntry]]
# (parameter code, FHIR type name or None, value) -> entries.
Converter = Callable[[str, str | None, Any], list[IndexEntry]]

CURRENCY_SYSTEM = "urn:iso:std:iso:4217"
_QUANTITY_TYPES = frozenset(
    {"Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"}
)
_UNTYPED = frozenset({"Element", "BackboneElement"})
_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})
_ADDRESS_KEYS = ("line", "city", "district", "state", "postalCode", "country")
_LITERAL_REFERENCE = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[^/]+)?$"
)


def shape(value: dict[str, Any]) -> str:
    """Guess the FHIR data type of a complex value from its keys."""
    if "coding" in value:
        return "CodeableConcept"
    if "concept" in value or isinstance(value.get("reference"), dict):
        return "CodeableReference"
    if "reference" in value or ("identifier" in value and "value" not in value):
        return "Reference"
    if "start" in value or "end" in value:
        return "Period"
    if "event" in value or "repeat" in value:
        return "Timing"
    if "currency" in value:
        return "Money"
    if "low" in value or "high" in value:
        return "Range"
    if "family" in value or "given" in value:
        return "HumanName"
    if any(key in value for key in _ADDRESS_KEYS):
        return "Address"
    if "value" in value:
        if to_float(value["value"]) is not None:
            return "Quantity"
        return "ContactPoint" if value.get("system") in _CONTACT_SYSTEMS else "Identifier"
    if "code" in value or "system" in value or "display" in value:
        return "Coding"
    return "CodeableConcept" if "text" in value else "Element"


def _untyped(kind: str) -> bool:
    """True when a complex value's type has to be guessed from its keys."""
    return kind in _UNTYPED or kind.startswith("System.")


def _nothing(param: str, value: Any) -> list[IndexEntry]:
    return []


@dataclass(frozen=True, slots=True, eq=False)
class ParamType:
    """How one search parameter type indexes values.

    `primitive` takes JSON strings, numbers and booleans (with the FHIR type name: a date
    parameter skips `time`); `complex` maps FHIR data types to the conversion of their JSON
    objects; `other` takes objects of any type not in it.
    """

    primitive: Converter
    complex: dict[str, ValueConverter] = field(default_factory=dict)
    other: ValueConverter = _nothing

    def for_objects(self, kind: str | None) -> ValueConverter:
        """The conversion of JSON objects of FHIR type `kind` (None: guessed per object)."""
        if kind is None or _untyped(kind):
            return lambda param, value: self.complex.get(shape(value), self.other)(param, value)
        return self.complex.get("Quantity" if kind in _QUANTITY_TYPES else kind, self.other)

    def entries(self, param: str, kind: str | None, value: Any) -> list[IndexEntry]:
        """The entries of one value of FHIR type `kind` (None: unknown)."""
        return value_converter(self, kind)(param, value)


@lru_cache(maxsize=1024)
def value_converter(param_type: ParamType, kind: str | None) -> ValueConverter:
    """The conversion of any JSON value of FHIR type `kind` (None: unknown), chosen once."""
    objects, primitive = param_type.for_objects(kind), param_type.primitive

    def convert(param: str, value: Any) -> list[IndexEntry]:
        if isinstance(value, dict):
            return objects(param, value)
        return primitive(param, kind, value)

    return convert


def _text(value: Any) -> str | None:
    return clip(normalize_text(value), MAX_TEXT) if isinstance(value, str) else None


# -- token ---------------------------------------------------------------------------------


def _token_primitive(param: str, kind: str | None, value: Any) -> list[IndexEntry]:
    if isinstance(value, str):
        code = clip(value, MAX_CODE)
    elif isinstance(value, bool):
        code = "true" if value else "false"
    elif isinstance(value, int | float | Decimal):
        code = clip(str(value), MAX_CODE)
    else:
        return []
    return [] if code is None else [IndexEntry(param, None, code)]


def _coding(param: str, coding: Any) -> IndexEntry | None:
    if not isinstance(coding, dict):
        return None
    system = clip(coding.get("system"), MAX_SYSTEM)
    code = clip(coding.get("code"), MAX_CODE)
    text = _text(coding.get("display"))
    if system is None and code is None and text is None:
        return None
    return IndexEntry(param, system, code, text)


def _token_coding(param: str, value: dict[str, Any]) -> list[IndexEntry]:
    entry = _coding(param, value)
    return [] if entry is None else [entry]


def _token_codeable_concept(param: str, value: dict[str, Any]) -> list[IndexEntry]:
    entries = []
    displays = set()
    for coding in value.get("coding") or ():
        entry = _coding(param, coding)
        if entry is not None:
            displays.add(entry.text)
            entries.append(entry)
    text = _text(value.get("text"))
    if text is not None and text not in displays:  # for :text; a display already has it
        entries.append(IndexEntry(param, None, None, text))
    return entries


def _token_codeable_reference(param: str, value: dict[str, Any]) -> list[IndexEntry]:
    return _token_codeable_concept(param, value.get("concept") or {})


OF_TYPE = ":of-type"  # suffix of the parameter code the `:of-type` rows are filed under


def _token_identifier(param: str, value: dict[str, Any]) -> list[IndexEntry]:
    code = clip(value.get("value"), MAX_CODE)
    if code is None:
        return []
    kind = value.get("type") or {}
    entries = [
        IndexEntry(param, clip(value.get("system"), MAX_SYSTEM), code, _text(kind.get("text")))
    ]
    for coding in kind.get("coding") or () if isinstance(kind, dict) else ():
        of_type = _coding(param + OF_TYPE, coding)
        if of_type is not None and of_type.code is not None:  # `:of-type`: type and value
            entries.append(of_type._replace(text=clip(value.get("value"), MAX_TEXT)))
    return entries


def _token_contact_point(param: str, value: dict[str, Any]) -> list[IndexEntry]:
    code = clip(value.get("value"), MAX_CODE)
    if code is None:
        return []
    return [IndexEntry(param, clip(value.get("system"), MAX_SYSTEM), code)]


TOKEN = ParamType(
    _token_primitive,
    {
        "CodeableConcept": _token_codeable_concept,
        "CodeableReference": _token_codeable_reference,
        "Coding": _token_coding,
        "Identifier": _token_identifier,
        "ContactPoint": _token_contact_point,
    },
)


# -- string --------------------------------------------------------------------------------


def _parts(value: dict[str, Any], keys: tuple[str, ...]) -> Iterator[str]:
    for key in keys:
        part = value.get(key)
        if isinstance(part, list):
            yield from (item for item in part if isinstance(item, str))
        elif isinstance(part, str):
            yield part


def _strings(param: str, strings: list[str]) -> list[IndexEntry]:
    return [
        IndexEntry(param, None, clip(string, MAX_CODE), _text(string))
        for string in strings
        if string.strip()
    ]


def _string_primitive(param: str, kind: str | None, value: Any) -> list[IndexEntry]:
    return _strings(param, [value]) if isinstance(value, str) else []


def _string_human_name(param: str, value: dict[str, Any]) -> list[IndexEntry]:
    strings = list(_parts(value, ("text", "family", "given", "prefix", "suffix")))
    if "text" not in value:
        strings.append(" ".join(_parts(value, ("given", "family"))))
    return _strings(param, strings)


def _string_address(param: str, value: dict[str, Any]) -> list[IndexEntry]:
    return _strings(param, list(_parts(value, ("text", *_ADDRESS_KEYS))))


def _string_codeable_concept(param: str, value: dict[str, Any]) -> list[IndexEntry]:
    strings = list(_parts(value, ("text",)))
    codings = value.get("coding") or ()
    strings += [c["display"] for c in codings if isinstance(c, dict) and "display" in c]
    return _strings(param, [string for string in strings if isinstance(string, str)])


def _string_other(param: str, value: dict[str, Any]) -> list[IndexEntry]:
    return _strings(param, list(_parts(value, ("text", "display", "value"))))


STRING = ParamType(
    _string_primitive,
    {
        "HumanName": _string_human_name,
        "Address": _string_address,
        "CodeableConcept": _string_codeable_concept,
    },
    _string_other,
)


# -- uri / reference -----------------------------------------------------------------------


def _uri_primitive(param: str, kind: str | None, value: Any) -> list[IndexEntry]:
    code = clip(value, MAX_CODE)
    return [] if code is None else [IndexEntry(param, None, code)]


URI = ParamType(_uri_primitive)


@lru_cache(maxsize=8192)  # a resource's references recur in many others (its Patient)
def reference_target(reference: str) -> tuple[str, str] | None:
    """(`Type`, `id`) of a literal reference `Type/id`, absolute or versioned; None otherwise."""
    match = _LITERAL_REFERENCE.search(reference)
    if match is None or match.group(1) not in d.resource_types():
        return None
    return match.group(1), match.group(2)


@lru_cache(maxsize=8192)
def _reference_columns(reference: str) -> tuple[str | None, str | None] | None:
    """(system, code) of a literal reference; None when the reference type is not in the text."""
    target = reference_target(reference)
    if target is None:
        return None
    if "://" in reference or reference.startswith("urn:"):
        return clip(target[0], MAX_SYSTEM), clip(reference, MAX_CODE)
    return clip(target[0], MAX_SYSTEM), clip(f"{target[0]}/{target[1]}", MAX_CODE)


def _reference(param: str, value: dict[str, Any]) -> list[IndexEntry]:
    reference = value.get("reference")
    if isinstance(reference, dict):  # CodeableReference
        return _reference(param, reference)
    if not isinstance(reference, str) or not reference or reference.startswith("#"):
        return []
    columns = _reference_columns(reference)
    if columns is None:
        columns = clip(value.get("type"), MAX_SYSTEM), clip(reference, MAX_CODE)
    return [IndexEntry(param, *columns)]


REFERENCE = ParamType(_uri_primitive, other=_reference)  # a string is a canonical / uri


# -- date ----------------------------------------------------------------------------------


def _date_primitive(param: str, kind: str | None, value: Any) -> list[IndexEntry]:
    if not isinstance(value, str) or kind == "time":
        return []
    try:
        low, high = date_range(value)
    except ValueError:
        return []
    return [IndexEntry(param, None, None, None, low, high)]


def _date_period(param: str, value: dict[str, Any]) -> list[IndexEntry]:
    start, end = value.get("start"), value.get("end")
    try:
        low = date_range(start)[0] if isinstance(start, str) else FAR_PAST
        high = date_range(end)[1] if isinstance(end, str) else FAR_FUTURE
    except ValueError:
        return []
    if low == FAR_PAST and high == FAR_FUTURE:
        return []
    return [IndexEntry(param, None, None, None, low, high)]


def _date_timing(param: str, value: dict[str, Any]) -> list[IndexEntry]:
    entries = [
        entry
        for event in value.get("event") or ()
        for entry in _date_primitive(param, "dateTime", event)
    ]
    period = (value.get("repeat") or {}).get("boundsPeriod")
    if isinstance(period, dict):
        entries += _date_period(param, period)
    return entries


DATE = ParamType(_date_primitive, {"Period": _date_period, "Timing": _date_timing})


# -- number / quantity ---------------------------------------------------------------------


def _unit(quantity: dict[str, Any]) -> tuple[str | None, str | None]:
    code = quantity.get("code") or quantity.get("unit")
    return clip(quantity.get("system"), MAX_SYSTEM), clip(code, MAX_CODE)


def _number_primitive(param: str, kind: str | None, value: Any) -> list[IndexEntry]:
    number = to_float(value)
    return [] if number is None else [IndexEntry(param, None, None, None, number, number)]


def _in_base_units(
    param: str, unit: tuple[str | None, str | None], low: float, high: float
) -> list[IndexEntry]:
    """The row of a UCUM quantity (or range) in base units, when its unit converts."""
    key, bounds = None, []
    for bound in (low, high):
        found = None if bound in (FAR_PAST, FAR_FUTURE) else canonical(*unit, bound)
        if found is None:
            if bound not in (FAR_PAST, FAR_FUTURE):
                return []
            bounds.append(bound)
        else:
            key = found[0]
            bounds.append(found[1])
    return [] if key is None else [IndexEntry(param, None, None, CANONICAL + key, *bounds)]


def _quantity(param: str, value: dict[str, Any]) -> list[IndexEntry]:
    number = to_float(value.get("value"))
    if number is None:
        return []
    unit = _unit(value)
    return [
        IndexEntry(param, *unit, None, number, number),
        *_in_base_units(param, unit, number, number),
    ]


def _money(param: str, value: dict[str, Any]) -> list[IndexEntry]:
    number = to_float(value.get("value"))
    if number is None:
        return []
    currency = clip(value.get("currency"), MAX_CODE)
    system = CURRENCY_SYSTEM if currency else None
    return [IndexEntry(param, system, currency, None, number, number)]


def _range(param: str, value: dict[str, Any]) -> list[IndexEntry]:
    low, high = value.get("low") or {}, value.get("high") or {}
    low_value, high_value = to_float(low.get("value")), to_float(high.get("value"))
    if low_value is None and high_value is None:
        return []
    unit = _unit(low if low_value is not None else high)
    bounds = (
        FAR_PAST if low_value is None else low_value,
        FAR_FUTURE if high_value is None else high_value,
    )
    return [IndexEntry(param, *unit, None, *bounds), *_in_base_units(param, unit, *bounds)]


QUANTITY = ParamType(_number_primitive, {"Quantity": _quantity, "Money": _money, "Range": _range})


def _without_unit(convert: ValueConverter) -> ValueConverter:
    """A number parameter over a Range: the bounds without the unit."""

    def number(param: str, value: dict[str, Any]) -> list[IndexEntry]:
        found = convert(param, value)
        return [IndexEntry(param, low=e.low, high=e.high) for e in found if e.text is None]

    return number


NUMBER = ParamType(
    _number_primitive, {kind: _without_unit(f) for kind, f in QUANTITY.complex.items()}
)

PARAM_TYPES: dict[str, ParamType] = {
    d.TOKEN: TOKEN,
    d.STRING: STRING,
    d.URI: URI,
    d.REFERENCE: REFERENCE,
    d.DATE: DATE,
    d.NUMBER: NUMBER,
    d.QUANTITY: QUANTITY,
}
