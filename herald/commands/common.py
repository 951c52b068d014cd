"""What every subcommand shares: its settings, the database it uses (named on stderr, one
line), opening that database, and a start-up problem as one line and exit status 2."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from herald.logging import configure_logging
from herald.settings import Settings

if TYPE_CHECKING:
    from fhirstore import Store
    from subscriptions import Ledger

console = Console(stderr=True)

DatabaseOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="Overrides HERALD_DATABASE_URL and HERALD_DATA_DIR"),
]
KafkaOpt = Annotated[
    str | None, typer.Option("--kafka-bootstrap", help="Overrides HERALD_KAFKA_BOOTSTRAP")
]


def load_settings(
    database_url: str | None = None, kafka_bootstrap: str | None = None, **kw: object
) -> Settings:
    """The settings from the environment, with the options given on the command line."""
    overrides = {k: v for k, v in kw.items() if v is not None}
    if database_url:
        overrides["database_url"] = database_url
    if kafka_bootstrap:
        overrides["kafka_bootstrap"] = kafka_bootstrap
    with or_exit():
        settings = Settings(**overrides)  # type: ignore[arg-type]
    configure_logging(settings.log_level, settings.log_format)
    return settings


def shown_url(settings: Settings) -> str:
    """The database URL without its password (never the text of a URL that does not parse:
    it may hold one)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(settings.database_url).render_as_string(hide_password=True)
    except ArgumentError:
        return "HERALD_DATABASE_URL (not a database URL)"


def open_database(settings: Settings, *, existing: bool = False) -> None:
    """Say which database this command uses, then open it, bring its schema up to date and
    check that it takes writes (see herald.startup); if it cannot be used, say why in one
    line and exit. `existing`: a command that reads what a running Herald wrote refuses a
    SQLite file that is not there (it would make a new, empty one and report nothing)."""
    from herald.startup import open_database as open_checked

    console.print(f"database: {shown_url(settings)}", markup=False, highlight=False, soft_wrap=True)
    if existing:
        _refuse_missing(settings)
    with or_exit():
        asyncio.run(open_checked(settings.database_url))


def _refuse_missing(settings: Settings) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        return  # opening it says what is wrong with the URL
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    path = Path(url.database).expanduser().absolute()
    if not path.exists():
        cannot_start(
            f"there is no Herald database at {path}. Run this command with the "
            "HERALD_DATA_DIR (or HERALD_DATABASE_URL, --database-url) of the Herald whose "
            "data you mean; `herald serve` and `herald migrate` create the database"
        )


@contextmanager
def or_exit() -> Iterator[None]:
    """A start-up problem (a setting that cannot work, the database, the port, a part of the
    runtime such as Kafka) as one line on stderr and exit status 2, without a traceback."""
    from pydantic import ValidationError

    from herald.startup import CannotStart, settings_problem

    try:
        yield
    except ValidationError as error:  # before ValueError, of which it is one
        cannot_start(settings_problem(error))
    except (ValueError, CannotStart) as error:
        cannot_start(str(error))


def cannot_start(problem: str) -> NoReturn:
    console.print(
        f"cannot start: {problem}", style="red", markup=False, highlight=False, soft_wrap=True
    )
    raise typer.Exit(2) from None


@asynccontextmanager
async def store_of(settings: Settings) -> AsyncIterator[Store]:
    """The store of `settings`' database, its schema brought up to date first."""
    from fhirstore import Store, SystemClock
    from fhirstore.db import create_engine, upgrade

    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine)
        yield Store(engine, SystemClock())
    finally:
        await engine.dispose()


@asynccontextmanager
async def ledger_of(settings: Settings) -> AsyncIterator[Ledger]:
    """The subscription ledger of `settings`' database."""
    from subscriptions import Ledger

    async with store_of(settings) as store:
        yield Ledger(store)
