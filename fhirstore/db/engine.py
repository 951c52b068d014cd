"""Engine creation for the two supported databases: SQLite (WAL, embedded) and PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fhirstore.db.checkpoint import JOURNAL_SIZE_LIMIT, Checkpointer

# Below WARNING these loggers record every statement with its parameters (aiosqlite) and the
# rows it returned (SQLAlchemy): searched values and resource content. Never logged, whatever
# the root level; their warnings and errors still are (SQL without parameters).
_QUIET_LOGGERS = ("sqlalchemy.engine", "sqlalchemy.pool", "aiosqlite")


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine for `url`; a bare SQLite path's folder is created if missing."""
    parsed = make_url(url)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    # Error messages name the SQL but never its parameters: they hold searched values and
    # resource content, and errors end up in logs.
    engine = create_async_engine(parsed, hide_parameters=True, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def checkpointer(engine: AsyncEngine) -> Checkpointer | None:
    """What checkpoints the WAL of a SQLite database file (None: PostgreSQL, or in memory)."""
    database = engine.url.database
    if not is_sqlite(engine) or not database or database == ":memory:":
        return None
    return Checkpointer(str(Path(database).expanduser()))


def writer(engine: AsyncEngine) -> AsyncEngine:
    """The engine to open write transactions with (SQLite: BEGIN IMMEDIATE)."""
    return engine.execution_options(**{_IMMEDIATE: True}) if is_sqlite(engine) else engine


_IMMEDIATE = "herald_sqlite_immediate"
_CACHE_KIB = 64 * 1024  # per connection, at most


def _sqlite_begin(conn: Any) -> None:
    # The driver would only BEGIN at the first write, leaving earlier reads of a "transaction"
    # outside it. Writers take the database's write lock up front, so the rows they read
    # (current versions, conditional matches) cannot change under them, even from another
    # process on the same file.
    immediate = conn.get_execution_options().get(_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (_sqlite_begin)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # The store checkpoints on a thread of its own (db/checkpoint.py), not inside commits.
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
    cursor.execute("PRAGMA foreign_keys=ON")
    # SQLite's default page cache (2 MiB) is smaller than what one batch of writes dirties
    # (a 50-CarePlan scheduler batch touches thousands of index pages): it then spills pages
    # to the WAL mid-transaction and reads them back. The cache grows only as it is used.
    cursor.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
    cursor.close()
