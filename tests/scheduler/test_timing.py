"""The Timing engine by example: what a patient's reminders look like for common FHIR schedules.

Times are written as the patient's local wall-clock time ("2025-03-30 09:00"), which is what a
patient would notice; the engine returns UTC instants.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from scheduler.timing import MAX_OCCURRENCES, Occurrence, Unschedulable, WhenClock, occurrences

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
MONDAY = datetime(2025, 1, 6, 9, 0, tzinfo=BERLIN)  # anchor: Monday 6 January 2025, 09:00


def due(
    detail: dict[str, Any],
    *,
    days: float = 7,
    anchor: datetime = MONDAY,
    zone: ZoneInfo = BERLIN,
    start: datetime | None = None,
    **options: Any,
) -> list[str]:
    """Local start times in the window [start (default anchor), + days); the days are wall-clock
    days, as Python adds them to an aware datetime."""
    return [
        local(o.start, zone)
        for o in run(detail, days=days, anchor=anchor, zone=zone, start=start, **options)
    ]


def run(
    detail: dict[str, Any],
    *,
    days: float = 7,
    anchor: datetime = MONDAY,
    zone: ZoneInfo = BERLIN,
    start: datetime | None = None,
    **options: Any,
) -> list[Occurrence]:
    window_start = start or anchor
    return occurrences(
        detail,
        zone=zone,
        anchor=anchor,
        window_start=window_start,
        window_end=window_start + timedelta(days=days),
        **options,
    )


def local(instant: datetime, zone: ZoneInfo = BERLIN) -> str:
    return instant.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def repeat(**elements: Any) -> dict[str, Any]:
    return {"scheduledTiming": {"repeat": elements}}


def refused(detail: Any, **options: Any) -> str:
    with pytest.raises(Unschedulable) as caught:
        run(detail, **options)
    return caught.value.reason


DAILY = {"frequency": 1, "period": 1, "periodUnit": "d"}


# -- common schedules ----------------------------------------------------------------------------


def test_daily_starts_at_the_anchor_and_keeps_its_time_of_day() -> None:
    assert due(repeat(**DAILY), days=3) == [
        "2025-01-06 09:00",
        "2025-01-07 09:00",
        "2025-01-08 09:00",
    ]


def test_twice_daily_at_times_of_day() -> None:
    detail = repeat(**(DAILY | {"frequency": 2}), timeOfDay=["20:00:00", "08:00:00"])
    assert due(detail, days=1.5) == ["2025-01-06 20:00", "2025-01-07 08:00", "2025-01-07 20:00"]


def test_weekly_on_days_of_week() -> None:
    detail = repeat(
        frequency=3,
        period=1,
        periodUnit="wk",
        dayOfWeek=["mon", "wed", "fri"],
        timeOfDay=["10:00:00"],
    )
    assert due(detail, days=14) == [
        "2025-01-06 10:00",
        "2025-01-08 10:00",
        "2025-01-10 10:00",
        "2025-01-13 10:00",
        "2025-01-15 10:00",
        "2025-01-17 10:00",
    ]


def test_every_other_monday_counts_weeks_from_the_start() -> None:
    wednesday = datetime(2025, 1, 8, 12, 0, tzinfo=BERLIN)
    detail = repeat(
        frequency=1, period=2, periodUnit="wk", dayOfWeek=["mon"], timeOfDay=["09:00:00"]
    )
    assert due(detail, anchor=wednesday, days=40) == [
        "2025-01-13 09:00",
        "2025-01-27 09:00",
        "2025-02-10 09:00",
    ]


def test_monthly_on_the_31st_clamps_to_the_end_of_shorter_months() -> None:
    anchor = datetime(2025, 1, 31, 9, 0, tzinfo=BERLIN)
    detail = repeat(frequency=1, period=1, periodUnit="mo")
    assert due(detail, anchor=anchor, days=100) == [
        "2025-01-31 09:00",
        "2025-02-28 09:00",
        "2025-03-31 09:00",
        "2025-04-30 09:00",
    ]


def test_monthly_at_a_time_of_day() -> None:
    detail = repeat(period=1, periodUnit="mo", timeOfDay=["18:30:00"])
    assert due(detail, days=70) == ["2025-01-06 18:30", "2025-02-06 18:30", "2025-03-06 18:30"]


def test_frequency_without_times_spreads_evenly_from_the_start_time() -> None:
    detail = repeat(frequency=3, period=1, periodUnit="d")
    assert due(detail, days=1) == ["2025-01-06 09:00", "2025-01-06 17:00", "2025-01-07 01:00"]


def test_implied_daily_when_only_times_of_day_are_given() -> None:
    assert due(repeat(timeOfDay=["12:00:00"]), days=2) == ["2025-01-06 12:00", "2025-01-07 12:00"]


def test_max_elements_are_tolerance_the_base_values_are_materialised() -> None:
    every_four_to_six_hours = repeat(frequency=1, period=4, periodMax=6, periodUnit="h")
    assert due(every_four_to_six_hours, days=0.5) == [
        "2025-01-06 09:00",
        "2025-01-06 13:00",
        "2025-01-06 17:00",
    ]
    once_or_twice_a_day = repeat(frequency=1, frequencyMax=2, period=1, periodUnit="d")
    assert len(due(once_or_twice_a_day, days=3)) == 3


def test_yearly_on_29_february_falls_on_28_february_in_other_years() -> None:
    anchor = datetime(2024, 2, 29, 9, 0, tzinfo=BERLIN)
    detail = repeat(frequency=1, period=1, periodUnit="a")
    assert due(detail, anchor=anchor, days=2 * 366 + 1) == [
        "2024-02-29 09:00",
        "2025-02-28 09:00",
        "2026-02-28 09:00",
    ]


def test_half_a_day_is_twelve_hours_of_wall_clock() -> None:
    anchor = datetime(2025, 3, 29, 21, 0, tzinfo=BERLIN)
    detail = repeat(frequency=1, period=0.5, periodUnit="d")
    assert due(detail, anchor=anchor, days=1.25) == [
        "2025-03-29 21:00",
        "2025-03-30 09:00",
        "2025-03-30 21:00",
    ]


# -- when, offset and the configurable clock -----------------------------------------------------


def test_when_morning_and_evening_use_the_default_clock() -> None:
    detail = repeat(frequency=2, period=1, periodUnit="d", when=["MORN", "EVE"])
    assert due(detail, days=1.5) == ["2025-01-06 18:00", "2025-01-07 08:00", "2025-01-07 18:00"]


def test_offset_is_before_meals_for_ac_and_after_for_pc() -> None:
    before = repeat(frequency=3, period=1, periodUnit="d", when=["AC"], offset=30)
    assert due(before, days=1) == ["2025-01-06 12:30", "2025-01-06 18:30", "2025-01-07 07:30"]
    after = repeat(when=["PCV"], offset=60)
    assert due(after, days=1) == ["2025-01-06 20:00"]
    bedtime = repeat(when=["HS"], offset=15)
    assert due(bedtime, days=1) == ["2025-01-06 21:45"]


def test_a_configured_clock_moves_when_codes() -> None:
    clock = WhenClock.parse("CM=07:00, HS=23:30")
    detail = repeat(when=["ACM", "HS"], offset=10)
    assert due(detail, days=1, when=clock) == ["2025-01-06 23:20", "2025-01-07 06:50"]
    assert clock.times["MORN"] == WhenClock.default().times["MORN"] == time(8)


@pytest.mark.parametrize("text", ["MORN", "MORN=8", "BRUNCH=10:00", "MORN=25:00"])
def test_a_bad_clock_setting_is_a_configuration_error(text: str) -> None:
    with pytest.raises(ValueError):
        WhenClock.parse(text)


def test_once_a_day_before_an_unnamed_meal_is_refused_not_guessed() -> None:
    assert "frequency" in refused(repeat(frequency=1, period=1, periodUnit="d", when=["AC"]))


# -- bounds and count ----------------------------------------------------------------------------


def test_bounds_period_with_dates_includes_the_whole_end_day() -> None:
    detail = repeat(
        **DAILY, boundsPeriod={"start": "2025-01-07", "end": "2025-01-09"}, timeOfDay=["21:00:00"]
    )
    detail["scheduledTiming"]["repeat"].pop("frequency")
    assert due(detail, days=10) == ["2025-01-07 21:00", "2025-01-08 21:00", "2025-01-09 21:00"]


def test_bounds_period_start_replaces_the_anchor() -> None:
    detail = repeat(**DAILY, boundsPeriod={"start": "2025-01-08T07:15:00+01:00"})
    assert due(detail, days=4) == ["2025-01-08 07:15", "2025-01-09 07:15", "2025-01-10 07:15"]


def test_bounds_duration_counts_from_the_anchor() -> None:
    detail = repeat(
        **DAILY,
        boundsDuration={
            "value": 3,
            "unit": "days",
            "system": "http://unitsofmeasure.org",
            "code": "d",
        },
    )
    assert due(detail, days=10) == ["2025-01-06 09:00", "2025-01-07 09:00", "2025-01-08 09:00"]


def test_bounds_range_uses_its_high_end() -> None:
    detail = repeat(
        **DAILY, boundsRange={"low": {"value": 2, "code": "d"}, "high": {"value": 4, "code": "d"}}
    )
    assert len(due(detail, days=10)) == 4


def test_bounds_range_without_high_does_not_end() -> None:
    detail = repeat(**DAILY, boundsRange={"low": {"value": 2, "code": "d"}})
    assert len(due(detail, days=10)) == 10


def test_count_is_counted_from_the_start_not_from_the_window() -> None:
    detail = repeat(**DAILY, count=5)
    assert len(due(detail, days=30)) == 5
    later = MONDAY + timedelta(days=3)
    assert due(detail, start=later, days=30) == ["2025-01-09 09:00", "2025-01-10 09:00"]


def test_count_max_is_tolerance_count_is_materialised() -> None:
    assert len(due(repeat(**DAILY, count=3, countMax=5), days=30)) == 3


def test_bounds_and_count_stop_at_whichever_comes_first() -> None:
    detail = repeat(**DAILY, count=10, boundsDuration={"value": 2, "code": "d"})
    assert len(due(detail, days=30)) == 2


def test_a_window_far_in_the_future_keeps_the_wall_clock_time() -> None:
    far = datetime(2098, 7, 1, tzinfo=UTC)
    assert due(repeat(timeOfDay=["09:00:00"]), start=far, days=2) == [
        "2098-07-01 09:00",
        "2098-07-02 09:00",
    ]


# -- event, scheduledPeriod, scheduledString, duration -------------------------------------------


def test_events_with_times_and_dates() -> None:
    detail = {
        "scheduledTiming": {
            "event": ["2025-01-08T10:00:00Z", "2025-01-07", "2025-01-08T10:00:00Z", "2024-12-01"]
        }
    }
    assert due(detail) == ["2025-01-07 00:00", "2025-01-08 11:00"]


def test_event_dates_take_the_repeat_times_of_day() -> None:
    detail = {"scheduledTiming": {"event": ["2025-01-07"], "repeat": {"when": ["MORN", "NIGHT"]}}}
    assert due(detail) == ["2025-01-07 08:00", "2025-01-07 22:00"]


def test_events_take_the_repeat_duration() -> None:
    detail = {
        "scheduledTiming": {
            "event": ["2025-01-07T10:00:00Z"],
            "repeat": {"duration": 2, "durationUnit": "h"},
        }
    }
    [occurrence] = run(detail)
    assert occurrence.end == datetime(2025, 1, 7, 12, 0, tzinfo=UTC)


def test_event_with_a_recurring_repeat_is_ambiguous() -> None:
    detail = {"scheduledTiming": {"event": ["2025-01-07"], "repeat": DAILY}}
    assert "event" in refused(detail)


def test_scheduled_period_is_one_occurrence_at_its_start() -> None:
    detail = {"scheduledPeriod": {"start": "2025-01-07T14:00:00+01:00", "end": "2025-01-08"}}
    [occurrence] = run(detail)
    assert local(occurrence.start) == "2025-01-07 14:00"
    assert occurrence.end == datetime(2025, 1, 9, tzinfo=BERLIN)
    assert "start" in refused({"scheduledPeriod": {"end": "2025-01-08"}})


def test_scheduled_string_is_reported_never_guessed() -> None:
    assert "free text" in refused({"scheduledString": "twice a day with food"})


def test_duration_gives_the_end() -> None:
    [first, *_] = run(repeat(**DAILY, duration=30, durationUnit="min"))
    assert first.end is not None and first.end - first.start == timedelta(minutes=30)


def test_a_duration_in_days_is_wall_clock_across_dst() -> None:
    anchor = datetime(2025, 3, 29, 9, 0, tzinfo=BERLIN)
    [first, *_] = run(repeat(**DAILY, duration=1, durationUnit="d"), anchor=anchor)
    assert first.end is not None and local(first.end) == "2025-03-30 09:00"
    assert first.end - first.start == timedelta(hours=23)


# -- daylight saving -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "spring", "autumn"),
    [
        (BERLIN, datetime(2025, 3, 28), datetime(2025, 10, 24)),
        (NEW_YORK, datetime(2025, 3, 7), datetime(2025, 10, 31)),
    ],
)
def test_a_nine_o_clock_dose_stays_at_nine_local_across_dst(
    zone: ZoneInfo, spring: datetime, autumn: datetime
) -> None:
    for day in (spring, autumn):
        anchor = day.replace(hour=9, tzinfo=zone)
        starts = run(repeat(**DAILY), anchor=anchor, zone=zone, days=5)
        assert [local(o.start, zone)[11:] for o in starts] == ["09:00"] * 5
        assert len({o.start.utcoffset() for o in starts}) == 1  # all UTC
        assert len({o.start.astimezone(zone).utcoffset() for o in starts}) == 2  # the change


@pytest.mark.parametrize(
    ("zone", "anchor", "gap_day"),
    [(BERLIN, datetime(2025, 3, 29), "2025-03-30"), (NEW_YORK, datetime(2025, 3, 8), "2025-03-09")],
)
def test_a_time_in_the_spring_gap_moves_forward_by_the_gap(
    zone: ZoneInfo, anchor: datetime, gap_day: str
) -> None:
    starts = due(
        repeat(timeOfDay=["02:30:00"]), anchor=anchor.replace(tzinfo=zone), zone=zone, days=3
    )
    assert f"{gap_day} 03:30" in starts
    assert [s[11:] for s in starts] == ["02:30", "03:30", "02:30"]


@pytest.mark.parametrize(
    ("zone", "anchor", "clock", "expected_utc"),
    [
        (BERLIN, datetime(2025, 10, 25), "02:30:00", datetime(2025, 10, 26, 0, 30, tzinfo=UTC)),
        (NEW_YORK, datetime(2025, 11, 1), "01:30:00", datetime(2025, 11, 2, 5, 30, tzinfo=UTC)),
    ],
)
def test_an_ambiguous_fall_back_time_happens_once_the_first_time(
    zone: ZoneInfo, anchor: datetime, clock: str, expected_utc: datetime
) -> None:
    starts = [
        o.start
        for o in run(
            repeat(timeOfDay=[clock]), anchor=anchor.replace(tzinfo=zone), zone=zone, days=3
        )
    ]
    assert len(starts) == 3
    assert expected_utc in starts


def test_every_eight_hours_is_elapsed_time_across_dst() -> None:
    anchor = datetime(2025, 3, 29, 9, 0, tzinfo=BERLIN)
    starts = [
        o.start for o in run(repeat(frequency=1, period=8, periodUnit="h"), anchor=anchor, days=3)
    ]
    assert {b - a for a, b in pairwise(starts)} == {timedelta(hours=8)}
    assert local(starts[3]) == "2025-03-30 10:00"  # 09:00 + 24 h of elapsed time


# -- limits --------------------------------------------------------------------------------------


def test_more_than_the_limit_returns_the_earliest() -> None:
    detail = repeat(frequency=1, period=1, periodUnit="min")
    starts = run(detail, days=30)
    assert len(starts) == MAX_OCCURRENCES
    assert starts[0].start == MONDAY
    assert len(run(detail, days=30, limit=5)) == 5


def test_occurrences_less_than_a_minute_apart_are_refused() -> None:
    assert "minute" in refused(repeat(frequency=1, period=30, periodUnit="s"))
    assert "minute" in refused(repeat(frequency=2000, period=1, periodUnit="d"))


def test_a_naive_window_is_a_caller_error() -> None:
    with pytest.raises(ValueError):
        occurrences(
            repeat(**DAILY),
            zone=BERLIN,
            anchor=datetime(2025, 1, 1),
            window_start=MONDAY,
            window_end=MONDAY,
        )


# -- malformed or unsupported input --------------------------------------------------------------

BAD = {
    "no schedule": {},
    "two schedules": {"scheduledString": "daily", "scheduledPeriod": {"start": "2025-01-01"}},
    "timing not an object": {"scheduledTiming": ["daily"]},
    "code only": {"scheduledTiming": {"code": {"text": "BID"}}},
    "negative frequency": repeat(frequency=-1, period=1, periodUnit="d"),
    "zero frequency": repeat(frequency=0, period=1, periodUnit="d"),
    "fractional frequency": repeat(frequency=1.5, period=1, periodUnit="d"),
    "boolean frequency": repeat(frequency=True, period=1, periodUnit="d"),
    "string period": repeat(period="1", periodUnit="d"),
    "zero period": repeat(period=0, periodUnit="d"),
    "period without unit": repeat(period=1),
    "unknown period unit": repeat(period=1, periodUnit="day"),
    "periodMax below period": repeat(period=4, periodMax=2, periodUnit="h"),
    "frequencyMax below frequency": repeat(**DAILY, frequencyMax=0),
    "countMax without count": repeat(**DAILY, countMax=3),
    "count too large": repeat(**DAILY, count=10**6),
    "unknown when code": repeat(when=["BRUNCH"]),
    "when not an array": repeat(when="MORN"),
    "offset without when": repeat(timeOfDay=["08:00:00"], offset=10),
    "offset with a meal": repeat(when=["CM"], offset=10),
    "negative offset": repeat(when=["ACM"], offset=-10),
    "timeOfDay and when": repeat(timeOfDay=["08:00:00"], when=["MORN"]),
    "time without seconds": repeat(timeOfDay=["08:00"]),
    "impossible time": repeat(timeOfDay=["24:00:00"]),
    "unknown day of week": repeat(dayOfWeek=["monday"]),
    "dayOfWeek with months": repeat(period=1, periodUnit="mo", dayOfWeek=["mon"]),
    "times with hours": repeat(period=8, periodUnit="h", timeOfDay=["08:00:00"]),
    "fractional months": repeat(period=1.5, periodUnit="mo"),
    "nothing recurs": repeat(count=3),
    "frequency and times disagree": repeat(**DAILY, timeOfDay=["08:00:00", "20:00:00"]),
    "malformed bounds date": repeat(**DAILY, boundsPeriod={"start": "2025-13-01"}),
    "dateTime without offset": repeat(**DAILY, boundsPeriod={"start": "2025-01-01T09:00:00"}),
    "bounds end before start": repeat(
        **DAILY, boundsPeriod={"start": "2025-02-01", "end": "2025-01-01"}
    ),
    "two bounds": repeat(**DAILY, boundsDuration={"value": 1, "code": "d"}, boundsPeriod={}),
    "duration without unit": repeat(**DAILY, boundsDuration={"value": 1}),
    "duration in furlongs": repeat(**DAILY, boundsDuration={"value": 1, "code": "fur"}),
    "range low above high": repeat(
        **DAILY, boundsRange={"low": {"value": 5, "code": "d"}, "high": {"value": 1, "code": "d"}}
    ),
    "negative duration": repeat(**DAILY, duration=-5, durationUnit="min"),
    "event month only": {"scheduledTiming": {"event": ["2025-01"]}},
    "event not a string": {"scheduledTiming": {"event": [20250101]}},
    "modifier extension": {
        "scheduledTiming": {"modifierExtension": [{"url": "x"}], "repeat": DAILY}
    },
}


@pytest.mark.parametrize("detail", BAD.values(), ids=BAD.keys())
def test_bad_schedules_are_unschedulable_with_a_reason(detail: dict[str, Any]) -> None:
    reason = refused(detail, days=3)
    assert reason and len(reason) < 300


def test_a_schedule_that_is_not_an_object_is_unschedulable() -> None:
    assert refused(["scheduledTiming"])
