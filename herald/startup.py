"""Start-up checks that turn the usual mistakes into one line an operator can act on.

Before a command starts its workers (and before `herald serve` says where it serves),
`open_database` opens the database the settings name, brings its schema up to date and
tries a write that it rolls back; `listen` binds the API's port. Either raises `CannotStart`
whose message says what is wrong and what to do (a bad URL, a missing or unwritable folder,
a read-only file or standby server, PostgreSQL unreachable or refusing the login, a port
already in use), and the command prints it as one line and exits non-zero, without a
traceback. Passwords are never printed.

So do `settings_problem` (a setting whose value is not of its type, e.g. `HERALD_PORT=abc`)
and `start_runtime` (a part that fails to start: Kafka unreachable at `HERALD_KAFKA_BOOTSTRAP`,
or anything else; `herald serve` starts the runtime before it serves, so such a failure comes
before it says where it serves).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from fhirstore.db import create_engine, upgrade

if TYPE_CHECKING:
    from herald.runtime import Runtime

log = logging.getLogger(__name__)

OPEN_SECONDS = 30.0  # the database must answer within this at start
_URL_FORMS = (
    "sqlite+aiosqlite:///path/to/herald.db or postgresql+asyncpg://user:password@host/database"
)
_ACCESS = (
    "Herald needs to read and write the file and create files beside it (the -wal and -shm "
    "files): check that the folder exists and that Herald's user owns both, or set "
    "HERALD_DATABASE_URL to a path it can write"
)
_SQLITE_CODES = {  # SQLite's result code -> (what is wrong, what to do)
    sqlite3.SQLITE_READONLY: ("it is read-only", _ACCESS),
    sqlite3.SQLITE_CANTOPEN: ("it cannot be opened", _ACCESS),
    sqlite3.SQLITE_PERM: ("access is denied", _ACCESS),
    sqlite3.SQLITE_NOTADB: (
        "the file is not a SQLite database",
        "set HERALD_DATABASE_URL to Herald's database file, or to a new path",
    ),
    sqlite3.SQLITE_CORRUPT: ("the file is damaged", "restore it from a backup"),
    sqlite3.SQLITE_BUSY: (
        "another process holds its write lock",
        "stop the other process (another Herald?) or wait for it to finish",
    ),
    sqlite3.SQLITE_FULL: ("the disk is full", "free disk space where the file is"),
}


class CannotStart(Exception):
    """Why the process cannot start, said so an operator knows what to do."""


async def open_database(url: str) -> None:
    """Open the database at `url`, bring its schema up to date and check that it takes
    writes; `CannotStart` if not."""
    parsed = _parse(url)
    shown = parsed.render_as_string(hide_password=True)
    try:
        engine = create_engine(url)
    except OSError as error:  # the SQLite file's folder could not be made
        raise CannotStart(_folder_problem(parsed, error)) from None
    except (ImportError, NoSuchModuleError, ArgumentError) as error:
        raise CannotStart(_url_problem(shown, error)) from None
    try:
        async with asyncio.timeout(OPEN_SECONDS):
            await upgrade(engine)
            async with engine.connect() as conn:  # a write, rolled back: read-only shows here
                await conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
                await conn.rollback()
    except TimeoutError:
        raise CannotStart(
            f"the database {shown} did not answer within {OPEN_SECONDS:g} s; check that it is "
            "running and reachable from here (host, port, firewall)"
        ) from None
    except Exception as error:
        raise CannotStart(_database_problem(parsed, shown, error)) from None
    finally:
        await engine.dispose()


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` for the API (not yet listening); `CannotStart` if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise CannotStart(_bind_problem(host, port, error)) from None
    return sock


async def start_runtime(runtime: Runtime) -> None:
    """Start `runtime`; if a part of it fails, stop what started and raise `CannotStart`."""
    try:
        await runtime.start()
    except Exception as error:
        log.debug("the runtime failed to start", exc_info=True)  # the stack, for DEBUG only
        with contextlib.suppress(Exception):
            await runtime.stop()
        raise CannotStart(_runtime_problem(runtime, error)) from None


def settings_problem(error: ValidationError) -> str:
    """Which settings have values that are not of their type, and what each should be. The
    values are not repeated: one may be a password."""
    problems = [
        f"HERALD_{'_'.join(str(part) for part in problem['loc']).upper()}: {problem['msg']}"
        for problem in error.errors(include_url=False, include_input=False)
    ]
    return (
        f"{'; '.join(problems)}. Fix it in Herald's environment (or the matching "
        "command-line option)"
    )


def _runtime_problem(runtime: Runtime, error: Exception) -> str:
    bootstrap = runtime.settings.kafka_bootstrap
    if isinstance(error, KafkaConnectionError):
        return (
            f"cannot connect to Kafka at {bootstrap}; check that it is running and reachable "
            "from here, and that HERALD_KAFKA_BOOTSTRAP names its host:port (unset it to run "
            "with the in-process bus)"
        )
    if isinstance(error, KafkaError):
        return (
            f"Kafka at {bootstrap} refused Herald ({type(error).__name__}: {_words(error)}); "
            "check the broker's state and HERALD_KAFKA_BOOTSTRAP"
        )
    return (
        f"a part of Herald failed to start ({type(error).__name__}: {_words(error)}); "
        "HERALD_LOG_LEVEL=DEBUG logs where"
    )


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise CannotStart(
            f"HERALD_DATABASE_URL is not a database URL; write it as {_URL_FORMS}"
        ) from None


def _url_problem(shown: str, error: Exception) -> str:
    return (
        f"HERALD_DATABASE_URL {shown} names a database Herald has no driver for "
        f"({type(error).__name__}: {error}); write it as {_URL_FORMS}"
    )


def _folder_problem(parsed: URL, error: OSError) -> str:
    folder = Path(parsed.database or "").expanduser().parent
    return (
        f"cannot create the folder {folder} for the SQLite database ({error.strerror}); "
        "create it and let Herald's user write in it, or set HERALD_DATABASE_URL to a path "
        "it can write"
    )


def _database_problem(parsed: URL, shown: str, error: BaseException) -> str:
    cause = _driver_error(error)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_problem(parsed, cause)
    return _postgres_problem(parsed, shown, cause)


def _sqlite_problem(parsed: URL, error: BaseException) -> str:
    path = Path(parsed.database or "").expanduser()
    code = getattr(error, "sqlite_errorcode", None)
    why, todo = _SQLITE_CODES.get(code & 0xFF if isinstance(code, int) else -1) or (
        _words(error),
        _ACCESS,
    )
    return f"cannot use the SQLite database {path}: {why}. {todo[0].upper()}{todo[1:]}"


def _postgres_problem(parsed: URL, shown: str, error: BaseException) -> str:
    where = f"PostgreSQL at {parsed.host or 'localhost'}:{parsed.port or 5432}"
    state = getattr(error, "sqlstate", None)
    if state == "25006":  # read_only_sql_transaction
        return (
            f"{where} accepts no writes (a standby, or default_transaction_read_only is on); "
            "point HERALD_DATABASE_URL at the primary server"
        )
    if isinstance(error, OSError) and not state:
        why = os.strerror(error.errno) if error.errno else _words(error)
        return (
            f"cannot connect to {where} ({why}); check that it is "
            "running and that HERALD_DATABASE_URL names the right host and port"
        )
    return (
        f"cannot use the database {shown}: {_words(error)}; check the user, password and "
        "database name in HERALD_DATABASE_URL and the user's rights"
    )


def _bind_problem(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use (another Herald?); stop what uses it, or "
            "choose another port with --port or HERALD_PORT"
        )
    if error.errno == errno.EACCES:
        return (
            f"not allowed to listen on port {port} (ports below 1024 need privileges); "
            "choose another port with --port or HERALD_PORT"
        )
    if error.errno == errno.EADDRNOTAVAIL or isinstance(error, socket.gaierror):
        return (
            f"{host} is not an address of this machine; set --host or HERALD_HOST to one of "
            "its addresses (0.0.0.0 for all)"
        )
    return f"cannot listen on {host}:{port} ({error.strerror or error}); check --host and --port"


def _driver_error(error: BaseException) -> BaseException:
    """The driver's own error under SQLAlchemy's wrapping, or `error` itself."""
    if isinstance(error, DBAPIError) and isinstance(error.orig, BaseException):
        orig = error.orig
        return orig.__cause__ if isinstance(orig.__cause__, BaseException) else orig
    return error


def _words(error: BaseException) -> str:
    """The first line of an error's message (a driver's text: never holds a password)."""
    first = str(error).strip().splitlines()
    return first[0] if first and first[0] else type(error).__name__
