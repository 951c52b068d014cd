"""Who the scheduler is when it writes: the system identity `herald-scheduler` (client
`herald`), with only the scopes its work needs. It reads CarePlans and Patients and writes
Tasks; every Task write passes the same boundary as a client's and lands in the audit trail
(`fhirstore/access/acting.py`)."""

from __future__ import annotations

from fhirstore import Store
from fhirstore.access import ActingAs, Principal, Record, Scopes

SCHEDULER_SCOPES = "system/CarePlan.rs system/Patient.rs system/Task.cruds"
SCHEDULER = Principal("system", "herald-scheduler", Scopes.parse(SCHEDULER_SCOPES), client="herald")


def acting_as_scheduler(store: Store, record: Record | None = None) -> ActingAs:
    return ActingAs(store, SCHEDULER, record)
