"""What the administrator decides about scheduling, and the names Herald gives its Tasks.

`SchedulePolicy` is built from settings by the service shell; everything in `scheduler/` takes
it as a value. The URLs below are Herald's own code systems and identifier system, documented in
the README ("CarePlan scheduling").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from zoneinfo import ZoneInfo

from scheduler.timing import WhenClock

HERALD_CANONICAL = "http://herald-fhir.org/fhir"
# Task.identifier system; the value names the occurrence: CarePlan/{id}/activity/{key}/{start}.
OCCURRENCE_SYSTEM = HERALD_CANONICAL + "/NamingSystem/careplan-occurrence"
# Task.businessStatus codes of the Tasks Herald ends itself (status `cancelled`).
BUSINESS_STATUS = HERALD_CANONICAL + "/CodeSystem/task-business-status"
# The standard extension carrying a Patient's IANA time zone.
TIMEZONE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/timezone"


@dataclass(frozen=True, slots=True)
class PlanTag:
    """Only CarePlans carrying this meta.tag are scheduled (system None: any system)."""

    system: str | None
    code: str

    @classmethod
    def parse(cls, text: str) -> PlanTag:
        """`system|code` or `code`."""
        system, bar, code = text.rpartition("|")
        if not code:
            raise ValueError(f"a CarePlan tag needs a code (system|code or code), not {text!r}")
        return cls(system if bar else None, code)


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    # Tasks exist for occurrences up to this far ahead.
    horizon: timedelta = timedelta(days=14)
    # A Task becomes ready this long before its start.
    lead: timedelta = timedelta(0)
    # A ready Task not moved on by then (after its start) is marked missed.
    grace: timedelta = timedelta(hours=24)
    # The zone of patients without the timezone extension.
    default_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    when: WhenClock = field(default_factory=WhenClock.default)
    tag: PlanTag | None = None
