"""`herald scheduler reconcile`: plan every CarePlan now and report what was repaired and
what cannot be scheduled."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from herald.commands.common import DatabaseOpt, console, load_settings, open_database, store_of
from herald.settings import Settings

SHOWN_SKIPPED = 100
FULL_HELP = (
    "Plan every CarePlan afresh, also those found settled (provably nothing to do)."
    " Run it after upgrading the time-zone rules (tzdata, the system's zoneinfo) or"
    " installing a fix to planning without a new Herald version: otherwise settled"
    " CarePlans keep the Tasks planned under the old rules."
)
Skipped = list[tuple[str, str | None, str]]


def reconcile(
    database_url: DatabaseOpt = None,
    full: Annotated[bool, typer.Option("--full", help=FULL_HELP)] = False,
) -> None:
    """Reconcile every CarePlan now: materialise what is missing, repair what is wrong, and
    report what was fixed and which activities cannot be scheduled. CarePlans with provably
    nothing to do are left alone (counted as settled) unless --full."""
    settings = load_settings(database_url)
    open_database(settings, existing=True)
    counts, skipped = asyncio.run(_sweep(settings, full=full))
    table = Table("what", "count")
    for kind, count in counts.items():
        table.add_row(kind.replace("_", " "), str(count))
    console.print(table)
    if skipped:
        why = Table("CarePlan", "activity", "not scheduled because")
        for careplan_id, activity, reason in skipped[:SHOWN_SKIPPED]:
            why.add_row(careplan_id, activity or "(all)", reason)
        console.print(why)
        if len(skipped) > SHOWN_SKIPPED:
            console.print(
                f"... and {len(skipped) - SHOWN_SKIPPED} more (see CarePlan/{{id}}/$schedule)"
            )


async def _sweep(settings: Settings, *, full: bool) -> tuple[dict[str, int], Skipped]:
    from events.bus import MemoryBus
    from fhirstore.access import AuditTrail
    from herald.runtime import schedule_policy
    from scheduler import Repairs, Scheduler

    async with store_of(settings) as store, AuditTrail(store).writing() as trail:
        audit = trail.record if settings.audit else None
        scheduler = Scheduler(store, MemoryBus(), schedule_policy(settings), audit=audit)
        with Progress(
            TextColumn("reconciling CarePlans"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("Tasks written: {task.fields[writes]}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("sweep", total=None, writes=0)

            def show(done: int, total: int, repairs: Repairs) -> None:
                progress.update(task, completed=done, total=total, writes=repairs.writes)

            repairs = await scheduler.sweep(show, full=full)
        return repairs.counts(), await scheduler.skipped()
