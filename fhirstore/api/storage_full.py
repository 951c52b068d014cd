"""A full disk, told to the client as such: 507 Insufficient Storage, not a generic 500.

`is_storage_full` recognises the error however it arrives: SQLite's SQLITE_FULL ("database
or disk is full", also raised when the database reaches `PRAGMA max_page_count`),
PostgreSQL's `disk_full` (SQLSTATE 53100: "could not extend file", a full tablespace) and an
`OSError` with ENOSPC or EDQUOT, whether raised directly or wrapped by SQLAlchemy and the
driver (the chain of causes and `orig` is followed).

The write that met it was rolled back by the database, so nothing of it is stored; reads go
on working, and writes succeed again as soon as there is room (nothing to restart).
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator

from fhirstore.errors import InsufficientStorage

_SQLITE_FULL = 13  # https://sqlite.org/rescode.html#full
_PG_DISK_FULL = "53100"  # https://www.postgresql.org/docs/current/errcodes-appendix.html
_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_CHAIN = 8  # causes followed, at most

MESSAGE = (
    "the server's database storage is full, so this write was not stored (nothing of it "
    "was kept). Reads still work. Retry the write later; if it keeps failing, tell the "
    "server's operator, who must free disk space or grow the database's volume."
)


def storage_full() -> InsufficientStorage:
    """The error a client gets for a write that met a full disk."""
    return InsufficientStorage(MESSAGE)


def is_storage_full(error: BaseException) -> bool:
    """Whether `error`, or what caused it, says the database or its disk is full."""
    return any(_full(e) for e in _causes(error))


def _full(error: BaseException) -> bool:
    if isinstance(error, sqlite3.Error):
        return getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL
    if getattr(error, "sqlstate", None) == _PG_DISK_FULL:  # asyncpg, and SQLAlchemy's adapter
        return True
    return isinstance(error, OSError) and error.errno in _ERRNOS


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo and len(seen) < _CHAIN:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)  # SQLAlchemy's DBAPIError
        todo += [current.__cause__, current.__context__]
        if isinstance(orig, BaseException):
            todo.append(orig)
