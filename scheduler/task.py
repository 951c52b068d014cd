"""The Tasks Herald makes for CarePlan occurrences: their identity, content and states.

A Task's id is derived from (CarePlan, activity, occurrence start), so writing it again never
makes a second one. Herald owns a Task while its status says Herald put it there:

| state | Task.status | Task.businessStatus |
|---|---|---|
| `requested` | requested | (none) |
| `ready` | ready | (none) |
| `missed` | cancelled | `missed` (not moved on within the grace period) |
| `unscheduled` | cancelled | `unscheduled` (no longer in the CarePlan's schedule) |

A second Task carrying the same occurrence identifier is cancelled with businessStatus
`duplicate` and left alone after that.

Any other status (in-progress, completed, a cancel by someone else, ...) means a person moved the
Task on: it is `released` and Herald never writes it again.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Any, Literal

from fhirstore.wire import BUSINESS_STATUS
from scheduler.policy import SchedulePolicy

TaskState = Literal["requested", "ready", "missed", "unscheduled", "released"]
OWNED: frozenset[TaskState] = frozenset({"requested", "ready", "missed", "unscheduled"})
# The elements Herald sets from the CarePlan (and the request an activity refers to); a
# different value on an owned Task is repaired.
MANAGED = (
    "identifier",
    "basedOn",
    "for",
    "focus",
    "code",
    "description",
    "executionPeriod",
    "input",
)
_TASK_IDS = uuid.UUID("5d3c1b8e-3f0a-4c55-9a52-6e2b8f0d7a11")  # namespace of Task ids
_REASONS = {
    "missed": "not started within the grace period after its scheduled time",
    "unscheduled": "no longer in the CarePlan's schedule",
    "duplicate": "another Task stands for the same CarePlan occurrence",
}


def occurrence_key(careplan_id: str, activity: str, start: datetime) -> str:
    moment = start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"CarePlan/{careplan_id}/activity/{activity}/{moment}"


def task_id(careplan_id: str, key: str) -> str:
    """A UUID (version 8: custom) whose first half names the CarePlan and second the occurrence.

    Both halves are SHA-1 digests (as in version 5), so a re-run gives the same id. A CarePlan's
    Tasks share the first half and sit side by side in every index keyed by id: writing them
    dirties one B-tree page where random ids dirtied one page per Task.
    """
    value = (_plan_half(careplan_id) | _digest(key) & _LOW_HALF) & ~_VERSION_AND_VARIANT | _V8
    return str(uuid.UUID(int=value))


@lru_cache(maxsize=1024)  # a batch's CarePlans, each asked once per Task
def _plan_half(careplan_id: str) -> int:
    return _digest(careplan_id) & ~_LOW_HALF


def _digest(name: str) -> int:
    return int.from_bytes(hashlib.sha1(_TASK_IDS.bytes + name.encode()).digest()[:16])


_LOW_HALF = (1 << 64) - 1
_VERSION_AND_VARIANT = 0xF << 76 | 0x3 << 62
_V8 = 0x8 << 76 | 0x2 << 62  # version 8, RFC 9562 variant


@lru_cache(maxsize=4096)  # patients share zones and times of day; a batch shares `now`
def local_datetime(moment: datetime, zone: tzinfo) -> str:
    """A FHIR dateTime in the patient's zone, with its offset (09:00 reads as 09:00)."""
    return moment.astimezone(zone).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class PlannedTask:
    """A Task the schedule wants, without its status (which depends on the time).

    `content` (the MANAGED elements) is built on first use: a sweep that finds a Task as Herald
    left it never needs it, and it costs more than everything else about a planned Task.
    """

    id: str
    careplan_id: str
    activity: str
    start: datetime
    identifier: str  # the occurrence identifier's value
    build: Callable[[], dict[str, Any]] = field(repr=False, compare=False)
    _built: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)

    @property
    def content(self) -> dict[str, Any]:
        if not self._built:
            self._built.append(self.build())
        return self._built[0]


def state_of(task: dict[str, Any]) -> TaskState:
    status = task.get("status")
    if status in ("requested", "ready"):
        return status
    if status == "cancelled":
        for coding in (task.get("businessStatus") or {}).get("coding") or ():
            if coding.get("system") == BUSINESS_STATUS and coding.get("code") in OWNED:
                return coding["code"]
    return "released"


def timed_state(start: datetime, now: datetime, policy: SchedulePolicy) -> TaskState:
    """Where an owned Task of an occurrence at `start` belongs at `now`."""
    if now < start - policy.lead:
        return "requested"
    if now < start + policy.grace:
        return "ready"
    return "missed"


def next_due(state: TaskState, start: datetime, policy: SchedulePolicy) -> datetime | None:
    """When a Task in `state` next needs Herald."""
    if state == "requested":
        return start - policy.lead
    if state == "ready":
        return start + policy.grace
    return None


def new_task(planned: PlannedTask, state: TaskState, now: datetime) -> dict[str, Any]:
    task: dict[str, Any] = {"resourceType": "Task", "intent": "order"}
    task.update(planned.content)
    task["authoredOn"] = local_datetime(now, UTC)
    return with_state(task, state)


def with_content(task: dict[str, Any], planned: PlannedTask) -> dict[str, Any]:
    """`task` with the schedule's content restored; everything else a person added stays."""
    repaired = {k: v for k, v in task.items() if k not in MANAGED}
    repaired.update(planned.content)
    return repaired


def content_differs(task: dict[str, Any], planned: PlannedTask) -> bool:
    return any(task.get(k) != planned.content.get(k) for k in MANAGED)


def with_state(task: dict[str, Any], state: TaskState | Literal["duplicate"]) -> dict[str, Any]:
    """`task` moved to an owned state, or cancelled as a duplicate (status, businessStatus,
    statusReason); its `meta` (tags, security labels) stays, and the store sets its version."""
    changed = {
        k: v for k, v in task.items() if k not in ("status", "businessStatus", "statusReason")
    }
    if state in ("requested", "ready"):
        changed["status"] = state
    else:
        changed["status"] = "cancelled"
        changed["businessStatus"] = {
            "coding": [{"system": BUSINESS_STATUS, "code": state}],
            "text": state,
        }
        changed["statusReason"] = {"text": _REASONS[state]}
    return changed


def moved_state(
    current: TaskState, start: datetime, now: datetime, policy: SchedulePolicy
) -> TaskState | None:
    """The state an owned Task in `current` moves to by `now`, or None to leave it.

    Only forward: requested -> ready -> missed. A ready Task never goes back to requested (a
    longer lead time, a clock set back), and what a person moved on is never touched.
    """
    if current not in ("requested", "ready"):
        return None
    target = timed_state(start, now, policy)
    if target == current or (current == "ready" and target == "requested"):
        return None
    return target
