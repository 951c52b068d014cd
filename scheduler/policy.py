"""What the administrator decides about scheduling, and the names Herald gives its Tasks.

`SchedulePolicy` is built from settings by the service shell; everything in `scheduler/` takes
it as a value. Its `fingerprint` tells a sweep whether a CarePlan was planned under the same
policy (and the same Herald release).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from zoneinfo import ZoneInfo

from scheduler.timing import WhenClock

# The standard extension carrying a Patient's IANA time zone.
TIMEZONE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/timezone"


def _release() -> str:
    """Herald's installed version: another release may plan the same CarePlan differently."""
    try:
        return version("herald")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "source"


RELEASE = _release()


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
class ScheduleLimits:
    """What one CarePlan, and one patient's CarePlans together, may ask of the scheduler
    (docs/limits.md). Each is named by its setting in the messages that cite it."""

    activities: int = 100  # activities per CarePlan
    tasks_per_careplan: int = 2_000  # Tasks of one CarePlan within the horizon
    tasks_per_patient: int = 5_000  # Tasks of one patient's CarePlans within the horizon


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    # Tasks exist for occurrences up to this far ahead.
    horizon: timedelta = timedelta(days=14)
    # A Task becomes ready this long before its start.
    lead: timedelta = timedelta(0)
    # A ready Task not moved on by then (after its start) is marked missed.
    grace: timedelta = timedelta(hours=24)
    # An Appointment's reminder Task falls due this long before the appointment starts.
    appointment_lead: timedelta = timedelta(hours=24)
    # The zone of patients without the timezone extension.
    default_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    when: WhenClock = field(default_factory=WhenClock.default)
    tag: PlanTag | None = None
    limits: ScheduleLimits = field(default_factory=ScheduleLimits)

    @property
    def fingerprint(self) -> str:
        """Names everything here that shapes a plan, and the release that planned it: a
        CarePlan planned under another fingerprint is planned again."""
        when = sorted((name, at.isoformat()) for name, at in self.when.times.items())
        tag = (self.tag.system, self.tag.code) if self.tag else None
        shape = (
            RELEASE,
            self.horizon.total_seconds(),
            self.lead.total_seconds(),
            self.grace.total_seconds(),
            self.appointment_lead.total_seconds(),
            self.default_zone.key,
            when,
            tag,
            (
                self.limits.activities,
                self.limits.tasks_per_careplan,
                self.limits.tasks_per_patient,
            ),
        )
        return hashlib.sha256(repr(shape).encode()).hexdigest()[:32]
