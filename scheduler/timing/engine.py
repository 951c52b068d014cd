"""`occurrences`: the instants a CarePlan activity's schedule falls due inside a window.

Reads CarePlan.activity.detail.scheduled[x]: scheduledTiming (event and/or repeat),
scheduledPeriod (one occurrence at its start) or scheduledString (refused: free text is reported,
never guessed). Pure: no I/O, no clock; the caller passes the patient's zone, the anchor where a
schedule without bounds starts, and the window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from scheduler.timing.cadence import build_cadence
from scheduler.timing.clock import WhenClock
from scheduler.timing.errors import Unschedulable, Unsupported
from scheduler.timing.expand import END_OF_TIME, Budget, expand
from scheduler.timing.primitives import Span, array, date_time, mapping, show
from scheduler.timing.repeat import Bounds, Repeat, read_event_companions, read_repeat
from scheduler.timing.wallclock import add_span, end_instant, first_instant, midnight, to_utc

MAX_OCCURRENCES = 10_000
SCHEDULED = ("scheduledTiming", "scheduledPeriod", "scheduledString")
DEFAULT_CLOCK = WhenClock.default()


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One due instant of a schedule, in UTC; `end` from duration or scheduledPeriod.end."""

    start: datetime
    end: datetime | None


def occurrences(
    schedule: Mapping[str, Any],
    *,
    zone: ZoneInfo,
    anchor: datetime,
    window_start: datetime,
    window_end: datetime,
    when: WhenClock = DEFAULT_CLOCK,
    limit: int = MAX_OCCURRENCES,
    budget: Budget | None = None,
) -> list[Occurrence]:
    """The schedule's occurrences with window_start <= start < window_end, sorted, distinct.

    At most `limit` (the earliest): a result of exactly `limit` may continue after its last
    start. Raises Unschedulable for any schedule that cannot be materialised (and ValueError
    only for a caller's mistake: a naive datetime or a limit below 1).
    """
    given = {"anchor": anchor, "window_start": window_start, "window_end": window_end}
    for name, value in given.items():
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware, got {value!r}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    try:
        anchor, window_start, window_end = (value.astimezone(UTC) for value in given.values())
        window = _Window(zone, anchor, window_start, window_end, when, limit, budget)
        return window.of(mapping(schedule, "CarePlan.activity.detail"))
    except OverflowError as error:
        raise Unschedulable(
            f"the schedule reaches dates Herald cannot represent (after {END_OF_TIME.year - 1}"
            " or before year 1)"
        ) from error


@dataclass(frozen=True, slots=True)
class _Window:
    zone: ZoneInfo
    anchor: datetime
    start: datetime
    end: datetime
    clock: WhenClock
    limit: int
    budget: Budget | None

    def of(self, detail: Mapping[str, Any]) -> list[Occurrence]:
        present = [name for name in SCHEDULED if detail.get(name) is not None]
        if not present:
            raise Unsupported("the activity has no schedule (scheduledTiming, scheduledPeriod)")
        if len(present) > 1:
            raise Unschedulable(f"the activity has more than one scheduled[x]: {present}")
        name = present[0]
        if name == "scheduledString":
            raise Unsupported(
                f"the activity is scheduled as free text ({show(detail[name])}); Herald needs a"
                " scheduledTiming or scheduledPeriod to create Tasks"
            )
        if name == "scheduledPeriod":
            return self.period(mapping(detail[name], name))
        return self.timing(mapping(detail[name], name))

    def period(self, period: Mapping[str, Any]) -> list[Occurrence]:
        if period.get("start") is None:
            raise Unschedulable(
                "scheduledPeriod has no start, so there is no time to create a Task"
            )
        start = first_instant(date_time(period["start"], "scheduledPeriod.start"), self.zone)
        end = None
        if period.get("end") is not None:
            end_value = date_time(period["end"], "scheduledPeriod.end")
            end = end_value.instant
            if end is None:  # a date (or month, year): the end of its last day
                end = end_instant(end_value, self.zone)
            if end < start:
                raise Unschedulable("scheduledPeriod ends before it starts")
        return [Occurrence(start, end)] if self.start <= start < self.end else []

    def timing(self, timing: Mapping[str, Any]) -> list[Occurrence]:
        if timing.get("modifierExtension"):
            raise Unsupported("scheduledTiming has a modifierExtension Herald does not understand")
        events = array(timing.get("event"), "scheduledTiming.event")
        raw_repeat = timing.get("repeat")
        if events:
            repeat = None
            if raw_repeat is not None:
                path = "scheduledTiming.repeat"
                repeat = read_event_companions(raw_repeat, self.clock, path)
            return self.events(events, repeat)
        if raw_repeat is None:
            what = "only a code" if timing.get("code") is not None else "neither event nor repeat"
            raise Unsupported(f"scheduledTiming has {what}; Herald needs event or repeat")
        return self.repeat(read_repeat(raw_repeat, self.clock, "scheduledTiming.repeat"))

    def events(self, events: list[Any], repeat: Repeat | None) -> list[Occurrence]:
        """Timing.event: each dateTime as given; a date at the repeat's times, else midnight."""
        day_times = repeat.day_times if repeat and repeat.day_times else (timedelta(),)
        instants: set[datetime] = set()
        for i, raw in enumerate(events):
            value = date_time(raw, f"scheduledTiming.event[{i}]")
            if value.instant is not None:
                instants.add(value.instant)
            elif value.first != value.last:
                raise Unschedulable(f"scheduledTiming.event[{i}] needs a day, got {show(raw)}")
            else:
                day = midnight(value.first)
                instants.update(to_utc(day + t, self.zone) for t in day_times)
        inside = sorted(t for t in instants if self.start <= t < self.end)[: self.limit]
        return self.finish(inside, repeat.duration if repeat else None)

    def repeat(self, rule: Repeat) -> list[Occurrence]:
        start, until = self.bounds(rule.bounds)
        cadence = build_cadence(rule, start, self.zone, "scheduledTiming.repeat")
        instants = expand(
            cadence,
            start=start,
            until=until,
            count=rule.count,
            window_start=self.start,
            window_end=self.end,
            limit=self.limit,
            budget=self.budget,
        )
        return self.finish(instants, rule.duration)

    def bounds(self, bounds: Bounds | None) -> tuple[datetime, datetime | None]:
        """Where the schedule starts and (exclusive) stops: boundsPeriod, or the anchor plus
        boundsDuration / the high end of boundsRange; without bounds, the anchor and never."""
        path = "scheduledTiming.repeat.bounds"
        if bounds is None:
            return self.anchor, None
        if bounds.start is not None or bounds.end is not None:
            start = first_instant(bounds.start, self.zone) if bounds.start else self.anchor
            until = end_instant(bounds.end, self.zone) if bounds.end else None
            if bounds.start is not None and until is not None and until <= start:
                raise Unschedulable(f"{path}Period ends before it starts")
            return start, until
        until = self.after(bounds.length)
        shortest = self.after(bounds.shortest)
        if until is not None and shortest is not None and shortest > until:
            raise Unschedulable(f"{path}Range.low is longer than its high")
        return self.anchor, until

    def after(self, length: Span | None) -> datetime | None:
        return None if length is None else add_span(self.anchor, length, self.zone)

    def finish(self, starts: list[datetime], length: Span | None) -> list[Occurrence]:
        if length is None:
            return [Occurrence(start, None) for start in starts]
        return [Occurrence(start, add_span(start, length, self.zone)) for start in starts]
