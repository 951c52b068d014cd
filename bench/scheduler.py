"""CarePlan scheduler: Tasks materialised per second, and a sweep with nothing to fix.

For each backend, on an empty database, in this process (`Runtime` with the relay, matcher and
scheduler jobs off, so only the measured work runs):

1. `--careplans` (10,000) active CarePlans are stored, each for its own Patient (Europe/Berlin)
   with two activities: daily at 08:00 and at 20:00, so 28 Tasks each in the 14-day horizon.
2. **Materialise**: one sweep (`Scheduler.sweep`, what `herald scheduler reconcile` runs) writes
   every Task through the store (resource, history, search index, change event, bookkeeping).
3. **Sweep, nothing to fix**: a second sweep right after; it must find nothing to write, and
   finds every CarePlan settled in SQL (scheduler/settled.py), so it plans none.
4. **Full sweep, nothing to fix**: a third, `full=True` (`herald scheduler reconcile --full`):
   every CarePlan planned and its Tasks read, as every sweep did before settled CarePlans were
   skipped.

Baseline (same run, fresh database): the same number of Task resources written through the
store's batch write (`Store.write_batch`, 1,500 per transaction), without any scheduling, so
the ratio is what planning and reconciling cost on top of writing. Targets: at least 5,000
Tasks/s materialised on SQLite; the sweep over 10,000 CarePlans under 10 s.

Run: `python -m bench.scheduler [--quick] [--careplans 10000] [--backends sqlite,postgres]`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from bench.harness import (
    Databases,
    InfraUnavailable,
    console,
    cpu_seconds,
    cpu_share,
    note,
    parse_backends,
    rate,
    ratio,
)
from fhirstore.clock import Clock
from fhirstore.db.writer import PendingWrite
from fhirstore.store import new_id
from herald.runtime import Runtime
from herald.settings import Settings
from scheduler.policy import TIMEZONE_EXTENSION
from scheduler.repairs import Repairs

MATERIALISE_TARGET = 5_000  # Tasks/s on SQLite
SWEEP_TARGET_S = 10.0  # for 10,000 CarePlans with nothing to fix
TASKS_PER_PLAN = 28  # two a day for the 14-day horizon
STORE_CHUNK = 1_500
SWEEPS = (  # (row, full)
    ("materialise (first sweep)", False),
    ("sweep, nothing to fix", False),
    ("full sweep, nothing to fix", True),
)


@dataclass
class Row:
    backend: str
    what: str
    tasks: int
    seconds: float
    note: str = ""
    cpu: float = math.nan  # CPU seconds of this process (its threads included)


def _careplan(patient_id: str) -> dict[str, Any]:
    def daily(at: str, text: str) -> dict[str, Any]:
        repeat = {"frequency": 1, "period": 1, "periodUnit": "d", "timeOfDay": [at]}
        return {
            "detail": {
                "status": "scheduled",
                "code": {"text": text},
                "description": text,
                "scheduledTiming": {"repeat": repeat},
            }
        }

    return {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": f"Patient/{patient_id}"},
        "activity": [daily("08:00:00", "Blood pressure"), daily("20:00:00", "Medication")],
    }


def berlin_patient(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "extension": [{"url": TIMEZONE_EXTENSION, "valueCode": "Europe/Berlin"}],
    }


def runtime_for(url: str, clock: Clock | None = None) -> Runtime:
    settings = Settings(database_url=url, subscriptions=False, scheduler=False, log_level="WARNING")
    return Runtime(settings, clock=clock, run_relay=False)


async def store_all(runtime: Runtime, writes: Iterator[PendingWrite]) -> None:
    """Write `writes` a chunk at a time, each made just before it is written: a list of them
    all, alive throughout, would make each of the collector's full passes walk it."""
    while chunk := list(itertools.islice(writes, STORE_CHUNK)):
        async with runtime.store.write_transaction() as conn:
            await runtime.store.write_batch(conn, chunk)


def _patients_and_careplans(careplans: int) -> Iterator[PendingWrite]:
    for _ in range(careplans):
        pid = new_id()
        yield PendingWrite("Patient", pid, berlin_patient(pid), new=True)
        yield PendingWrite("CarePlan", new_id(), _careplan(pid), new=True)


def _tasks(tasks: int) -> Iterator[PendingWrite]:
    body = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "description": "Blood pressure",
        "code": {"text": "Blood pressure"},
        "for": {"reference": f"Patient/{new_id()}"},
        "basedOn": [{"reference": f"CarePlan/{new_id()}"}],
        "executionPeriod": {"start": "2026-03-20T08:00:00+01:00"},
        "authoredOn": "2026-03-20T06:00:00+00:00",
    }
    for n in range(tasks):
        identifier = [{"system": "urn:bench", "value": str(n)}]
        yield PendingWrite("Task", new_id(), {**body, "identifier": identifier}, new=True)


async def scheduler_rows(url: str, backend: str, careplans: int) -> list[Row]:
    runtime = runtime_for(url)
    await runtime.start()
    try:
        note(f"{backend}: storing {careplans:,} Patients and CarePlans")
        await store_all(runtime, _patients_and_careplans(careplans))
        return await timed_sweeps(runtime, backend, careplans, SWEEPS)
    finally:
        await runtime.stop()


async def timed_sweeps(
    runtime: Runtime, backend: str, careplans: int, sweeps: Iterable[tuple[str, bool]]
) -> list[Row]:
    """One row per sweep `(what, full)`, run one after the other on what is stored."""
    rows = []
    for what, full in sweeps:
        note(f"{backend}: {what}")
        began, cpu = time.perf_counter(), cpu_seconds()
        repairs = await runtime.scheduler.sweep(progress_note(backend, careplans), full=full)
        seconds = time.perf_counter() - began
        used = cpu_seconds() - cpu
        rows.append(Row(backend, what, repairs.writes, seconds, summary(repairs), used))
    return rows


async def baseline_row(url: str, backend: str, tasks: int) -> Row:
    runtime = runtime_for(url)
    await runtime.start()
    try:
        note(f"{backend}: baseline, {tasks:,} Tasks through Store.write_batch")
        began, cpu = time.perf_counter(), cpu_seconds()
        await store_all(runtime, _tasks(tasks))
        seconds, used = time.perf_counter() - began, cpu_seconds() - cpu
        return Row(backend, "baseline: store batch writes", tasks, seconds, cpu=used)
    finally:
        await runtime.stop()


def progress_note(backend: str, careplans: int):  # type: ignore[no-untyped-def]
    step = max(1, careplans // 5)
    shown = [0]

    def show(done: int, total: int, repairs: Repairs) -> None:
        if done - shown[0] >= step or done == total:
            shown[0] = done
            note(
                f"{backend}: {done:,}/{total:,} CarePlans ({repairs.settled_plans:,} settled),"
                f" {repairs.writes:,} Tasks written"
            )

    return show


def summary(repairs: Repairs) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in repairs.counts().items() if v)


def print_table(rows: list[Row], careplans: int) -> None:
    table = Table(title=f"Scheduler: {careplans:,} CarePlans x 2 daily activities, 14-day horizon")
    columns = ("backend", "what", "Tasks written", "seconds", "Tasks/s", "vs baseline", "CPU")
    for column in columns:
        table.add_column(column, justify="left" if column in ("backend", "what") else "right")
    table.add_column("target")
    table.add_column("counts")
    baselines = {r.backend: r for r in rows if r.what.startswith("baseline")}
    for row in rows:
        per_second = row.tasks / row.seconds if row.seconds and row.tasks else 0.0
        base = baselines.get(row.backend)
        versus = ""
        if row.tasks and base is not None and not row.what.startswith("baseline"):
            versus = ratio(per_second, base.tasks / base.seconds)
        elif row.what.startswith("baseline"):
            versus = "baseline"
        table.add_row(
            row.backend,
            row.what,
            f"{row.tasks:,}",
            f"{row.seconds:.2f}",
            rate(per_second) if row.tasks else "-",
            versus,
            cpu_share(row.cpu, row.seconds),
            _target(row, per_second, careplans),
            row.note,
        )
    console.print(table)


def _target(row: Row, per_second: float, careplans: int) -> str:
    if row.backend != "sqlite" and not row.what.startswith("sweep"):
        return ""
    if row.what.startswith("materialise"):
        met = per_second >= MATERIALISE_TARGET
        return f">= {MATERIALISE_TARGET:,}/s: {'met' if met else 'missed'}"
    if row.what.startswith("sweep"):
        limit = SWEEP_TARGET_S * careplans / 10_000
        return f"< {limit:.1f} s: {'met' if row.seconds < limit else 'missed'}"
    return ""


async def main(careplans: int, backends: list[str]) -> None:
    databases = Databases()
    rows: list[Row] = []
    try:
        for backend in backends:
            try:
                url = databases.fresh(backend)
            except InfraUnavailable as error:
                note(f"skipping {backend}: {error}")
                continue
            measured = await scheduler_rows(url, backend, careplans)
            rows.append(await baseline_row(databases.fresh(backend), backend, measured[0].tasks))
            rows.extend(measured)
    finally:
        databases.close()
    print_table(rows, careplans)


def size_and_backends(doc: str, counted: str) -> tuple[int, list[str]]:
    """`--{counted}` and `--backends` from the command line (`--quick`: 1,000, SQLite only)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(f"--{counted}", dest="size", metavar="N", type=int, default=10_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--quick", action="store_true", help=f"1,000 {counted}, SQLite only")
    args = parser.parse_args()
    if args.quick:
        args.size, args.backends = 1_000, "sqlite"
    return args.size, parse_backends(args.backends)


if __name__ == "__main__":
    asyncio.run(main(*size_and_backends(__doc__, "careplans")))
