"""Deadlines for client-driven queries (searches, history): past it, a 503, not a busy database.

`async with query_deadline(conn, seconds):` bounds the queries run on `conn` inside the block.

- PostgreSQL: `statement_timeout` for the transaction (`set_config(..., is_local => true)`),
  so each statement is cancelled by the server when it runs longer; the previous value is put
  back when the block ends, so a write transaction that ran a search (conditional create, a
  Bundle's GET entry) writes without it.
- SQLite: a progress handler on the connection, called every `_SQLITE_STEPS` virtual machine
  instructions, interrupts the running statement once the deadline has passed (the deadline
  is for all the block's queries together). It is removed when the block ends: writes never
  pay for it.

Either way the client gets `QueryTimeout` (503, issue code `timeout`) and the connection
stays usable: the statement was cancelled, not the session. The cancelled SQL and its
parameters are not kept in the error.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore.errors import FhirError

_SQLITE_STEPS = 100_000  # VM instructions between two looks at the clock (~ms of work)
_QUERY_CANCELED = "57014"  # PostgreSQL SQLSTATE of a cancelled statement


class QueryTimeout(FhirError):
    """A client-driven query ran past its deadline and was cancelled."""

    status = 503
    code = "timeout"


@asynccontextmanager
async def query_deadline(conn: AsyncConnection, seconds: float | None) -> AsyncIterator[None]:
    """Run the block's queries on `conn` under a deadline of `seconds` (None: none)."""
    if seconds is None:
        yield
        return
    sqlite = conn.dialect.name == "sqlite"
    arm = _sqlite_deadline if sqlite else _postgres_deadline
    try:
        async with arm(conn, seconds):
            yield
    except DBAPIError as error:
        if not _timed_out(error, sqlite):
            raise
        raise QueryTimeout(
            f"the search took longer than this server allows ({seconds:g} s, "
            "HERALD_SEARCH_TIMEOUT_SECONDS) and was stopped; narrow it (fewer values, more "
            "selective parameters, a smaller _count) and ask again"
        ) from None


def _timed_out(error: DBAPIError, sqlite: bool) -> bool:
    if sqlite:
        return "interrupted" in str(error.orig)
    return getattr(error.orig, "sqlstate", None) == _QUERY_CANCELED


@asynccontextmanager
async def _postgres_deadline(conn: AsyncConnection, seconds: float) -> AsyncIterator[None]:
    milliseconds = str(max(1, int(seconds * 1000)))
    # Read the value in force, then set the local one (left to right, in one round trip).
    previous_value = func.current_setting("statement_timeout")
    armed = select(previous_value, func.set_config("statement_timeout", milliseconds, True))
    previous = (await conn.execute(armed)).scalar_one()
    yield  # on an error the transaction is aborted and ends with its setting
    await conn.execute(select(func.set_config("statement_timeout", previous, True)))


@asynccontextmanager
async def _sqlite_deadline(conn: AsyncConnection, seconds: float) -> AsyncIterator[None]:
    driver: Any = (await conn.get_raw_connection()).driver_connection  # aiosqlite.Connection
    ends = time.monotonic() + seconds

    def past_deadline() -> int:  # on the driver's thread; non-zero interrupts the statement
        return 1 if time.monotonic() > ends else 0

    await driver.set_progress_handler(past_deadline, _SQLITE_STEPS)
    try:
        yield
    finally:
        await driver.set_progress_handler(None, 0)
