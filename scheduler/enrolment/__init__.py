"""Enrolment: PlanDefinition `$apply` (one patient's CarePlan, with a report of what of the plan
was not applied) and enrolling the patients a search matches, idempotently (docs/enrolment.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.enrolment.actions import Note
    from scheduler.enrolment.api import enrolment_router
    from scheduler.enrolment.apply import (
        Applied,
        Options,
        Subject,
        apply_plan,
        enrolment_key,
        subject_of,
    )
    from scheduler.enrolment.population import Failure, Population, Prepared, Summary
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "Applied",
    "Failure",
    "Note",
    "Options",
    "Population",
    "Prepared",
    "Subject",
    "Summary",
    "apply_plan",
    "enrolment_key",
    "enrolment_router",
    "subject_of",
]
