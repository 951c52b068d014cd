"""Properties of the Timing engine over generated schedules, zones, anchors and windows.

Whatever the schedule: occurrences are sorted and distinct, inside the window and the bounds,
never more than count, the same whichever way the window is cut, and junk input either
schedules or is refused with Unschedulable, never another exception.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.timing import Unschedulable, occurrences

ZONES = [
    ZoneInfo(name)
    for name in ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata")
]
BASE = datetime(2024, 1, 1, tzinfo=UTC)
# Anchors within 2024-2026: two spring and two autumn changes in each of the zones.
anchors = st.integers(0, 3 * 365 * 24 * 4).map(
    lambda quarter_hours: BASE + timedelta(minutes=15 * quarter_hours)
)
clock_times = st.builds(
    lambda h, m, s: f"{h:02d}:{m:02d}:{s:02d}",
    st.integers(0, 23),
    st.sampled_from([0, 15, 30, 59]),
    st.sampled_from([0, 30]),
)
days = st.lists(
    st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
    min_size=1,
    max_size=4,
    unique=True,
)
when_codes = st.lists(
    st.sampled_from(["MORN", "NOON", "EVE", "NIGHT", "HS", "WAKE", "ACM", "PCD", "CV"]),
    min_size=1,
    max_size=3,
    unique=True,
)


def _day_pattern(draw: st.DrawFn) -> dict[str, Any]:
    repeat: dict[str, Any] = {}
    if draw(st.booleans()):
        repeat["timeOfDay"] = draw(st.lists(clock_times, min_size=1, max_size=3, unique=True))
    else:
        codes = draw(when_codes)
        repeat["when"] = codes
        if "CV" not in codes and draw(st.booleans()):
            repeat["offset"] = draw(st.integers(0, 90))
    unit = draw(st.sampled_from([None, "d", "wk"]))
    if unit == "wk" or (unit is None and draw(st.booleans())):
        repeat["dayOfWeek"] = draw(days)
    if unit is not None:
        repeat["period"] = 1 if "dayOfWeek" in repeat and unit == "d" else draw(st.integers(1, 3))
        repeat["periodUnit"] = unit
    return repeat


@st.composite
def repeats(draw: st.DrawFn) -> dict[str, Any]:
    """A valid Timing.repeat of one of the engine's shapes, with optional bounds and count."""
    shape = draw(st.sampled_from(["elapsed", "spread", "months", "pattern"]))
    if shape == "elapsed":
        unit = draw(st.sampled_from(["h", "min"]))
        period = draw(st.integers(1, 12)) if unit == "h" else draw(st.integers(20, 600))
        repeat = {"frequency": draw(st.integers(1, 3)), "period": period, "periodUnit": unit}
    elif shape == "spread":
        unit = draw(st.sampled_from(["d", "wk"]))
        period = (
            draw(st.sampled_from([1, 2, 3, 0.5, 1.5])) if unit == "d" else draw(st.integers(1, 2))
        )
        repeat = {"frequency": draw(st.integers(1, 4)), "period": period, "periodUnit": unit}
    elif shape == "months":
        repeat = {
            "period": draw(st.integers(1, 3)),
            "periodUnit": draw(st.sampled_from(["mo", "a"])),
        }
        if draw(st.booleans()):
            repeat["timeOfDay"] = draw(st.lists(clock_times, min_size=1, max_size=2, unique=True))
        else:
            repeat["frequency"] = draw(st.integers(1, 2))
    else:
        repeat = _day_pattern(draw)
    bounds = draw(st.sampled_from([None, "period", "duration", "range"]))
    if bounds == "period":
        start = draw(anchors)
        end = start + timedelta(hours=draw(st.integers(1, 24 * 200)))
        repeat["boundsPeriod"] = {
            "start": _fhir(start),
            "end": _fhir(end) if draw(st.booleans()) else None,
        }
    elif bounds == "duration":
        repeat["boundsDuration"] = {
            "value": draw(st.integers(0, 90)),
            "code": draw(st.sampled_from(["d", "wk", "h"])),
        }
    elif bounds == "range":
        repeat["boundsRange"] = {
            "low": {"value": 1, "code": "d"},
            "high": {"value": draw(st.integers(1, 60)), "code": "d"},
        }
    if draw(st.booleans()):
        repeat["count"] = draw(st.integers(1, 60))
    if draw(st.booleans()):
        repeat["duration"], repeat["durationUnit"] = draw(st.integers(0, 120)), "min"
    return repeat


def _fhir(instant: datetime) -> str:
    return instant.isoformat()


def _run(
    timing: dict[str, Any], zone: ZoneInfo, anchor: datetime, start: datetime, end: datetime
) -> list[datetime]:
    detail = {"scheduledTiming": {"repeat": timing}}
    found = occurrences(
        detail, zone=zone, anchor=anchor, window_start=start, window_end=end, limit=10**6
    )
    return [o.start for o in found]


@settings(max_examples=250, deadline=None)
@given(
    timing=repeats(),
    zone=st.sampled_from(ZONES),
    anchor=anchors,
    offset_hours=st.integers(-24 * 30, 24 * 200),
    length_hours=st.integers(0, 24 * 30),
    cut=st.floats(0, 1),
)
def test_windows_are_consistent_cuts_of_one_schedule(
    timing: dict[str, Any],
    zone: ZoneInfo,
    anchor: datetime,
    offset_hours: int,
    length_hours: int,
    cut: float,
) -> None:
    start = anchor + timedelta(hours=offset_hours)
    end = start + timedelta(hours=length_hours)
    middle = start + (end - start) * cut
    try:
        whole = _run(timing, zone, anchor, start, end)
    except Unschedulable as error:  # only combinations the engine documents as refused
        assert "apart" in error.reason or "frequency" in error.reason, error.reason
        return
    assert whole == sorted(set(whole))
    assert all(start <= instant < end for instant in whole)
    assert all(instant.utcoffset() == timedelta(0) for instant in whole)
    assert (
        _run(timing, zone, anchor, start, middle) + _run(timing, zone, anchor, middle, end) == whole
    )

    # The same instants as the schedule from its very beginning, cut to this window.
    first = min(anchor, start) - timedelta(days=1)
    everything = _run(timing, zone, anchor, first, end)
    assert whole == [instant for instant in everything if instant >= start]
    if "count" in timing:
        assert len(everything) <= timing["count"]
    if "boundsPeriod" in timing:
        bounds = timing["boundsPeriod"]
        assert all(instant >= datetime.fromisoformat(bounds["start"]) for instant in everything)
        if bounds["end"]:
            assert all(instant <= datetime.fromisoformat(bounds["end"]) for instant in everything)
    else:
        assert all(instant >= anchor for instant in everything)


# -- junk ----------------------------------------------------------------------------------------

ELEMENTS = [
    "frequency", "frequencyMax", "period", "periodMax", "periodUnit", "dayOfWeek", "timeOfDay",
    "when", "offset", "count", "countMax", "duration", "durationMax", "durationUnit",
    "boundsPeriod", "boundsDuration", "boundsRange",
]  # fmt: skip
plausible = st.one_of(
    st.integers(-3, 30),
    st.sampled_from([0.5, 1.5, -1.0, 1e308, float("nan"), 2**40, True]),
    st.sampled_from(
        ["s", "min", "h", "d", "wk", "mo", "a", "mon", "MORN", "AC", "08:00:00", "25:00:00"]
    ),
    st.sampled_from(
        ["2025-03-30", "2025-03-30T02:30:00+01:00", "2025-13-01", "9999-12-31", "0001-01-01"]
    ),
    st.text(max_size=12),
    st.none(),
)
json_values = st.recursive(
    plausible,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["start", "end", "value", "code", "unit", "low", "high", "system"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=8,
)
junk_repeats = st.dictionaries(st.sampled_from(ELEMENTS), json_values, max_size=6)
junk_details = st.one_of(
    st.builds(lambda r: {"scheduledTiming": {"repeat": r}}, junk_repeats),
    st.builds(
        lambda e, r: {"scheduledTiming": {"event": e, "repeat": r}}, json_values, junk_repeats
    ),
    st.dictionaries(
        st.sampled_from(["scheduledTiming", "scheduledPeriod", "scheduledString"]),
        json_values,
        max_size=2,
    ),
    json_values,
)


@settings(max_examples=400, deadline=None)
@given(detail=junk_details, zone=st.sampled_from(ZONES), anchor=anchors)
def test_junk_either_schedules_or_is_unschedulable(
    detail: Any, zone: ZoneInfo, anchor: datetime
) -> None:
    try:
        found = occurrences(
            detail,
            zone=zone,
            anchor=anchor,
            window_start=anchor,
            window_end=anchor + timedelta(days=20),
        )
    except Unschedulable as error:
        assert error.reason
    else:
        assert isinstance(found, list)
