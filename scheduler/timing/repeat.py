"""Reading Timing.repeat (FHIR R4B) into a checked `Repeat` rule.

Checks the datatype's invariants (tim-1 .. tim-10) and Herald's own limits, and turns timeOfDay
and when (+ offset) into local times of day. The Max elements are read and checked but only as
tolerance: Herald materialises frequency per period and count repetitions, and treats
frequencyMax, periodMax, countMax and durationMax as the latitude a person has around them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from scheduler.timing.clock import EVENT_TIMING, NO_OFFSET, WhenClock, event_times
from scheduler.timing.errors import Unschedulable, Unsupported
from scheduler.timing.primitives import (
    UNITS_OF_TIME,
    DateTime,
    Span,
    array,
    code,
    date_time,
    decimal,
    duration,
    mapping,
    positive_int,
    span,
    time_of_day,
    unsigned_int,
)

DAYS_OF_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_COUNT = 100_000  # a count is honoured from the schedule's start, so each call may walk it
MAX_OFFSET_MINUTES = 1440
BOUNDS = ("boundsDuration", "boundsRange", "boundsPeriod")
# Elements that may sit beside Timing.event: they say when in the day, and how long, only.
EVENT_COMPANIONS = frozenset(
    {"id", "extension", "timeOfDay", "when", "offset", "duration", "durationMax", "durationUnit"}
)


@dataclass(frozen=True, slots=True)
class Bounds:
    """Timing.repeat.bounds[x]: a Period (start and/or end), or a length from the start."""

    start: DateTime | None = None
    end: DateTime | None = None
    length: Span | None = None  # boundsDuration, or the high end of boundsRange
    shortest: Span | None = None  # the low end of boundsRange (checked, not used)


@dataclass(frozen=True, slots=True)
class Repeat:
    """A checked Timing.repeat: what the engine needs, in Python types."""

    frequency: int | None  # None when absent (then 1, or what the times of day imply)
    period: Span | None
    day_of_week: frozenset[int]  # 0 = Monday
    day_times: tuple[timedelta, ...]  # from timeOfDay or when + offset, since local midnight
    bounds: Bounds | None
    count: int | None
    duration: Span | None  # each occurrence's length (Occurrence.end)


def read_repeat(raw: Any, clock: WhenClock, path: str) -> Repeat:
    repeat = mapping(raw, path)
    if repeat.get("modifierExtension"):
        raise Unsupported(f"{path} has a modifierExtension Herald does not understand")
    frequency = _optional(repeat, "frequency", positive_int, path)
    frequency_max = _optional(repeat, "frequencyMax", positive_int, path)
    if frequency_max is not None and frequency_max < (frequency or 1):
        raise Unschedulable(f"{path}.frequencyMax ({frequency_max}) is below frequency")
    count = _optional(repeat, "count", positive_int, path)
    count_max = _optional(repeat, "countMax", positive_int, path)
    if count_max is not None and (count is None or count_max < count):
        raise Unschedulable(f"{path}.countMax needs a count no larger than it (tim-8)")
    if count is not None and count > MAX_COUNT:
        raise Unschedulable(f"{path}.count ({count}) is more than Herald schedules ({MAX_COUNT})")
    return Repeat(
        frequency=frequency,
        period=_length(repeat, "period", "periodUnit", path),
        day_of_week=_days_of_week(repeat, path),
        day_times=_day_times(repeat, clock, path),
        bounds=_bounds(repeat, path),
        count=count,
        duration=_length(repeat, "duration", "durationUnit", path),
    )


def read_event_companions(raw: Any, clock: WhenClock, path: str) -> Repeat:
    """A repeat beside Timing.event: only times of day and duration, else it is ambiguous."""
    repeat = mapping(raw, path)
    extra = sorted(
        name
        for name, value in repeat.items()
        if value is not None and name not in EVENT_COMPANIONS and not name.startswith("_")
    )
    if extra:
        raise Unsupported(
            f"scheduledTiming has both event and {path}.{extra[0]}: Herald cannot tell whether"
            " the repeat adds to the events or replaces them; use one or the other"
        )
    return read_repeat(repeat, clock, path)


def _optional(repeat: Mapping[str, Any], name: str, reader: Any, path: str) -> Any:
    value = repeat.get(name)
    return None if value is None else reader(value, f"{path}.{name}")


def _length(repeat: Mapping[str, Any], name: str, unit_name: str, path: str) -> Span | None:
    """`period`/`duration` with its unit (tim-1, tim-2, tim-4, tim-5) and its Max (tim-6, 7)."""
    value = _optional(repeat, name, decimal, path)
    unit_value = repeat.get(unit_name)
    maximum = _optional(repeat, f"{name}Max", decimal, path)
    if value is None:
        if unit_value is not None or maximum is not None:
            raise Unschedulable(f"{path} has {unit_name} or {name}Max but no {name}")
        return None
    if unit_value is None:
        raise Unschedulable(f"{path}.{name} needs a {unit_name} (s, min, h, d, wk, mo or a)")
    unit = code(unit_value, f"{path}.{unit_name}", UNITS_OF_TIME)
    if name == "period" and value <= 0:
        raise Unschedulable(f"{path}.period must be more than 0, got {value}")
    if maximum is not None and maximum < value:
        raise Unschedulable(f"{path}.{name}Max ({maximum}) is below {name} ({value})")
    return span(value, unit, f"{path}.{name}")


def _days_of_week(repeat: Mapping[str, Any], path: str) -> frozenset[int]:
    names = array(repeat.get("dayOfWeek"), f"{path}.dayOfWeek")
    return frozenset(
        DAYS_OF_WEEK.index(code(name, f"{path}.dayOfWeek[{i}]", DAYS_OF_WEEK))
        for i, name in enumerate(names)
    )


def _day_times(repeat: Mapping[str, Any], clock: WhenClock, path: str) -> tuple[timedelta, ...]:
    """timeOfDay, or when moved by offset, as sorted distinct times since local midnight."""
    clock_times = array(repeat.get("timeOfDay"), f"{path}.timeOfDay")
    names = array(repeat.get("when"), f"{path}.when")
    offset = _optional(repeat, "offset", unsigned_int, path)
    if clock_times and names:
        raise Unschedulable(f"{path} has both timeOfDay and when; use one of them (tim-10)")
    for i, name in enumerate(names):
        code(name, f"{path}.when[{i}]", EVENT_TIMING)
    if offset is not None:
        if not names or NO_OFFSET.intersection(names):
            raise Unschedulable(f"{path}.offset needs a when code other than C, CM, CD, CV (tim-9)")
        if offset > MAX_OFFSET_MINUTES:
            raise Unschedulable(f"{path}.offset is more than a day ({offset} minutes)")
    times = [time_of_day(value, f"{path}.timeOfDay[{i}]") for i, value in enumerate(clock_times)]
    times.extend(event_times(names, offset or 0, clock))
    return tuple(sorted(set(times)))


def _bounds(repeat: Mapping[str, Any], path: str) -> Bounds | None:
    present = [name for name in BOUNDS if repeat.get(name) is not None]
    if len(present) > 1:
        raise Unschedulable(f"{path} has more than one bounds[x]: {', '.join(present)}")
    if not present:
        return None
    name = present[0]
    where = f"{path}.{name}"
    value = mapping(repeat[name], where)
    if name == "boundsDuration":
        return Bounds(length=duration(value, where))
    if name == "boundsRange":
        low = _optional(value, "low", duration, where)
        high = _optional(value, "high", duration, where)
        return Bounds(length=high, shortest=low)
    start = _optional(value, "start", date_time, where)
    end = _optional(value, "end", date_time, where)
    return Bounds(start=start, end=end)
