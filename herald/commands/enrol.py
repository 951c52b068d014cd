"""`herald enrol PlanDefinition/{id} --patients 'Patient?...'`: enrol every Patient a search
matches in a stored PlanDefinition, with progress and a summary (scheduler/enrolment).

The durable path for a large population: it needs no server to stay up, and, being
idempotent, an interrupted run is simply run again. The CarePlans it stores are scheduled by
the running Herald like any other.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from herald.commands.common import (
    DatabaseOpt,
    cannot_start,
    console,
    load_settings,
    open_database,
    or_exit,
    store_of,
)
from herald.settings import Settings

if TYPE_CHECKING:
    from scheduler import SchedulePolicy, Summary

SHOWN = 100
PATIENTS_HELP = "The Patients to enrol, as a search: 'Patient?general-practitioner=...'"
START_HELP = (
    "When the enrolment starts: a date (midnight in each patient's zone) or a dateTime;"
    " relative timing counts from it. Default: now"
)


def enrol(
    plan: Annotated[str, typer.Argument(help="The PlanDefinition: PlanDefinition/{id}")],
    patients: Annotated[str, typer.Option("--patients", help=PATIENTS_HELP)],
    start: Annotated[str | None, typer.Option("--start", help=START_HELP)] = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Enrol the Patients a search matches in a PlanDefinition: one CarePlan each, stored and
    then scheduled. Enrolling again makes no second CarePlan for anyone."""
    plan_id = plan.removeprefix("PlanDefinition/")
    if not plan.startswith("PlanDefinition/") or not plan_id:
        cannot_start(f"name the plan as PlanDefinition/{{id}}, not {plan!r}")
    from herald.runtime import schedule_policy

    settings = load_settings(database_url)
    with or_exit():
        policy = schedule_policy(settings)
    open_database(settings, existing=True)
    summary = asyncio.run(_enrol(settings, policy, plan_id, patients, start))
    table = Table("what", "count")
    table.add_row("patients matched", str(summary.matched or 0))
    table.add_row("enrolled", str(summary.enrolled))
    table.add_row("already enrolled", str(summary.already))
    table.add_row("failed", str(summary.failed))
    console.print(table)
    if summary.failures:
        why = Table("Patient", "not enrolled because")
        for failure in summary.failures[:SHOWN]:
            why.add_row(failure.patient, failure.reason)
        console.print(why)
    if summary.notes:
        notes = Table("in the plan", "not applied")
        for note in summary.notes:
            notes.add_row(note.where, note.text)
        console.print(notes)
    if summary.failed:
        raise typer.Exit(1)


async def _enrol(
    settings: Settings, policy: SchedulePolicy, plan_id: str, patients: str, start: str | None
) -> Summary:
    from fhirstore import FhirError
    from scheduler import Population, careplan_rule

    async with store_of(settings) as store:
        store.add_rule("CarePlan", careplan_rule(store, policy))  # the limits, as over the API
        population = Population(store, policy)
        try:
            prepared = await population.prepare(plan_id, patients, start=start)
        except FhirError as error:
            cannot_start(error.diagnostics)
        with Progress(
            TextColumn("enrolling patients"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("enrolled: {task.fields[enrolled]}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("enrol", total=None, enrolled=0)

            def show(summary: Summary) -> None:
                progress.update(
                    task, completed=summary.done, total=summary.matched, enrolled=summary.enrolled
                )

            return await population.run(prepared, show)
