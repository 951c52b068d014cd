"""Walking a cadence: the occurrences inside a window, honouring bounds, count and a limit.

Without a count, the walk starts at the cycle just before the window (computed, not walked to).
With a count it starts at the schedule's first cycle, because count is the number of
repetitions of the whole schedule: a window late in the schedule still ends at the count-th.
Either way a window's occurrences are exactly the whole schedule's occurrences inside it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler.timing.cadence import Cadence
from scheduler.timing.wallclock import MICROSECOND

END_OF_TIME = datetime(9999, 1, 1, tzinfo=UTC)  # nothing is scheduled from here on


def expand(
    cadence: Cadence,
    *,
    start: datetime,
    until: datetime | None,
    count: int | None,
    window_start: datetime,
    window_end: datetime,
    limit: int,
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
        for instant in cadence.slots(index):
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
