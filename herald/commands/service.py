"""The long-running commands: `serve` (the API and, by default, every worker), `relay` and
`scheduler run` (one worker each, for a scaled-out deployment), and `migrate`."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Annotated

import typer
import uvicorn

from herald.commands.common import (
    DatabaseOpt,
    KafkaOpt,
    console,
    load_settings,
    open_database,
    or_exit,
    store_of,
)
from herald.settings import Settings

if TYPE_CHECKING:
    from herald.runtime import Runtime

log = logging.getLogger("herald")


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
    """Run the FHIR API (and, unless --no-relay / --no-subscriptions / --no-scheduler, the
    outbox relay, the subscription matcher and dispatcher and the CarePlan scheduler) in this
    process."""
    from channels.websocket import MAX_FRAME_BYTES
    from herald.app import create_app
    from herald.runtime import Runtime
    from herald.startup import listen, start_runtime

    settings = load_settings(
        database_url,
        kafka_bootstrap,
        host=host,
        port=port,
        subscriptions=subscriptions,
        scheduler=scheduler,
    )
    open_database(settings)
    with or_exit():
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
        with or_exit():
            await start_runtime(runtime)
        # uvicorn answers SIGTERM and SIGINT while it serves, and when done raises the signal
        # again for the handler found before: this one, so that the runtime stops cleanly
        # and the process exits 0. (Until here, a signal ends the process at once.)
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop_signal, lambda *_: setattr(server, "should_exit", True))
        try:
            _announce(settings)
            await server.serve(sockets=[sock])
        finally:
            await runtime.stop()

    with sock, asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(main())
    if not server.started:
        raise typer.Exit(3)  # uvicorn did not start: its log says why


def _announce(settings: Settings) -> None:
    if settings.embedded_bus:
        log.warning(
            "running the embedded default: in-process bus. Set HERALD_KAFKA_BOOTSTRAP and a "
            "PostgreSQL HERALD_DATABASE_URL to scale out."
        )
    console.print(
        f"Herald FHIR base: http://{settings.host}:{settings.port}{settings.fhir_base_path}"
    )


def relay(database_url: DatabaseOpt = None, kafka_bootstrap: KafkaOpt = None) -> None:
    """Run only the outbox relay (for a scaled-out deployment)."""
    _run_until_stopped(
        load_settings(database_url, kafka_bootstrap, subscriptions=False, scheduler=False),
        run_relay=True,
    )


def scheduler_run(database_url: DatabaseOpt = None, kafka_bootstrap: KafkaOpt = None) -> None:
    """Run only the CarePlan scheduler (a scaled-out scheduler process)."""
    _run_until_stopped(
        load_settings(database_url, kafka_bootstrap, subscriptions=False, scheduler=True),
        run_relay=False,
    )


def _run_until_stopped(settings: Settings, *, run_relay: bool) -> None:
    """Run the workers `settings` turn on (no API) until the process is stopped."""
    from herald.runtime import Runtime
    from herald.startup import start_runtime

    open_database(settings)

    async def main() -> None:
        runtime: Runtime
        with or_exit():
            runtime = Runtime(settings, run_relay=run_relay)
            await start_runtime(runtime)
        try:
            await asyncio.Event().wait()
        finally:
            await runtime.stop()

    asyncio.run(main())


def migrate(database_url: DatabaseOpt = None) -> None:
    """Create the database, or bring its schema up to date (serve does this too at start)."""
    settings = load_settings(database_url)
    open_database(settings)
    console.print("schema is up to date")
    if asyncio.run(_index_is_older(settings)):
        console.print(
            "the search index was built by an older Herald: `herald serve` rebuilds it in the "
            "background at start, or run `herald reindex` now (docs/operations.md)"
        )


async def _index_is_older(settings: Settings) -> bool:
    from fhirstore import Reindex

    async with store_of(settings) as store:
        return await Reindex(store).needed()
