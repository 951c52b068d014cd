"""Walking a cadence: the occurrences inside a window, honouring bounds, count and a limit.

Without a count, the walk starts at the cycle just before the window (computed, not walked to).
With a count it starts at the schedule's first cycle, because count is the number of
repetitions of the whole schedule: a window late in the schedule still ends at the count-th.
Either way a window's occurrences are exactly the whole schedule's occurrences inside it.

A walk costs one step per occurrence computed, so a count of 100,000 that started long ago
costs 100,000 steps. A caller that evaluates schedules it was handed (a CarePlan's activities,
at write time or when reconciling) passes a `Budget` they share; a walk that would spend more
than is left raises Unschedulable, instead of holding up everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from scheduler.timing.cadence import Cadence
from scheduler.timing.errors import Unschedulable
from scheduler.timing.wallclock import MICROSECOND

END_OF_TIME = datetime(9999, 1, 1, tzinfo=UTC)  # nothing is scheduled from here on


@dataclass(slots=True)
class Budget:
    """Steps (occurrences computed) the walks sharing it may still take."""

    remaining: int

    def spend(self, steps: int) -> None:
        self.remaining -= steps
        if self.remaining < 0:
            raise Unschedulable(
                "its schedules take too long to evaluate: a count of repetitions that began"
                " long before now (Herald walks them from the start); give a smaller count or a"
                " boundsPeriod that starts nearer now"
            )


def expand(
    cadence: Cadence,
    *,
    start: datetime,
    until: datetime | None,
    count: int | None,
    window_start: datetime,
    window_end: datetime,
    limit: int,
    budget: Budget | None = None,
) -> list[datetime]:
    """Sorted distinct instants `i` with start <= i < until and window_start <= i < window_end,
    among the first `count` of the schedule; at most `limit` of them (the earliest)."""
    lower = max(window_start, start)
    horizon = min(window_end, until or END_OF_TIME, END_OF_TIME)  # exclusive
    if lower >= horizon:
        return []
    keep_from = start if count is not None else lower
    index = 0 if count is not None else max(0, cadence.index_near(lower - cadence.reach) - 1)
    last = cadence.index_near(horizon + cadence.reach) + 1
    kept: list[datetime] = []
    inside = 0  # kept instants inside the window (duplicates included)
    while index <= last:
        slots = cadence.slots(index)
        if budget is not None:
            budget.spend(len(slots))
        for instant in slots:
            if keep_from <= instant < horizon:
                kept.append(instant)
                inside += instant >= window_start
        index += 1
        cut = horizon
        if count is not None and len(kept) >= count:
            kept = sorted(set(kept))[:count]
            if len(kept) == count:
                cut = min(cut, kept[-1] + MICROSECOND)
        if inside >= limit:
            in_window = sorted({instant for instant in kept if instant >= window_start})
            inside = len(in_window)
            if inside >= limit:
                cut = min(cut, in_window[limit - 1] + MICROSECOND)
        if cut < horizon:
            horizon = cut
            last = min(last, cadence.index_near(horizon + cadence.reach) + 1)
    result = sorted(set(kept))
    if count is not None:
        result = result[:count]
    return [instant for instant in result if instant >= window_start][:limit]
