"""FHIR data type values -> `IndexEntry`s, one converter per search parameter type.

Each converter takes the parameter code, the FHIR type name reported by FHIRPath (None when the
engine lost it, e.g. after a union; the type is then inferred from the value's shape) and the
value, and yields the entries that value contributes to the index.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import lru_cache
from typing import Any

from fhirstore.search import definitions as d
from fhirstore.search.index_entry import IndexEntry
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

Converter = Callable[[str, str | None, Any], Iterator[IndexEntry]]

CURRENCY_SYSTEM = "urn:iso:std:iso:4217"
_QUANTITY_TYPES = frozenset(
    {"Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"}
)
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


def _complex_type(kind: str | None, value: dict[str, Any]) -> str:
    if kind is None or kind in ("Element", "BackboneElement") or kind.startswith("System."):
        return shape(value)
    return "Quantity" if kind in _QUANTITY_TYPES else kind


def _text(value: Any) -> str | None:
    return clip(normalize_text(value), MAX_TEXT) if isinstance(value, str) else None


# -- token ---------------------------------------------------------------------------------


def _coding(param: str, coding: dict[str, Any]) -> IndexEntry | None:
    system = clip(coding.get("system"), MAX_SYSTEM)
    code = clip(coding.get("code"), MAX_CODE)
    text = _text(coding.get("display"))
    if system is None and code is None and text is None:
        return None
    return IndexEntry(param, system=system, code=code, text=text)


def token_entries(param: str, kind: str | None, value: Any) -> Iterator[IndexEntry]:
    if isinstance(value, bool):
        yield IndexEntry(param, code="true" if value else "false")
        return
    if isinstance(value, str | int | float | Decimal):
        code = clip(str(value), MAX_CODE)
        if code is not None:
            yield IndexEntry(param, code=code)
        return
    if not isinstance(value, dict):
        return
    kind = _complex_type(kind, value)
    if kind == "CodeableReference":
        kind, value = "CodeableConcept", value.get("concept") or {}
    if kind == "CodeableConcept":
        displays = set()
        for coding in value.get("coding") or ():
            entry = _coding(param, coding)
            if entry is not None:
                displays.add(entry.text)
                yield entry
        text = _text(value.get("text"))
        if text is not None and text not in displays:  # for :text; a display already has it
            yield IndexEntry(param, text=text)
    elif kind == "Coding":
        entry = _coding(param, value)
        if entry is not None:
            yield entry
    elif kind in ("Identifier", "ContactPoint"):
        code = clip(value.get("value"), MAX_CODE)
        if code is not None:
            type_text = (value.get("type") or {}).get("text") if kind == "Identifier" else None
            system = clip(value.get("system"), MAX_SYSTEM)
            yield IndexEntry(param, system=system, code=code, text=_text(type_text))


# -- string --------------------------------------------------------------------------------


def _string(param: str, value: Any) -> IndexEntry | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return IndexEntry(param, code=clip(value, MAX_CODE), text=_text(value))


def _parts(value: dict[str, Any], keys: tuple[str, ...]) -> Iterator[str]:
    for key in keys:
        part = value.get(key)
        if isinstance(part, list):
            yield from (item for item in part if isinstance(item, str))
        elif isinstance(part, str):
            yield part


def string_entries(param: str, kind: str | None, value: Any) -> Iterator[IndexEntry]:
    if isinstance(value, str):
        strings: list[str] = [value]
    elif isinstance(value, dict):
        kind = _complex_type(kind, value)
        if kind == "HumanName":
            strings = list(_parts(value, ("text", "family", "given", "prefix", "suffix")))
            if "text" not in value:
                strings.append(" ".join(_parts(value, ("given", "family"))))
        elif kind == "Address":
            strings = list(_parts(value, ("text", *_ADDRESS_KEYS)))
        elif kind == "CodeableConcept":
            strings = list(_parts(value, ("text",)))
            strings += [c["display"] for c in value.get("coding") or () if "display" in c]
        else:
            strings = list(_parts(value, ("text", "display", "value")))
    else:
        return
    for string in strings:
        entry = _string(param, string)
        if entry is not None:
            yield entry


# -- uri / reference -----------------------------------------------------------------------


def uri_entries(param: str, kind: str | None, value: Any) -> Iterator[IndexEntry]:
    if isinstance(value, str):
        code = clip(value, MAX_CODE)
        if code is not None:
            yield IndexEntry(param, code=code)


@lru_cache(maxsize=8192)  # a resource's references recur in many others (its Patient)
def reference_target(reference: str) -> tuple[str, str] | None:
    """(`Type`, `id`) of a literal reference `Type/id`, absolute or versioned; None otherwise."""
    match = _LITERAL_REFERENCE.search(reference)
    if match is None or match.group(1) not in d.resource_types():
        return None
    return match.group(1), match.group(2)


def reference_entries(param: str, kind: str | None, value: Any) -> Iterator[IndexEntry]:
    if isinstance(value, str):  # canonical / uri
        yield from uri_entries(param, kind, value)
        return
    if not isinstance(value, dict):
        return
    reference = value.get("reference")
    if isinstance(reference, dict):  # CodeableReference
        yield from reference_entries(param, "Reference", reference)
        return
    if not isinstance(reference, str) or not reference or reference.startswith("#"):
        return
    target = reference_target(reference)
    if target is None:
        code, system = reference, value.get("type")
    elif "://" in reference or reference.startswith("urn:"):
        code, system = reference, target[0]
    else:
        code, system = f"{target[0]}/{target[1]}", target[0]
    yield IndexEntry(param, system=clip(system, MAX_SYSTEM), code=clip(code, MAX_CODE))


# -- date ----------------------------------------------------------------------------------


def _bounds(start: Any, end: Any) -> tuple[float, float] | None:
    try:
        low = date_range(start)[0] if isinstance(start, str) else FAR_PAST
        high = date_range(end)[1] if isinstance(end, str) else FAR_FUTURE
    except ValueError:
        return None
    return None if low == FAR_PAST and high == FAR_FUTURE else (low, high)


def date_entries(param: str, kind: str | None, value: Any) -> Iterator[IndexEntry]:
    if isinstance(value, str):
        if kind == "time":
            return
        try:
            low, high = date_range(value)
        except ValueError:
            return
        yield IndexEntry(param, low=low, high=high)
        return
    if not isinstance(value, dict):
        return
    kind = _complex_type(kind, value)
    if kind == "Period":
        bounds = _bounds(value.get("start"), value.get("end"))
        if bounds is not None:
            yield IndexEntry(param, low=bounds[0], high=bounds[1])
    elif kind == "Timing":
        for event in value.get("event") or ():
            yield from date_entries(param, "dateTime", event)
        period = (value.get("repeat") or {}).get("boundsPeriod")
        if isinstance(period, dict):
            yield from date_entries(param, "Period", period)


# -- number / quantity ---------------------------------------------------------------------


def number_entries(param: str, kind: str | None, value: Any) -> Iterator[IndexEntry]:
    if isinstance(value, dict):  # a Range (e.g. RiskAssessment.prediction.probability)
        for entry in quantity_entries(param, kind, value):
            yield IndexEntry(param, low=entry.low, high=entry.high)
        return
    number = to_float(value)
    if number is not None:
        yield IndexEntry(param, low=number, high=number)


def _unit(quantity: dict[str, Any]) -> tuple[str | None, str | None]:
    code = quantity.get("code") or quantity.get("unit")
    return clip(quantity.get("system"), MAX_SYSTEM), clip(code, MAX_CODE)


def quantity_entries(param: str, kind: str | None, value: Any) -> Iterator[IndexEntry]:
    if not isinstance(value, dict):
        yield from number_entries(param, kind, value)
        return
    kind = _complex_type(kind, value)
    if kind == "Quantity":
        number = to_float(value.get("value"))
        if number is not None:
            system, code = _unit(value)
            yield IndexEntry(param, system=system, code=code, low=number, high=number)
    elif kind == "Money":
        number = to_float(value.get("value"))
        if number is not None:
            currency = clip(value.get("currency"), MAX_CODE)
            system = CURRENCY_SYSTEM if currency else None
            yield IndexEntry(param, system=system, code=currency, low=number, high=number)
    elif kind == "Range":
        low, high = value.get("low") or {}, value.get("high") or {}
        low_value, high_value = to_float(low.get("value")), to_float(high.get("value"))
        if low_value is None and high_value is None:
            return
        system, code = _unit(low if low_value is not None else high)
        yield IndexEntry(
            param,
            system=system,
            code=code,
            low=FAR_PAST if low_value is None else low_value,
            high=FAR_FUTURE if high_value is None else high_value,
        )


CONVERTERS: dict[str, Converter] = {
    d.TOKEN: token_entries,
    d.STRING: string_entries,
    d.URI: uri_entries,
    d.REFERENCE: reference_entries,
    d.DATE: date_entries,
    d.NUMBER: number_entries,
    d.QUANTITY: quantity_entries,
}
