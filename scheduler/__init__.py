"""CarePlan scheduling: the Timing engine, CarePlan -> Task materialisation, due wake-ups and
the polling reconciliation; enrolment (PlanDefinition `$apply`) makes the CarePlans."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.admission import careplan_rule
    from scheduler.api import schedule_router
    from scheduler.capability import schedule_capabilities
    from scheduler.enrolment import Population, Summary, enrolment_router
    from scheduler.policy import PlanTag, ScheduleLimits, SchedulePolicy
    from scheduler.repairs import Repairs
    from scheduler.service import Scheduler
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "PlanTag",
    "Population",
    "Repairs",
    "ScheduleLimits",
    "SchedulePolicy",
    "Scheduler",
    "Summary",
    "careplan_rule",
    "enrolment_router",
    "schedule_capabilities",
    "schedule_router",
]
