"""`herald load`: bulk-load FHIR resources and Bundles from files through the store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from herald.commands.common import DatabaseOpt, console, load_settings, open_database

if TYPE_CHECKING:
    from herald.loader import Loader
    from herald.settings import Settings

SHOWN_FAILURES = 50


def load(
    paths: Annotated[list[Path], typer.Argument(help="JSON or NDJSON files, or folders of them")],
    database_url: DatabaseOpt = None,
) -> None:
    """Bulk-load resources and Bundles through the store (the change stream sees every one;
    the matcher, dispatcher and scheduler of a running `herald serve` act on them)."""
    from herald.loader import discover

    # No workers here: the outbox keeps every change for the relay of `herald serve`.
    settings = load_settings(database_url, subscriptions=False, scheduler=False)
    files = discover(paths)
    if not files:  # before the database: a mistyped path creates none
        console.print("[red]no .json or .ndjson files found in the given paths[/red]")
        raise typer.Exit(2)
    open_database(settings)
    report = asyncio.run(_load(settings, files)).report
    console.print(
        f"loaded {report.loaded} resources from {len(files)} files; {len(report.failures)} failed"
    )
    if report.failures:
        table = Table("where", "why")
        for where, why in report.failures[:SHOWN_FAILURES]:
            table.add_row(where, why)
        console.print(table)
        if len(report.failures) > SHOWN_FAILURES:
            console.print(f"... and {len(report.failures) - SHOWN_FAILURES} more")
        raise typer.Exit(1)


async def _load(settings: Settings, files: list[Path]) -> Loader:
    from herald.loader import Loader
    from herald.runtime import Runtime

    runtime = Runtime(settings, run_relay=False)
    await runtime.start()
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("resources: {task.fields[done]}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("loading", total=len(files), done=0)
            loader = Loader(
                runtime.store,
                on_progress=lambda n: progress.update(
                    task, done=progress.tasks[task].fields["done"] + n
                ),
            )
            for file in files:
                await loader.load_file(file)
                progress.advance(task)
        return loader
    finally:
        await runtime.stop()
