"""Population enrolment: patients enrolled per second through PlanDefinition `$apply`.

For each backend, on an empty database, in this process (`Runtime` with the relay, matcher and
scheduler off, so only the measured work runs):

1. `--patients` (10,000) Patients (Europe/Berlin) and one PlanDefinition are stored: a daily
   blood-pressure measurement (a Timing bounded from the start) and a review two weeks later (a
   relative timingDuration).
2. **Enrol**: what `herald enrol` and the asynchronous `$apply` run (`Population.run`): the
   Patients are searched, the plan applied to each and its CarePlan stored by a conditional
   create on its enrolment identifier (validation, the scheduler's CarePlan rule, history,
   search index, change event).
3. **Enrol again**: the same; every patient is found already enrolled, nothing is written.

Baseline (same run, fresh database): the same number of CarePlans, of the shape enrolment
makes, written through the store's batch write (`Store.write_batch`, 1,500 per transaction),
without applying a plan, checking a condition or validating, so the ratio is what enrolment
costs on top of writing.

Run: `python -m bench.enrolment [--quick] [--patients 10000] [--backends sqlite,postgres]`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich.table import Table

from bench.harness import Databases, InfraUnavailable, console, note, parse_backends, rate, ratio
from fhirstore.db.writer import PendingWrite
from fhirstore.store import new_id
from herald.runtime import Runtime, schedule_policy
from herald.settings import Settings
from scheduler.enrolment import Options, Population, Subject, Summary, apply_plan
from scheduler.policy import TIMEZONE_EXTENSION

STORE_CHUNK = 1_500
PLAN_ID = "bp-programme"
DAILY = {"frequency": 1, "period": 1, "periodUnit": "d", "timeOfDay": ["08:00:00"]}
PLAN = {
    "resourceType": "PlanDefinition",
    "id": PLAN_ID,
    "url": "http://example.org/PlanDefinition/bp-programme",
    "status": "active",
    "title": "Blood pressure programme",
    "action": [
        {"id": "measure", "title": "Measure blood pressure", "timingTiming": {"repeat": DAILY}},
        {
            "id": "review",
            "title": "Review with the nurse",
            "timingDuration": {"value": 2, "system": "http://unitsofmeasure.org", "code": "wk"},
        },
    ],
}


@dataclass
class Row:
    backend: str
    what: str
    patients: int
    seconds: float
    note: str = ""


def _runtime(url: str) -> Runtime:
    settings = Settings(database_url=url, subscriptions=False, scheduler=False, log_level="WARNING")
    return Runtime(settings, run_relay=False)


def _patient(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "extension": [{"url": TIMEZONE_EXTENSION, "valueCode": "Europe/Berlin"}],
    }


async def _store_all(runtime: Runtime, writes: Iterator[PendingWrite]) -> None:
    """Write `writes` a chunk at a time, each made just before it is written."""
    while chunk := list(itertools.islice(writes, STORE_CHUNK)):
        async with runtime.store.write_transaction() as conn:
            await runtime.store.write_batch(conn, chunk)


def _population(patients: int) -> Iterator[PendingWrite]:
    yield PendingWrite("PlanDefinition", PLAN_ID, PLAN)
    for _ in range(patients):
        pid = new_id()
        yield PendingWrite("Patient", pid, _patient(pid), new=True)


def _careplans(patients: int) -> Iterator[PendingWrite]:
    now = datetime(2026, 3, 20, 6, tzinfo=UTC)
    for _ in range(patients):
        subject = Subject(new_id(), ZoneInfo("Europe/Berlin"), None)
        careplan = apply_plan(PLAN, PLAN_ID, {}, subject, Options(now, now)).careplan
        yield PendingWrite("CarePlan", new_id(), careplan, new=True)


async def enrolment_rows(url: str, backend: str, patients: int) -> list[Row]:
    runtime = _runtime(url)
    await runtime.start()
    try:
        note(f"{backend}: storing {patients:,} Patients and the PlanDefinition")
        await _store_all(runtime, _population(patients))
        population = Population(runtime.store, schedule_policy(runtime.settings))
        rows = []
        for what in ("enrol", "enrol again (all already enrolled)"):
            note(f"{backend}: {what}")
            began = time.perf_counter()
            prepared = await population.prepare(PLAN_ID, "Patient?")
            summary = await population.run(prepared, _progress_note(backend, patients))
            seconds = time.perf_counter() - began
            rows.append(Row(backend, what, summary.done, seconds, _counts(summary)))
        return rows
    finally:
        await runtime.stop()


async def baseline_row(url: str, backend: str, patients: int) -> Row:
    runtime = _runtime(url)
    await runtime.start()
    try:
        note(f"{backend}: baseline, {patients:,} CarePlans through Store.write_batch")
        began = time.perf_counter()
        await _store_all(runtime, _careplans(patients))
        return Row(backend, "baseline: store batch writes", patients, time.perf_counter() - began)
    finally:
        await runtime.stop()


def _progress_note(backend: str, patients: int):  # type: ignore[no-untyped-def]
    step = max(1, patients // 5)
    shown = [0]

    def show(summary: Summary) -> None:
        if summary.done - shown[0] >= step or summary.done == summary.matched:
            shown[0] = summary.done
            note(f"{backend}: {summary.done:,}/{summary.matched or 0:,} patients")

    return show


def _counts(summary: Summary) -> str:
    counts = {
        "enrolled": summary.enrolled,
        "already": summary.already,
        "failed": summary.failed,
    }
    return ", ".join(f"{k} {v:,}" for k, v in counts.items() if v)


def print_table(rows: list[Row], patients: int) -> None:
    table = Table(title=f"Enrolment: {patients:,} Patients into a two-activity PlanDefinition")
    for column in ("backend", "what", "patients", "seconds", "patients/s", "vs baseline"):
        table.add_column(column, justify="left" if column in ("backend", "what") else "right")
    table.add_column("counts")
    baselines = {r.backend: r for r in rows if r.what.startswith("baseline")}
    for row in rows:
        per_second = row.patients / row.seconds if row.seconds and row.patients else 0.0
        base = baselines.get(row.backend)
        versus = "baseline" if row.what.startswith("baseline") else ""
        if not versus and base is not None and row.patients:
            versus = ratio(per_second, base.patients / base.seconds)
        table.add_row(
            row.backend,
            row.what,
            f"{row.patients:,}",
            f"{row.seconds:.2f}",
            rate(per_second) if row.patients else "-",
            versus,
            row.note,
        )
    console.print(table)


async def main(patients: int, backends: list[str]) -> None:
    databases = Databases()
    rows: list[Row] = []
    try:
        for backend in backends:
            try:
                url = databases.fresh(backend)
            except InfraUnavailable as error:
                note(f"skipping {backend}: {error}")
                continue
            measured = await enrolment_rows(url, backend, patients)
            rows.append(await baseline_row(databases.fresh(backend), backend, patients))
            rows.extend(measured)
    finally:
        databases.close()
    print_table(rows, patients)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--quick", action="store_true", help="1,000 Patients, SQLite only")
    args = parser.parse_args()
    if args.quick:
        args.patients, args.backends = 1_000, "sqlite"
    asyncio.run(main(args.patients, parse_backends(args.backends)))
