"""FHIR values read from untrusted JSON: dateTime, time, decimal, integers, codes, Duration.

Each reader returns a typed value or raises `Unschedulable` naming the element path, so a
malformed CarePlan never surfaces as KeyError, TypeError or ValueError. The readers are strict
about the FHIR JSON shapes (a time has seconds, a dateTime with a time has an offset, a repeating
element is an array) and never guess what a malformed value meant.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from scheduler.timing.errors import Unschedulable

UCUM = "http://unitsofmeasure.org"
UNITS_OF_TIME = ("s", "min", "h", "d", "wk", "mo", "a")
# The longest a unit can be, to refuse lengths no calendar arithmetic can hold.
UNIT_SECONDS_AT_MOST = {
    "s": 1,
    "min": 60,
    "h": 3600,
    "d": 86_400,
    "wk": 604_800,
    "mo": 31 * 86_400,
    "a": 366 * 86_400,
}
LONGEST_SPAN_SECONDS = 1000 * 366 * 86_400  # a thousand years
MAX_POSITIVE_INT = 2**31 - 1

_DATE_TIME = re.compile(
    r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2})"
    r"(?:T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2}))?)?)?"
)
_TIME = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?")


def show(value: Any) -> str:
    """`value` quoted for a reason, cut short so a huge input cannot flood a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True)
class DateTime:
    """A FHIR dateTime: an instant when it has a time, else the local days it covers."""

    instant: datetime | None  # aware, in UTC, when the value has a time
    first: date  # the first local day covered (a year, a month or a day)
    last: date  # the last local day covered


@dataclass(frozen=True, slots=True)
class Span:
    """A length of time: a FHIR Duration, or a decimal with a unit of time (UCUM)."""

    value: Decimal
    unit: str  # one of UNITS_OF_TIME


def mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise Unschedulable(f"{path} must be a JSON object, got {show(value)}")
    return value


def array(value: Any, path: str) -> list[Any]:
    """A repeating element: absent or an empty array both mean none."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise Unschedulable(f"{path} must be a JSON array, got {show(value)}")
    return value


def date_time(value: Any, path: str) -> DateTime:
    """A FHIR dateTime: YYYY, YYYY-MM, YYYY-MM-DD, or YYYY-MM-DDThh:mm:ss[.fff] with Z/+hh:mm."""
    found = _DATE_TIME.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise Unschedulable(
            f"{path} must be a FHIR dateTime such as 2025-03-01 or 2025-03-01T09:00:00+01:00,"
            f" got {show(value)}"
        )
    year, month, day, hour, minute, second, fraction, offset = found.groups()
    try:
        if month is None:
            first, last = date(int(year), 1, 1), date(int(year), 12, 31)
        elif day is None:
            first = date(int(year), int(month), 1)
            last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
        else:
            first = last = date(int(year), int(month), int(day))
        if hour is None:
            return DateTime(None, first, last)
        clock = _clock(hour, minute, second, fraction, path)
        local = datetime.combine(first, datetime.min.time()) + clock
        instant = local.replace(tzinfo=_offset(offset, path)).astimezone(UTC)
    except (ValueError, OverflowError) as error:
        raise Unschedulable(f"{path} is not a real date and time: {show(value)}") from error
    return DateTime(instant, first, last)


def time_of_day(value: Any, path: str) -> timedelta:
    """A FHIR time (hh:mm:ss[.fff]) as the time since local midnight."""
    found = _TIME.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise Unschedulable(f"{path} must be a FHIR time such as 09:00:00, got {show(value)}")
    hour, minute, second, fraction = found.groups()
    return _clock(hour, minute, second, fraction, path)


def decimal(value: Any, path: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise Unschedulable(f"{path} must be a number, got {show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise Unschedulable(f"{path} must be a finite number, got {show(value)}")
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise Unschedulable(f"{path} must be a finite number, got {show(value)}")
    return number


def positive_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Unschedulable(f"{path} must be a positive whole number, got {show(value)}")
    if value > MAX_POSITIVE_INT:
        raise Unschedulable(f"{path} is larger than a FHIR positiveInt allows: {value}")
    return value


def unsigned_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Unschedulable(f"{path} must be a whole number of at least 0, got {show(value)}")
    return value


def code(value: Any, path: str, allowed: tuple[str, ...] | frozenset[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise Unschedulable(
            f"{path} must be one of {', '.join(sorted(allowed))}; got {show(value)}"
        )
    return value


def span(value: Decimal, unit: str, path: str) -> Span:
    """A length `value` `unit`: at least 0, at most a thousand years, months and years whole."""
    if value < 0:
        raise Unschedulable(f"{path} must not be negative, got {value}")
    if value * UNIT_SECONDS_AT_MOST[unit] > LONGEST_SPAN_SECONDS:
        raise Unschedulable(f"{path} is longer than a thousand years: {value} {unit}")
    if unit in ("mo", "a") and value != value.to_integral_value():
        raise Unschedulable(
            f"{path} must be a whole number of {'months' if unit == 'mo' else 'years'},"
            f" got {value}; use d or wk for fractions"
        )
    return Span(value, unit)


def duration(value: Any, path: str) -> Span:
    """A FHIR Duration: a Quantity of time with a UCUM code (or unit) in s | min | h | d | wk |
    mo | a and no comparator."""
    quantity = mapping(value, path)
    if quantity.get("comparator") is not None:
        raise Unschedulable(f"{path} has a comparator; a bound must be an exact length of time")
    if quantity.get("system", UCUM) != UCUM:
        raise Unschedulable(f"{path}.system must be {UCUM}, got {show(quantity.get('system'))}")
    unit_key = "code" if quantity.get("code") is not None else "unit"
    unit = code(quantity.get(unit_key), f"{path}.{unit_key}", UNITS_OF_TIME)
    if quantity.get("value") is None:
        raise Unschedulable(f"{path}.value is missing")
    return span(decimal(quantity["value"], f"{path}.value"), unit, path)


def _clock(hour: str, minute: str, second: str, fraction: str | None, path: str) -> timedelta:
    if int(hour) > 23 or int(minute) > 59 or int(second) > 59:
        raise Unschedulable(
            f"{path} has no such time of day: {hour}:{minute}:{second} (a leap second or"
            " 24:00 cannot be scheduled)"
        )
    micro = int((fraction or ".0")[1:7].ljust(6, "0"))
    return timedelta(hours=int(hour), minutes=int(minute), seconds=int(second), microseconds=micro)


def _offset(text: str, path: str) -> timezone:
    if text == "Z":
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 14 or minutes > 59 or (hours == 14 and minutes):
        raise Unschedulable(f"{path} has an impossible time-zone offset {text}")
    sign = -1 if text[0] == "-" else 1
    return timezone(sign * timedelta(hours=hours, minutes=minutes))
