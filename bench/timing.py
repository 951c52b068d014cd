"""Timing engine: occurrences per second of `scheduler.timing.occurrences` for common schedules.

Each row calls `occurrences` over and over for `--seconds` on one CarePlan activity detail in
Europe/Berlin (so the year's window crosses both daylight-saving changes) and reports how many
occurrences per second it materialises and the µs each one costs. The baseline, measured in
the same process, is the least any wall-clock daily schedule must do: a bare loop that adds
timedelta(days=1) to an aware local datetime and converts each to UTC. The ratio column is the
row's rate over the baseline's (1.00x: as fast as the bare loop).

The last row asks for one month 70 years after the anchor: without a count the engine computes
where the window starts instead of walking there, so its cost is per call, not per day skipped.
Run: `python -m bench.timing [--seconds 1.0]`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rich.table import Table

from bench.harness import console, progress, rate, ratio
from scheduler.timing import occurrences

ZONE = ZoneInfo("Europe/Berlin")
ANCHOR = datetime(2025, 1, 1, 9, 0, tzinfo=ZONE)
YEAR = timedelta(days=365)


@dataclass(frozen=True)
class Case:
    name: str
    repeat: dict[str, Any]
    window_start: datetime = ANCHOR
    window: timedelta = YEAR


CASES = [
    Case("daily, for a year", {"frequency": 1, "period": 1, "periodUnit": "d"}),
    Case(
        "twice daily at 08:00 and 20:00",
        {"frequency": 2, "period": 1, "periodUnit": "d", "timeOfDay": ["08:00:00", "20:00:00"]},
    ),
    Case(
        "weekly, mon/wed/fri at 09:00",
        {
            "frequency": 3,
            "period": 1,
            "periodUnit": "wk",
            "dayOfWeek": ["mon", "wed", "fri"],
            "timeOfDay": ["09:00:00"],
        },
    ),
    Case(
        "monthly, for ten years",
        {"frequency": 1, "period": 1, "periodUnit": "mo"},
        window=10 * YEAR,
    ),
    Case("every 8 h (elapsed)", {"frequency": 1, "period": 8, "periodUnit": "h"}),
    Case(
        "daily, one month 70 years out",
        {"timeOfDay": ["09:00:00"]},
        window_start=ANCHOR + 70 * YEAR,
        window=timedelta(days=30),
    ),
]


@dataclass(frozen=True)
class Measured:
    per_call: int
    calls: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.per_call * self.calls / self.seconds

    @property
    def micros_each(self) -> float:
        return self.seconds / (self.per_call * self.calls) * 1e6


def measure(call: Callable[[], int], seconds: float) -> Measured:
    """Calls `call` (which returns how many occurrences it made) until `seconds` have passed."""
    per_call, calls, began = call(), 0, time.perf_counter()  # the first call warms up
    while True:
        call()
        calls += 1
        if (elapsed := time.perf_counter() - began) >= seconds:
            return Measured(per_call, calls, elapsed)


def engine(case: Case) -> Callable[[], int]:
    detail = {"scheduledTiming": {"repeat": case.repeat}}
    end = case.window_start + case.window

    def call() -> int:
        return len(
            occurrences(
                detail, zone=ZONE, anchor=ANCHOR, window_start=case.window_start, window_end=end
            )
        )

    return call


def baseline(days: int = 365) -> Callable[[], int]:
    def call() -> int:
        local, step, out = ANCHOR, timedelta(days=1), []
        for _ in range(days):
            out.append(local.astimezone(UTC))
            local += step
        return len(out)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time spent on each row")
    args = parser.parse_args()

    rows: list[tuple[str, str, Measured]] = []
    with progress() as bar:
        task = bar.add_task("timing", total=len(CASES) + 1)
        base = measure(baseline(), args.seconds)
        bar.advance(task)
        for case in CASES:
            rows.append((case.name, f"{case.window.days} d", measure(engine(case), args.seconds)))
            bar.advance(task)

    table = Table(title="Timing engine: occurrences per second (Europe/Berlin, one process)")
    for column in ("schedule", "window", "per call", "occurrences/s", "µs each", "vs baseline"):
        table.add_column(column, justify="left" if column == "schedule" else "right")
    table.add_row(
        "baseline: aware datetime + 1 day, to UTC",
        "365 d",
        str(base.per_call),
        rate(base.per_second),
        f"{base.micros_each:.2f}",
        "1.00x",
    )
    for name, window, row in rows:
        table.add_row(
            name,
            window,
            str(row.per_call),
            rate(row.per_second),
            f"{row.micros_each:.2f}",
            ratio(row.per_second, base.per_second),
        )
    console.print(table)


if __name__ == "__main__":
    main()
