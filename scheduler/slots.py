"""One reminder per occurrence: a day's reminders that already went out count against that day's
occurrences when the schedule, or the zone it is read in, changes.

A Task's occurrence is keyed by its instant, so a new time zone or a new time of day makes
occurrences with new Tasks while the Tasks that already went out (`ready`, then missed, or moved
on by a person) stay as history. Per CarePlan activity and local day (the date its
`executionPeriod.start` names), the Tasks that went out for occurrences the schedule no longer
has stand for the earliest of that day's occurrences that have no Task of their own yet, past
ones included (a short grace period leaves a morning dose behind the window by the afternoon):
those get none. So a day never has more reminders than the schedule has occurrences that day.

An occurrence that moved into the past before its Task went out is not lost: its new Task is
`ready` at once (as for any occurrence within the grace period). One that moved after its Task
went out does not go out again.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore import Store
from scheduler.bookkeeping import TaskRow
from scheduler.task import PlannedTask, TaskState, local_datetime

# States of a Task that went out as a reminder (`released`: a person moved it on).
WENT_OUT: frozenset[TaskState] = frozenset({"ready", "missed", "released"})
# How far apart the same day's occurrences can be in two zones (UTC-12 to UTC+14).
ZONES_APART = timedelta(hours=26)

Slot = tuple[str, str, str]  # CarePlan id, activity key, local date
# A CarePlan's (activity key, start) of occurrences from an instant up to the window.
Earlier = Callable[[datetime], frozenset[tuple[str, datetime]]]


async def without_spent_slots(
    conn: AsyncConnection,
    wanted: Mapping[str, PlannedTask],
    rows: Iterable[TaskRow],
    zones: Mapping[str, str],
    *,
    since: datetime,
    earlier: Mapping[str, Earlier],
) -> dict[str, PlannedTask]:
    """`wanted` less the new Tasks whose day's reminders already went out (module docstring).

    `rows` are the CarePlans' Task rows from a day before the window (`since`) on; `zones` the
    IANA zone each CarePlan is planned in now; `earlier` each CarePlan's occurrences from an
    instant up to the window (`Plan.earlier`), asked only of a CarePlan with a reminder before
    the window. A Task is new when it has no row, or one cancelled as `unscheduled` (it never
    went out). A reminder stands for its own occurrence while the schedule has it; otherwise
    for the earliest occurrence of its day without a Task, which may be before the window.
    """
    by_id = {r.task_id: r for r in rows}
    fresh = [t for t in wanted.values() if t.id not in by_id or by_id[t.id].state == "unscheduled"]
    if not fresh:
        return dict(wanted)
    spans: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for task in fresh:
        key = (task.careplan_id, task.activity)
        low, high = spans.get(key, (task.start, task.start))
        spans[key] = (min(low, task.start), max(high, task.start))
    near = [
        r
        for r in by_id.values()
        if r.task_id not in wanted and r.state in WENT_OUT and _near(r, spans)
    ]
    if not near:
        return dict(wanted)
    before = {
        careplan_id: earlier[careplan_id](since - ZONES_APART)
        for careplan_id in {r.careplan_id for r in near if r.start < since}
    }
    # A reminder in the window not wanted there: its occurrence left the schedule.
    went_out = [
        r for r in near if r.start >= since or (r.activity, r.start) not in before[r.careplan_id]
    ]
    if not went_out:
        return dict(wanted)
    spent = Counter(await _slots(conn, went_out, zones))
    held = {
        (r.careplan_id, r.activity, r.start) for r in by_id.values() if r.state != "unscheduled"
    }
    days: dict[Slot, list[tuple[datetime, str | None]]] = defaultdict(list)
    for careplan_id, occurrences in before.items():
        for activity, start in occurrences:
            if (careplan_id, activity, start) not in held:
                days[_slot(careplan_id, activity, start, zones)].append((start, None))
    for task in fresh:
        days[_slot(task.careplan_id, task.activity, task.start, zones)].append(
            (task.start, task.id)
        )
    dropped: set[str] = set()
    for slot, taskless in days.items():
        taskless.sort(key=lambda occurrence: occurrence[0])
        dropped.update(i for _, i in taskless[: spent[slot]] if i is not None)
    return {i: t for i, t in wanted.items() if i not in dropped}


def _near(row: TaskRow, spans: Mapping[tuple[str, str], tuple[datetime, datetime]]) -> bool:
    span = spans.get((row.careplan_id, row.activity))
    return span is not None and span[0] - ZONES_APART <= row.start <= span[1] + ZONES_APART


async def _slots(
    conn: AsyncConnection, rows: list[TaskRow], zones: Mapping[str, str]
) -> list[Slot]:
    """The day each Task went out for: the date its executionPeriod.start names (the zone it
    was made in), else (deleted since) its start's date in the CarePlan's zone now."""
    current = await Store.current_in(conn, "Task", [r.task_id for r in rows])
    found: list[Slot] = []
    for row in rows:
        version = current.get(row.task_id)
        body = orjson.loads(version.body) if version is not None and version.body else {}
        start = (body.get("executionPeriod") or {}).get("start") if isinstance(body, dict) else None
        if isinstance(start, str) and len(start) >= 10:
            found.append((row.careplan_id, row.activity, start[:10]))
        else:
            found.append(_slot(row.careplan_id, row.activity, row.start, zones))
    return found


def _slot(careplan_id: str, activity: str, start: datetime, zones: Mapping[str, str]) -> Slot:
    return (careplan_id, activity, local_datetime(start, ZoneInfo(zones[careplan_id]))[:10])
