"""Cadences: how a checked Timing.repeat recurs, as numbered cycles a window can jump into.

A cadence numbers its cycles from the schedule's start (cycle 0) and computes any cycle's
occurrences from its number alone. A window far in the future therefore jumps straight to its
cycles by arithmetic, and every window sees exactly the instants the whole schedule has.

- `Elapsed` (period in s, min, h): every period/frequency of elapsed time from the start.
- `DaySpread` (period in d or wk, no times of day): cycles of local wall-clock time from the
  start's local date and time; frequency > 1 spreads evenly across the cycle (BID -> 12 h apart).
- `Months` (period in mo or a): the start's day of the month (clamped to the month's last day),
  at the start's local time spread like `DaySpread`, or at the timeOfDay/when times.
- `DayPattern` (timeOfDay, when or dayOfWeek): local days (every period days, or the dayOfWeek
  days of every period-th week counted from the start date), each at the same local times;
  without timeOfDay/when those are the start's local time, spread if frequency asks for more.
  No period means every day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

from scheduler.timing.errors import Unschedulable, Unsupported
from scheduler.timing.repeat import Repeat
from scheduler.timing.wallclock import (
    CALENDAR_MONTHS,
    ELAPSED_SECONDS,
    MICROSECOND,
    add_months,
    as_timedelta,
    midnight,
    months_between,
    to_local,
    to_utc,
)

MIN_SPACING = timedelta(minutes=1)  # closer occurrences are refused: too dense for Tasks
DAY = timedelta(days=1)
_SLACK = 2 * DAY  # more than any daylight-saving shift


class Cadence(Protocol):
    """Numbered cycles; cycle `i` nominally spans [start of i, start of i + 1)."""

    @property
    def reach(self) -> timedelta:
        """How far an occurrence may fall outside its cycle's nominal span (times of day,
        offsets, daylight-saving shifts)."""
        ...

    def index_near(self, instant: datetime) -> int:
        """The cycle whose nominal span holds `instant`, give or take one."""
        ...

    def slots(self, index: int) -> list[datetime]:
        """Cycle `index`'s occurrences in UTC (any order; duplicates allowed)."""
        ...


@dataclass(frozen=True, slots=True)
class Elapsed:
    start: datetime
    period_us: int
    frequency: int

    @property
    def reach(self) -> timedelta:
        return MICROSECOND

    def index_near(self, instant: datetime) -> int:
        return (instant - self.start) // MICROSECOND * self.frequency // self.period_us

    def slots(self, index: int) -> list[datetime]:
        return [self.start + timedelta(microseconds=index * self.period_us // self.frequency)]


@dataclass(frozen=True, slots=True)
class DaySpread:
    start: datetime  # naive local
    cycle: timedelta
    steps: tuple[timedelta, ...]  # into each cycle: frequency steps of cycle / frequency
    zone: ZoneInfo

    @property
    def reach(self) -> timedelta:
        return _SLACK

    def index_near(self, instant: datetime) -> int:
        return (to_local(instant, self.zone) - self.start) // self.cycle

    def slots(self, index: int) -> list[datetime]:
        begin, zone = self.start + index * self.cycle, self.zone
        return [to_utc(begin + step, zone) for step in self.steps]


@dataclass(frozen=True, slots=True)
class Months:
    start: datetime  # naive local
    months: int
    frequency: int
    day_times: tuple[timedelta, ...]
    zone: ZoneInfo

    @property
    def reach(self) -> timedelta:
        return _SLACK + max((abs(t) for t in self.day_times), default=timedelta())

    def local(self, index: int) -> datetime:
        return add_months(self.start, index * self.months)

    def index_near(self, instant: datetime) -> int:
        return months_between(self.start, to_local(instant, self.zone)) // self.months

    def slots(self, index: int) -> list[datetime]:
        begin = self.local(index)
        if self.day_times:
            day = midnight(begin.date())
            return [to_utc(day + t, self.zone) for t in self.day_times]
        if self.frequency == 1:
            return [to_utc(begin, self.zone)]
        step = (self.local(index + 1) - begin) / self.frequency
        return [to_utc(begin + k * step, self.zone) for k in range(self.frequency)]


@dataclass(frozen=True, slots=True)
class DayPattern:
    start: date  # local date of the schedule's start
    cycle_days: int
    day_offsets: tuple[int, ...]  # days into each cycle that have occurrences
    day_times: tuple[timedelta, ...]  # since local midnight
    zone: ZoneInfo

    @property
    def reach(self) -> timedelta:
        return _SLACK + max(abs(t) for t in self.day_times)

    def index_near(self, instant: datetime) -> int:
        return (to_local(instant, self.zone).date() - self.start).days // self.cycle_days

    def slots(self, index: int) -> list[datetime]:
        first, zone = self.start.toordinal() + index * self.cycle_days, self.zone
        out: list[datetime] = []
        for offset in self.day_offsets:
            day = midnight(date.fromordinal(first + offset))
            out.extend(to_utc(day + t, zone) for t in self.day_times)
        return out


def build_cadence(rule: Repeat, start: datetime, zone: ZoneInfo, path: str) -> Cadence:
    """The cadence of `rule` from `start` (an aware instant), or Unschedulable."""
    unit = rule.period.unit if rule.period else None
    value = rule.period.value if rule.period else Decimal(1)
    if unit in ELAPSED_SECONDS:
        if rule.day_of_week or rule.day_times:
            raise Unsupported(
                f"{path}: a period in {unit} cannot be combined with timeOfDay, when or"
                " dayOfWeek; use a period in d or wk"
            )
        period_us = as_timedelta(value, unit) // MICROSECOND
        frequency = rule.frequency or 1
        _check_spacing(timedelta(microseconds=period_us // frequency), path)
        return Elapsed(start, period_us, frequency)
    local = to_local(start, zone)
    if unit in CALENDAR_MONTHS:
        if rule.day_of_week:
            raise Unsupported(
                f"{path}: dayOfWeek with a period in {unit} is ambiguous (which week of the"
                " month?); use a period in wk"
            )
        months = int(value) * CALENDAR_MONTHS[unit]
        if rule.day_times:
            _check_times(rule, rule.day_times, len(rule.day_times), path)
            return Months(local, months, 1, rule.day_times, zone)
        frequency = rule.frequency or 1
        _check_spacing(timedelta(days=28 * months) / frequency, path)
        return Months(local, months, frequency, (), zone)
    if rule.day_of_week or rule.day_times:
        return _day_pattern(rule, local, zone, path)
    if unit is None:
        raise Unsupported(
            f"{path} says neither how often (period and periodUnit) nor when (timeOfDay, when,"
            " dayOfWeek)"
        )
    cycle, frequency = as_timedelta(value, unit), rule.frequency or 1
    _check_spacing(cycle / frequency, path)
    return DaySpread(local, cycle, tuple(k * (cycle / frequency) for k in range(frequency)), zone)


def _day_pattern(rule: Repeat, local: datetime, zone: ZoneInfo, path: str) -> DayPattern:
    weeks = rule.period is not None and rule.period.unit == "wk"
    value = rule.period.value if rule.period else Decimal(1)
    if value != value.to_integral_value():
        raise Unsupported(
            f"{path}.period must be a whole number of days or weeks with timeOfDay, when or"
            f" dayOfWeek, got {value}"
        )
    if rule.day_of_week and not weeks and value != 1:
        raise Unsupported(f"{path}: dayOfWeek with a period of {value} days is ambiguous")
    cycle_days = int(value) * 7 if weeks else int(value)
    offsets: tuple[int, ...] = (0,)
    if rule.day_of_week:
        cycle_days = max(cycle_days, 7)
        weekday = local.weekday()
        offsets = tuple(j for j in range(7) if (weekday + j) % 7 in rule.day_of_week)
    days_per_period = len(offsets) if weeks else 1
    times = rule.day_times
    if times:
        _check_times(rule, times, len(times) * days_per_period, path)
    else:
        frequency = rule.frequency or days_per_period
        per_day, rest = divmod(frequency, days_per_period)
        if rest or not per_day:
            raise Unsupported(
                f"{path}.frequency {frequency} per week does not divide over the"
                f" {days_per_period} days of dayOfWeek; give timeOfDay or a matching frequency"
            )
        _check_spacing(DAY / per_day, path)
        first = local - midnight(local.date())
        times = tuple(first + k * (DAY / per_day) for k in range(per_day))
    return DayPattern(local.date(), cycle_days, offsets, times, zone)


def _check_times(rule: Repeat, times: tuple[timedelta, ...], per_period: int, path: str) -> None:
    """Explicit times of day: frequency (if given) must agree, and no two under a minute apart."""
    if rule.frequency is not None and rule.frequency != per_period:
        raise Unschedulable(
            f"{path}.frequency is {rule.frequency} but timeOfDay/when/dayOfWeek give"
            f" {per_period} per period; make them agree"
        )
    clock = sorted({t % DAY for t in times})
    if len(clock) > 1:
        for earlier, later in zip(clock, (*clock[1:], clock[0] + DAY), strict=True):
            _check_spacing(later - earlier, path)


def _check_spacing(spacing: timedelta, path: str) -> None:
    if spacing < MIN_SPACING:
        raise Unschedulable(
            f"{path} repeats less than {MIN_SPACING.seconds // 60} minute apart ({spacing}),"
            " too often to materialise as Tasks"
        )
