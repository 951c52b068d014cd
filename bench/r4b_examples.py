"""How many official R4B examples survive a round trip through Herald's REST API.

    python -m bench.r4b_examples [--database-url URL] [--max-body-bytes N] [--all]

Fetches `hl7.fhir.r4b.examples@4.3.0` with npm on the first run (cached), PUTs every example
that fhir.resources accepts (POST when it has no id) into a fresh Herald, reads it back and
compares, modulo `meta` and with decimal precision counting. Prints the figure and a table of
the reasons for the rest. The default database is a SQLite file in a temporary folder; pass an
empty PostgreSQL database as `--database-url` to check that backend.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from tests.support.fhir_packages import (
    R4B_EXAMPLES,
    ExampleReport,
    PackageUnavailable,
    check_examples,
    fetch_package,
)

console = Console() if sys.stdout.isatty() else Console(width=200)  # tables go to stdout
status = Console(stderr=True)  # progress goes to stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="an empty database (default: a SQLite temp file)")
    parser.add_argument("--max-body-bytes", type=int, help="HERALD_MAX_BODY_BYTES for the run")
    parser.add_argument("--all", action="store_true", help="list every failing example")
    args = parser.parse_args(argv)
    try:
        package = fetch_package(*R4B_EXAMPLES)
    except PackageUnavailable as error:
        status.print(f"[red]{'@'.join(R4B_EXAMPLES)} unavailable:[/] {error}")
        return 2
    settings = {"max_body_bytes": args.max_body_bytes} if args.max_body_bytes else {}
    with tempfile.TemporaryDirectory(prefix="herald-r4b-") as scratch:
        url = args.database_url or f"sqlite+aiosqlite:///{scratch}/herald.db"
        report = asyncio.run(_run(package, url, settings))
    _print(report, url if args.database_url else "SQLite (temporary file)", every=args.all)
    return 0


async def _run(package: Path, url: str, settings: dict[str, int]) -> ExampleReport:
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=status, transient=True) as progress:
        task = progress.add_task("round trips", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return await check_examples(package, url, on_progress=advance, **settings)


def _print(report: ExampleReport, database: str, *, every: bool) -> None:
    figure = Table(title="official examples through PUT + GET", title_justify="left")
    figure.add_column("examples")
    figure.add_column("count", justify="right")
    figure.add_column("share", justify="right")
    figure.add_row("package", report.package, "")
    figure.add_row("database", database, "")
    figure.add_row("in the package", str(report.total), "")
    figure.add_row("excluded: fhir.resources rejects them", str(len(report.excluded)), "")
    figure.add_row("eligible", str(report.eligible), "100.0%")
    figure.add_row(
        "[bold]read back equal modulo meta[/]",
        f"[bold]{len(report.loaded)}[/]",
        f"[bold]{report.percent:.1f}%[/]",
    )
    figure.add_row("not equal or not stored", str(len(report.failed)), "")
    figure.add_row("run time", f"{report.seconds:.0f} s", "")
    console.print(figure)

    reasons = Table(title="why the rest did not make it", title_justify="left")
    reasons.add_column("count", justify="right")
    reasons.add_column("reason")
    reasons.add_column("one example", overflow="fold")
    for reason, count, name in report.reasons():
        reasons.add_row(str(count), reason, f"{name}: {report.details[name]}")
    console.print(reasons)

    excluded = Table(title="excluded (fhir.resources rejects them)", title_justify="left")
    excluded.add_column("example")
    excluded.add_column("validation problem", overflow="fold")
    for name, problem in report.excluded.items():
        excluded.add_row(name, problem)
    console.print(excluded)

    if every and report.failed:
        failing = Table(title="every failing example", title_justify="left")
        failing.add_column("example")
        failing.add_column("what went wrong", overflow="fold")
        for name in sorted(report.failed):
            failing.add_row(name, report.details[name])
        console.print(failing)


if __name__ == "__main__":
    raise SystemExit(main())
