"""Wall-clock time in the patient's zone: local <-> UTC, and adding lengths of time.

Times of day and lengths in d, wk, mo, a are local wall-clock arithmetic, so a 09:00 dose stays
at 09:00 across daylight-saving changes; lengths in s, min, h are elapsed (UTC) time. A local
time that does not exist (the spring-forward gap) happens later by the size of the gap (02:30 ->
03:30 in Europe/Berlin); one that happens twice (fall back) resolves to the first (fold=0).
A month later than the 31st is the last day of a shorter month (Jan 31 -> Feb 28 -> Mar 31:
always counted from the original day, never from the clamped one).
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from scheduler.timing.primitives import DateTime, Span

ELAPSED_SECONDS = {"s": 1, "min": 60, "h": 3600}
CALENDAR_DAYS = {"d": 1, "wk": 7}
CALENDAR_MONTHS = {"mo": 1, "a": 12}
MICROSECOND = timedelta(microseconds=1)
_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LOCAL_EPOCH = datetime(1970, 1, 1)


def to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    """The instant of a naive local wall-clock time in `zone` (gap: later; ambiguous: first).

    The offset in force just before a gap or a repeated hour is the fold=0 one, so subtracting
    it moves a missing time later by the gap and picks the first of a repeated one. (Plain
    arithmetic from an epoch: several times faster than replace(tzinfo=...).astimezone(UTC).)
    """
    if local.fold:
        local = local.replace(fold=0)
    offset = zone.utcoffset(local)
    assert offset is not None  # a ZoneInfo has an offset for every wall-clock time
    return _UTC_EPOCH + (local - _LOCAL_EPOCH - offset)


def to_local(instant: datetime, zone: ZoneInfo) -> datetime:
    """The naive local wall-clock time of an aware instant in `zone`."""
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time())


def add_months(local: datetime, months: int, day: int | None = None) -> datetime:
    """`months` calendar months after `local`, on `day` (default its own) or the month's last."""
    year, month = divmod(local.year * 12 + local.month - 1 + months, 12)
    if not 1 <= year <= 9999:
        raise OverflowError("date out of range")
    last = calendar.monthrange(year, month + 1)[1]
    return local.replace(year=year, month=month + 1, day=min(day or local.day, last))


def months_between(earlier: datetime, later: datetime) -> int:
    """Whole calendar months from `earlier`'s month to `later`'s month (days ignored)."""
    return (later.year - earlier.year) * 12 + later.month - earlier.month


def as_timedelta(value: Decimal, unit: str) -> timedelta:
    """A length in s, min, h, d or wk as a timedelta (to the microsecond, rounded down)."""
    seconds = ELAPSED_SECONDS.get(unit) or CALENDAR_DAYS[unit] * 86_400
    return timedelta(microseconds=int(value * seconds * 1_000_000))


def add_span(instant: datetime, length: Span, zone: ZoneInfo) -> datetime:
    """`length` after `instant`: elapsed for s, min, h; on the local calendar otherwise."""
    if length.unit in ELAPSED_SECONDS:
        return instant + as_timedelta(length.value, length.unit)
    local = to_local(instant, zone)
    if length.unit in CALENDAR_DAYS:
        return to_utc(local + as_timedelta(length.value, length.unit), zone)
    return to_utc(add_months(local, int(length.value) * CALENDAR_MONTHS[length.unit]), zone)


def first_instant(value: DateTime, zone: ZoneInfo) -> datetime:
    """Where a dateTime starts: its instant, or local midnight of its first day."""
    return value.instant if value.instant is not None else to_utc(midnight(value.first), zone)


def end_instant(value: DateTime, zone: ZoneInfo) -> datetime:
    """Just after a dateTime ends (exclusive): its instant + 1 µs, or midnight after its last day.

    So an end such as 2025-03-31 includes the whole of that day, as a FHIR Period end does.
    """
    if value.instant is not None:
        return value.instant + MICROSECOND
    return to_utc(midnight(value.last + timedelta(days=1)), zone)
