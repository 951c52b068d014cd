"""Medication plans: Tasks/s of CarePlans referring to MedicationRequests vs the same inline.

The same schedules either way, so the ratio is what reading and planning the requests costs.

For each backend, each scenario on its own empty database, in this process (`Runtime` with the
relay, matcher and scheduler jobs off, as in bench/scheduler.py):

- **inline** (baseline): `--patients` (10,000) Patients (Europe/Berlin), each with an active
  CarePlan of two activities whose `detail.scheduledTiming` is twice daily at 08:00 and 20:00.
- **MedicationRequests**: the same Patients, each with two active MedicationRequests (intent
  order; `dosageInstruction` with text, the same twice-daily timing and a dose) and a CarePlan
  whose two activities refer to them (`activity.reference`).

Both want 56 Tasks per CarePlan in the 14-day horizon. Rows: the first sweep after the setup
(materialises everything, whatever a later sweep would skip), a sweep with nothing to fix, and
a full sweep (`--full`: every CarePlan planned again, its requests read). `vs inline` is the
MedicationRequest row's Tasks/s over the inline row's (for a sweep writing nothing, the inline
row's seconds over its own: above 1 is faster). Target: materialising with MedicationRequests
at no less than 70% of the inline rate.

Run: `python -m bench.medication_plans [--quick] [--patients 10000] [--backends sqlite,postgres]`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from bench.harness import (
    Databases,
    InfraUnavailable,
    console,
    cpu_share,
    note,
    rate,
    ratio,
)
from bench.scheduler import (
    Row,
    berlin_patient,
    runtime_for,
    size_and_backends,
    store_all,
    timed_sweeps,
)
from fhirstore.clock import FrozenClock
from fhirstore.db.writer import PendingWrite
from fhirstore.store import new_id

TARGET = 0.70  # MedicationRequests' materialisation rate over the inline one
TWICE_DAILY = {
    "frequency": 2,
    "period": 1,
    "periodUnit": "d",
    "timeOfDay": ["08:00:00", "20:00:00"],
}
MEDICINES = ("Lisinopril 10 mg", "Amlodipine 5 mg")
SWEEPS = (  # (row, full)
    ("materialise (first sweep)", False),
    ("sweep, nothing to fix", False),
    ("full sweep, nothing to fix", True),
)
INLINE, REQUESTS = "inline activities", "MedicationRequests"


@dataclass
class Measured:
    scenario: str
    row: Row


def _inline(patient_id: str) -> Iterator[PendingWrite]:
    def activity(medicine: str) -> dict[str, Any]:
        detail = {
            "status": "scheduled",
            "kind": "MedicationRequest",
            "code": {"text": medicine},
            "description": f"{medicine}, one tablet",
            "scheduledTiming": {"repeat": TWICE_DAILY},
        }
        return {"detail": detail}

    careplan = _careplan(patient_id, [activity(m) for m in MEDICINES])
    yield PendingWrite("CarePlan", new_id(), careplan, new=True)


def _requests(patient_id: str) -> Iterator[PendingWrite]:
    references = []
    for medicine in MEDICINES:
        request_id = new_id()
        yield PendingWrite(
            "MedicationRequest", request_id, _medication(patient_id, medicine), new=True
        )
        references.append({"reference": {"reference": f"MedicationRequest/{request_id}"}})
    yield PendingWrite("CarePlan", new_id(), _careplan(patient_id, references), new=True)


def _medication(patient_id: str, medicine: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": medicine},
        "subject": {"reference": f"Patient/{patient_id}"},
        "dosageInstruction": [
            {
                "text": "one tablet at 08:00 and at 20:00",
                "timing": {"repeat": TWICE_DAILY},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}],
            }
        ],
    }


def _careplan(patient_id: str, activities: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": f"Patient/{patient_id}"},
        "activity": activities,
    }


def _setup(patients: int, scenario: str) -> Iterator[PendingWrite]:
    plan = _inline if scenario == INLINE else _requests
    for _ in range(patients):
        pid = new_id()
        yield PendingWrite("Patient", pid, berlin_patient(pid), new=True)
        yield from plan(pid)


async def scenario_rows(
    url: str, backend: str, patients: int, scenario: str, clock: FrozenClock
) -> list[Measured]:
    runtime = runtime_for(url, clock)
    await runtime.start()
    try:
        note(f"{backend}, {scenario}: storing {patients:,} patients and their plans")
        await store_all(runtime, _setup(patients, scenario))
        rows = await timed_sweeps(runtime, backend, patients, SWEEPS)
        return [Measured(scenario, r) for r in rows]
    finally:
        await runtime.stop()


def print_table(measured: list[Measured], patients: int) -> None:
    title = f"Medication plans: {patients:,} patients x 2 activities twice daily, 14-day horizon"
    table = Table(title=title)
    for column in ("backend", "activities", "what", "Tasks written", "seconds", "Tasks/s"):
        table.add_column(
            column, justify="left" if column in ("backend", "activities", "what") else "right"
        )
    table.add_column("vs inline", justify="right")
    table.add_column("CPU", justify="right")
    table.add_column("target")
    table.add_column("counts")
    inline = {(m.row.backend, m.row.what): m.row for m in measured if m.scenario == INLINE}
    for m in measured:
        row = m.row
        base = inline.get((row.backend, row.what))
        versus, target = ("baseline", "") if m.scenario == INLINE else _versus(row, base)
        table.add_row(
            row.backend,
            m.scenario,
            row.what,
            f"{row.tasks:,}",
            f"{row.seconds:.2f}",
            rate(row.tasks / row.seconds) if row.tasks and row.seconds else "-",
            versus,
            cpu_share(row.cpu, row.seconds),
            target,
            row.note,
        )
    console.print(table)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    console.print(
        f"CPU: share of one core used by this process (event loop and its threads) while the"
        f" row ran; {os.cpu_count()} cores, load average {load} at the end."
    )


def _versus(row: Row, base: Row | None) -> tuple[str, str]:
    """The row's rate (or, with nothing written, its speed) over the inline row's."""
    if base is None or not row.seconds or not base.seconds:
        return "-", ""
    if row.tasks and base.tasks:
        value = ratio(row.tasks / row.seconds, base.tasks / base.seconds)
    else:
        value = ratio(base.seconds, row.seconds)
    if not row.what.startswith("materialise"):
        return value, ""
    met = row.tasks / row.seconds >= TARGET * base.tasks / base.seconds
    return value, f">= {TARGET:.0%} of inline: {'met' if met else 'missed'}"


async def main(patients: int, backends: list[str]) -> None:
    databases = Databases()
    measured: list[Measured] = []
    # Every row plans the same window, and no occurrence falls due while one runs.
    clock = FrozenClock(datetime.now(UTC))
    try:
        for backend in backends:
            for scenario in (INLINE, REQUESTS):
                try:
                    url = databases.fresh(backend)
                except InfraUnavailable as error:
                    note(f"skipping {backend}: {error}")
                    break
                measured += await scenario_rows(url, backend, patients, scenario, clock)
    finally:
        databases.close()
    print_table(measured, patients)


if __name__ == "__main__":
    asyncio.run(main(*size_and_backends(__doc__, "patients")))
