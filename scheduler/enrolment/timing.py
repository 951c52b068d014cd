"""When an enrolled activity happens: a PlanDefinition action's `timing[x]` (or its
ActivityDefinition's, or a medication's dosage timing) resolved against the enrolment start, as
the `scheduled[x]` of a CarePlan activity detail that the scheduler reads.

Relative timing is resolved once, at enrolment, so the CarePlan holds absolute times in the
patient's zone: a Duration is that long after the start (on the local calendar for d, wk, mo,
a; elapsed for s, min, h: scheduler/timing/wallclock.py), a Range a period between its low and
high, an Age the day the patient reaches it (from their birthDate), a Timing keeps its repeat
and is bounded from the start. Anything that cannot be resolved raises `Unresolved` with the
reason, for the enrolment report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from scheduler.task import local_datetime
from scheduler.timing import Unschedulable
from scheduler.timing.primitives import Span, date_time, duration
from scheduler.timing.wallclock import (
    CALENDAR_MONTHS,
    ELAPSED_SECONDS,
    add_months,
    as_timedelta,
    first_instant,
    midnight,
    to_local,
    to_utc,
)

# The timing[x] choices that place an activity (once) rather than repeat it.
PLACING = ("timingDateTime", "timingAge", "timingPeriod", "timingDuration", "timingRange")
REPEATING = "timingTiming"


class Unresolved(Exception):
    """The timing cannot be resolved for this patient; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Frame:
    """What relative timing is resolved against: the patient's zone and birth date."""

    zone: ZoneInfo
    birth_date: date | None


@dataclass(frozen=True, slots=True)
class Resolved:
    """An activity's `scheduled[x]`, and where it starts and ends (UTC) for related actions."""

    scheduled: dict[str, Any]
    start: datetime
    end: datetime | None


def timing_choice(element: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The element's `timing[x]` as (name, value), or None."""
    for name, value in element.items():
        if name.startswith("timing") and name != "timing":
            return name, value
    return None


def shifted(instant: datetime, length: Span, zone: ZoneInfo, *, sign: int = 1) -> datetime:
    """`length` after (sign 1) or before (sign -1) `instant`, on the local calendar for d, wk,
    mo, a and as elapsed time for s, min, h."""
    if length.unit in ELAPSED_SECONDS:
        return instant + sign * as_timedelta(length.value, length.unit)
    local = to_local(instant, zone)
    if length.unit in CALENDAR_MONTHS:
        months = int(length.value) * CALENDAR_MONTHS[length.unit]
        return to_utc(add_months(local, sign * months), zone)
    return to_utc(local + sign * as_timedelta(length.value, length.unit), zone)


def resolve(
    placing: tuple[str, Any] | None,
    repeating: Mapping[str, Any] | None,
    base: datetime,
    frame: Frame,
) -> Resolved | None:
    """The schedule of an activity placed by `placing` (a non-Timing timing[x]) and repeated by
    `repeating` (a Timing), relative to `base`; None when it has neither. Raises Unresolved."""
    try:
        window = _placed(placing, base, frame) if placing is not None else (base, None)
        if repeating is None:
            if placing is None:
                return None
            return period_at(*window, frame.zone)
        return _bounded(repeating, *window, frame.zone)
    except Unschedulable as error:
        raise Unresolved(error.reason) from None


def _placed(
    placing: tuple[str, Any], base: datetime, frame: Frame
) -> tuple[datetime, datetime | None]:
    name, value = placing
    zone = frame.zone
    if name == "timingDateTime":
        return first_instant(date_time(value, name), zone), None
    if name == "timingPeriod":
        period = value if isinstance(value, Mapping) else {}
        if period.get("start") is None:
            raise Unresolved("timingPeriod has no start, so there is no time to schedule")
        start = first_instant(date_time(period["start"], f"{name}.start"), zone)
        end = period.get("end")
        return start, first_instant(date_time(end, f"{name}.end"), zone) if end else None
    if name == "timingDuration":
        return shifted(base, duration(value, name), zone), None
    if name == "timingRange":
        low, high = _range(value, name)
        return shifted(base, low, zone), shifted(base, high, zone) if high else None
    if name == "timingAge":
        if frame.birth_date is None:
            raise Unresolved(
                "timingAge needs the patient's birthDate, which the Patient does not have"
            )
        born = to_utc(midnight(frame.birth_date), zone)
        return shifted(born, duration(value, name), zone), None
    raise Unresolved(f"{name} is not a timing Herald can schedule")


def _range(value: Any, path: str) -> tuple[Span, Span | None]:
    bounds = value if isinstance(value, Mapping) else {}
    if bounds.get("low") is None:
        raise Unresolved(f"{path} has no low, so there is no time to start")
    low = duration(bounds["low"], f"{path}.low")
    high = duration(bounds["high"], f"{path}.high") if bounds.get("high") else None
    return low, high


def period_at(start: datetime, end: datetime | None, zone: ZoneInfo) -> Resolved:
    period = {"start": local_datetime(start, zone)}
    if end is not None:
        period["end"] = local_datetime(end, zone)
    return Resolved({"scheduledPeriod": period}, start, end)


def _bounded(
    timing: Mapping[str, Any], start: datetime, end: datetime | None, zone: ZoneInfo
) -> Resolved:
    """The Timing with its relative bounds made absolute from `start` (kept when absolute)."""
    resolved: dict[str, Any] = dict(timing)
    repeat = timing.get("repeat")
    if not isinstance(repeat, Mapping):
        return Resolved({"scheduledTiming": resolved}, start, end)
    repeat = dict(repeat)
    if "boundsPeriod" in repeat:
        period = repeat["boundsPeriod"] if isinstance(repeat["boundsPeriod"], Mapping) else {}
        if period.get("start") is not None:
            start = first_instant(date_time(period["start"], "boundsPeriod.start"), zone)
        else:
            repeat["boundsPeriod"] = {**period, "start": local_datetime(start, zone)}
    else:
        if "boundsDuration" in repeat:
            end = shifted(start, duration(repeat.pop("boundsDuration"), "boundsDuration"), zone)
        elif "boundsRange" in repeat:
            low, high = _range(repeat.pop("boundsRange"), "boundsRange")
            start, end = shifted(start, low, zone), shifted(start, high, zone) if high else None
        bounds = {"start": local_datetime(start, zone)}
        if end is not None:
            bounds["end"] = local_datetime(end - timedelta(seconds=1), zone)
        repeat["boundsPeriod"] = bounds
    resolved["repeat"] = repeat
    return Resolved({"scheduledTiming": resolved}, start, end)


def enrolment_start(text: str | None, zone: ZoneInfo, now: datetime) -> datetime:
    """The instant an enrolment starts: `text` (a dateTime, or a date: local midnight in the
    patient's zone), default `now`. Raises Unresolved."""
    if text is None:
        return now
    try:
        return first_instant(date_time(text, "start"), zone)
    except Unschedulable as error:
        raise Unresolved(error.reason) from None
