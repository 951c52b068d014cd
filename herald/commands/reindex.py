"""`herald reindex`: rebuild the search index with this Herald's extraction, with progress and
a summary; safe while Herald runs, resumable after an interruption (fhirstore/reindex.py)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from herald.commands.common import DatabaseOpt, console, load_settings, open_database, store_of
from herald.settings import Settings

if TYPE_CHECKING:
    from fhirstore import RebuildProgress

FORCE_HELP = "Rebuild even if the index is already of this version (e.g. after a fix to indexing)"
BATCH_HELP = "Resources per batch (each batch is one transaction)"


def reindex(
    database_url: DatabaseOpt = None,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help=BATCH_HELP)] = 200,
) -> None:
    """Rebuild every resource's search index rows with this version's extraction. Safe while
    Herald runs (a resource written meanwhile keeps its newer rows); stopped, it resumes
    where it left off. A running Herald rebuilds by itself at start unless
    HERALD_SEARCH_REINDEX_AT_START=false; this command does the same work in the foreground."""
    settings = load_settings(database_url)
    open_database(settings, existing=True)
    result = asyncio.run(_rebuild(settings, force=force, batch_size=batch_size))
    if result is None:
        console.print(
            "the search index is up to date (nothing to rebuild; --force rebuilds an index of "
            "this version, never one a newer Herald built)"
        )
        return
    table = Table("what", "count")
    table.add_row("extraction version", str(result.version))
    table.add_row("live resources", str(result.total))
    if result.resumed:
        earlier = result.done - result.rewritten - result.skipped
        table.add_row("done by an earlier run (resumed)", str(earlier))
    table.add_row("resources rebuilt", str(result.rewritten))
    table.add_row("written meanwhile (kept their own rows)", str(result.skipped))
    console.print(table)
    if result.finished:
        console.print(f"the search index is built by extraction version {result.version}")
    else:
        console.print("another process finished the rebuild")


async def _rebuild(settings: Settings, *, force: bool, batch_size: int) -> RebuildProgress | None:
    from fhirstore import Reindex

    async with store_of(settings) as store:
        rebuild = Reindex(store, batch_size=batch_size)
        if not console.is_terminal:  # a log file or a pipe: a plain line per percent
            return await rebuild.run(_PlainLines(), force=force)
        with Progress(
            TextColumn("rebuilding the search index"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("resources"),
            TimeElapsedColumn(),
            console=console,
        ) as shown:
            task = shown.add_task("reindex", total=None)

            def show(progress: RebuildProgress) -> None:
                shown.update(task, completed=progress.done, total=progress.total)

            return await rebuild.run(show, force=force)


class _PlainLines:
    """Progress as lines, one each time the rebuild passes a whole percent."""

    def __init__(self) -> None:
        self._shown = -1

    def __call__(self, progress: RebuildProgress) -> None:
        percent = progress.done * 100 // max(progress.total, progress.done, 1)
        if percent != self._shown:
            self._shown = percent
            console.print(
                f"rebuilding the search index: {progress.done} of {progress.total} "
                f"resources ({percent}%)"
            )
