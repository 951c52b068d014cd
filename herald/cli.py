"""The `herald` command: serve, relay, load, migrate, asyncapi, dead-letters, replay,
quarantine, scheduler."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from herald.logging import configure_logging
from herald.settings import Settings

if TYPE_CHECKING:
    from events.quarantine import QuarantinedMessage
    from fhirstore.store import Store
    from herald.runtime import Runtime
    from subscriptions.ledger import DeadLetter, Ledger

app = typer.Typer(help="Herald: FHIR Subscriptions and CarePlan scheduling.", no_args_is_help=True)
console = Console(stderr=True)
log = logging.getLogger("herald")

DatabaseOpt = Annotated[
    str | None, typer.Option("--database-url", help="Overrides HERALD_DATABASE_URL")
]
KafkaOpt = Annotated[
    str | None, typer.Option("--kafka-bootstrap", help="Overrides HERALD_KAFKA_BOOTSTRAP")
]


def _settings(
    database_url: str | None = None, kafka_bootstrap: str | None = None, **kw: object
) -> Settings:
    overrides = {k: v for k, v in kw.items() if v is not None}
    if database_url:
        overrides["database_url"] = database_url
    if kafka_bootstrap:
        overrides["kafka_bootstrap"] = kafka_bootstrap
    with _or_exit():
        settings = Settings(**overrides)  # type: ignore[arg-type]
    configure_logging(settings.log_level, settings.log_format)
    return settings


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Overrides HERALD_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides HERALD_PORT")] = None,
    database_url: DatabaseOpt = None,
    kafka_bootstrap: KafkaOpt = None,
    relay: Annotated[bool, typer.Option(help="Also run the outbox relay")] = True,
    subscriptions: Annotated[
        bool, typer.Option(help="Also run the subscription matcher and dispatcher")
    ] = True,
    scheduler: Annotated[bool, typer.Option(help="Also run the CarePlan scheduler")] = True,
) -> None:
    """Run the FHIR API (and, unless --no-relay / --no-subscriptions, the outbox relay, the
    subscription matcher and the dispatcher) in this process."""
    from channels.websocket.api import MAX_FRAME_BYTES
    from herald.app import create_app
    from herald.runtime import Runtime
    from herald.startup import listen, start_runtime

    settings = _settings(
        database_url,
        kafka_bootstrap,
        host=host,
        port=port,
        subscriptions=subscriptions,
        scheduler=scheduler,
    )
    _open_database(settings)
    with _or_exit():
        runtime = Runtime(settings, run_relay=relay)
        api = create_app(settings, runtime=runtime, own_runtime=False)
        sock = listen(settings.host, settings.port)
    config = uvicorn.Config(
        api,
        host=settings.host,  # served on `sock`, bound to these: named in uvicorn's log line
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        ws_max_size=MAX_FRAME_BYTES,
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        # The runtime starts before uvicorn serves, so that a part failing to start (Kafka
        # unreachable, ...) is one `cannot start:` line, never after "serving at".
        with _or_exit():
            await start_runtime(runtime)
        # uvicorn answers SIGTERM and SIGINT while it serves, and when done raises the signal
        # again for the handler found before: this one, so that the runtime stops cleanly
        # and the process exits 0. (Until here, a signal ends the process at once.)
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop_signal, lambda *_: setattr(server, "should_exit", True))
        try:
            _announce(settings, runtime)
            await server.serve(sockets=[sock])
        finally:
            await runtime.stop()

    with sock, asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(main())
    if not server.started:
        raise typer.Exit(3)  # uvicorn did not start: its log says why


def _announce(settings: Settings, runtime: Runtime) -> None:
    if settings.embedded_bus:
        log.warning(
            "running the embedded default: in-process bus, database %s. Set "
            "HERALD_KAFKA_BOOTSTRAP and a PostgreSQL HERALD_DATABASE_URL to scale out.",
            runtime.engine.url.render_as_string(hide_password=True),
        )
    console.print(
        f"Herald FHIR base: http://{settings.host}:{settings.port}{settings.fhir_base_path}"
    )


@contextmanager
def _or_exit() -> Iterator[None]:
    """A start-up problem (a setting that cannot work, the database, the port, a part of the
    runtime such as Kafka) as one line on stderr and exit status 2, without a traceback."""
    from pydantic import ValidationError

    from herald.startup import CannotStart, settings_problem

    try:
        yield
    except ValidationError as error:  # before ValueError, of which it is one
        _cannot_start(settings_problem(error))
    except (ValueError, CannotStart) as error:
        _cannot_start(str(error))


def _cannot_start(problem: str) -> NoReturn:
    console.print(
        f"cannot start: {problem}", style="red", markup=False, highlight=False, soft_wrap=True
    )
    raise typer.Exit(2) from None


def _open_database(settings: Settings) -> None:
    """Open the database, bring its schema up to date and check that it takes writes (see
    herald.startup); if it cannot be used, say why in one line and exit."""
    from herald.startup import open_database

    with _or_exit():
        asyncio.run(open_database(settings.database_url))


@app.command("relay")
def relay_only(database_url: DatabaseOpt = None, kafka_bootstrap: KafkaOpt = None) -> None:
    """Run only the outbox relay (for a scaled-out deployment)."""

    _run_until_stopped(
        _settings(database_url, kafka_bootstrap, subscriptions=False, scheduler=False),
        run_relay=True,
    )


def _run_until_stopped(settings: Settings, *, run_relay: bool) -> None:
    """Run the workers `settings` turn on (no API) until the process is stopped."""
    from herald.runtime import Runtime
    from herald.startup import start_runtime

    _open_database(settings)

    async def main() -> None:
        with _or_exit():
            runtime = Runtime(settings, run_relay=run_relay)
            await start_runtime(runtime)
        try:
            await asyncio.Event().wait()
        finally:
            await runtime.stop()

    asyncio.run(main())


@app.command()
def migrate(database_url: DatabaseOpt = None) -> None:
    """Bring the database schema up to date (serve does this too at start)."""
    _open_database(_settings(database_url))
    console.print("schema is up to date")


@app.command()
def load(
    paths: Annotated[list[Path], typer.Argument(help="JSON or NDJSON files, or folders of them")],
    database_url: DatabaseOpt = None,
) -> None:
    """Bulk-load resources and Bundles through the store (the change stream sees every one)."""
    from herald.loader import Loader, discover
    from herald.runtime import Runtime

    settings = _settings(database_url, subscriptions=False)
    _open_database(settings)
    files = discover(paths)
    if not files:
        console.print("[red]no .json or .ndjson files found in the given paths[/red]")
        raise typer.Exit(2)

    async def main() -> Loader:
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

    loader = asyncio.run(main())
    report = loader.report
    console.print(
        f"loaded {report.loaded} resources from {len(files)} files; {len(report.failures)} failed"
    )
    if report.failures:
        table = Table("where", "why")
        for where, why in report.failures[:50]:
            table.add_row(where, why)
        console.print(table)
        if len(report.failures) > 50:
            console.print(f"... and {len(report.failures) - 50} more")
        raise typer.Exit(1)


@app.command("dead-letters")
def dead_letters(
    subscription: Annotated[str | None, typer.Option(help="Only this Subscription id")] = None,
    database_url: DatabaseOpt = None,
) -> None:
    """List notifications given up (past the give-up age, or that could not be built or sent),
    with the reason."""
    settings = _settings(database_url)
    _open_database(settings)

    async def main() -> list[DeadLetter]:
        async with _ledger(settings) as ledger:
            return await ledger.dead_letters(subscription)

    letters = asyncio.run(main())
    table = Table("id", "subscription", "events", "recorded", "replayed", "reason")
    for letter in letters:
        table.add_row(
            str(letter.id),
            letter.subscription_id,
            f"{letter.first_event}-{letter.last_event}",
            letter.recorded_at.isoformat(timespec="seconds"),
            letter.replayed_at.isoformat(timespec="seconds") if letter.replayed_at else "",
            letter.reason,
        )
    console.print(table if letters else "no dead letters")


@app.command()
def replay(
    dead_letter_id: Annotated[int, typer.Argument(help="The id `herald dead-letters` shows")],
    database_url: DatabaseOpt = None,
) -> None:
    """Deliver a dead letter's events again (a running dispatcher picks them up)."""
    settings = _settings(database_url)
    _open_database(settings)

    async def main() -> object:
        async with _ledger(settings) as ledger:
            return await ledger.replay(dead_letter_id, now=datetime.now(UTC))

    if asyncio.run(main()) is None:
        console.print(
            f"[red]no dead letter {dead_letter_id} waiting for a replay[/red]; "
            f"`herald dead-letters` lists them"
        )
        raise typer.Exit(1)
    console.print(f"dead letter {dead_letter_id} will be delivered again")


quarantine_app = typer.Typer(
    help="Changes a consumer could not process, set aside (see docs/quarantine.md).",
    no_args_is_help=True,
)
app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("list")
def quarantine_list(
    all_: Annotated[bool, typer.Option("--all", help="Also those a replay resolved")] = False,
    consumer: Annotated[
        str | None, typer.Option(help="Only this consumer group, e.g. herald-matcher")
    ] = None,
    database_url: DatabaseOpt = None,
) -> None:
    """List what consumers set aside: which consumer, which change, why."""
    from events.quarantine import Quarantine

    async def main() -> list[QuarantinedMessage]:
        async with _store(_settings(database_url)) as store:
            return await Quarantine(store).records(include_resolved=all_, group=consumer)

    records = asyncio.run(main())
    if not records:
        console.print("nothing is quarantined")
    for record in records:  # one block each: reasons are long, and may hold brackets
        change = ", ".join(
            f"{name} {value}"
            for name, value in (
                ("event", record.event_id),
                ("version", record.version_id),
                ("sequence", record.sequence),
            )
            if value is not None
        )
        lines = [
            f"#{record.id} {record.status}: {record.consumer_group} on {record.topic}, "
            f"{record.key}" + (f" ({change})" if change else ""),
            f"  recorded {record.recorded_at.isoformat(timespec='seconds')} after "
            f"{record.attempts} tries"
            + (
                f"; resolved {record.resolved_at.isoformat(timespec='seconds')}"
                if record.resolved_at
                else ""
            ),
            f"  {record.error_class}: {record.reason}",
        ]
        console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


@quarantine_app.command("replay")
def quarantine_replay(
    record_id: Annotated[int, typer.Argument(help="The id `herald quarantine list` shows")],
    database_url: DatabaseOpt = None,
) -> None:
    """Feed a quarantined change to its consumer again (a running process of that consumer
    replays it within HERALD_QUARANTINE_REPLAY_SECONDS and marks it resolved if it succeeds)."""
    from events.quarantine import Quarantine

    async def main() -> QuarantinedMessage | None:
        async with _store(_settings(database_url)) as store:
            return await Quarantine(store).request_replay(record_id)

    record = asyncio.run(main())
    if record is None:
        console.print(
            f"[red]no quarantined change {record_id} waiting for a replay[/red]; "
            f"`herald quarantine list` lists them"
        )
        raise typer.Exit(1)
    console.print(
        f"quarantined change {record_id} ({record.consumer_group}, {record.key}) will be "
        f"replayed by a running {record.consumer_group}; `herald quarantine list --all` shows "
        f"whether it was resolved",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@asynccontextmanager
async def _ledger(settings: Settings) -> AsyncIterator[Ledger]:
    from subscriptions.ledger import Ledger

    async with _store(settings) as store:
        yield Ledger(store)


@asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[Store]:
    """The store of `settings`' database, its schema brought up to date first."""
    from fhirstore.clock import SystemClock
    from fhirstore.db.engine import create_engine
    from fhirstore.db.migrate import upgrade
    from fhirstore.store import Store

    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine)
        yield Store(engine, SystemClock())
    finally:
        await engine.dispose()


@app.command()
def asyncapi(
    output: Annotated[
        Path | None, typer.Option(help="Write to this file instead of stdout")
    ] = None,
) -> None:
    """Print the AsyncAPI document of the Kafka topics Herald writes (generated by FastStream)."""
    from herald.asyncapi import asyncapi_document

    document = json.dumps(asyncapi_document(), indent=2)
    if output:
        output.write_text(document + "\n")
    else:
        typer.echo(document)


scheduler_app = typer.Typer(help="The CarePlan scheduler.", no_args_is_help=True)
app.add_typer(scheduler_app, name="scheduler")


@scheduler_app.command("run")
def scheduler_run(database_url: DatabaseOpt = None, kafka_bootstrap: KafkaOpt = None) -> None:
    """Run only the CarePlan scheduler (a scaled-out scheduler process)."""
    _run_until_stopped(
        _settings(database_url, kafka_bootstrap, subscriptions=False, scheduler=True),
        run_relay=False,
    )


@scheduler_app.command("reconcile")
def scheduler_reconcile(
    database_url: DatabaseOpt = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help=(
                "Plan every CarePlan afresh, also those found settled (provably nothing to do)."
                " Run it after upgrading the time-zone rules (tzdata, the system's zoneinfo) or"
                " installing a fix to planning without a new Herald version: otherwise settled"
                " CarePlans keep the Tasks planned under the old rules."
            ),
        ),
    ] = False,
) -> None:
    """Reconcile every CarePlan now: materialise what is missing, repair what is wrong, and
    report what was fixed and which activities cannot be scheduled. CarePlans with provably
    nothing to do are left alone (counted as settled) unless --full."""
    from events.bus.memory import MemoryBus
    from fhirstore.access.audit import AuditTrail
    from herald.runtime import schedule_policy
    from scheduler.reconcile import Repairs
    from scheduler.service import Scheduler

    settings = _settings(database_url)
    _open_database(settings)

    async def main() -> tuple[Repairs, list[tuple[str, str | None, str]]]:
        async with _store(settings) as store, AuditTrail(store).writing() as trail:
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
            return repairs, await scheduler.skipped()

    repairs, skipped = asyncio.run(main())
    table = Table("what", "count")
    for kind, count in repairs.counts().items():
        table.add_row(kind.replace("_", " "), str(count))
    console.print(table)
    if skipped:
        why = Table("CarePlan", "activity", "not scheduled because")
        for careplan_id, activity, reason in skipped[:100]:
            why.add_row(careplan_id, activity or "(all)", reason)
        console.print(why)
        if len(skipped) > 100:
            console.print(f"... and {len(skipped) - 100} more (see CarePlan/{{id}}/$schedule)")


if __name__ == "__main__":
    app()
