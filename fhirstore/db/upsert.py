"""Bulk INSERT, plain or ON CONFLICT DO UPDATE, for both databases (SQLite and PostgreSQL speak
the same), handed straight to the driver.

Writes insert rows by the thousand (a write of 1,500 resources inserts some 20,000), and
SQLAlchemy's per-row parameter processing cost more than the inserts themselves. So each
statement is written once per shape and the rows go straight to the driver, each value
converted by its column type's own bind processor: what SQLAlchemy would have bound (SQLite
stores a datetime as text and a boolean as 0/1; asyncpg takes both as they are). PostgreSQL
gets an executemany; SQLite multi-row statements, which it runs without the interpreter lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection


async def insert_rows(
    conn: AsyncConnection, table: Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    """INSERT `rows`, values in `columns` order and already as the driver takes them.

    On SQLite as multi-row statements (see `insert_chunks`), elsewhere as an executemany.
    """
    await _insert(conn, table.name, columns, rows, ())


async def _insert(
    conn: AsyncConnection,
    table: str,
    columns: tuple[str, ...],
    rows: list[tuple[Any, ...]],
    key: tuple[str, ...],
) -> None:
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        for sql, parameters in _values_statements(conn.dialect, table, columns, rows, key):
            await conn.exec_driver_sql(sql, parameters)
        return
    await conn.exec_driver_sql(_insert_sql(conn.dialect, table, columns, key), rows)


async def insert_chunks(
    conn: AsyncConnection,
    table: Table,
    columns: tuple[str, ...],
    chunks: Iterable[list[tuple[Any, ...]]],
) -> None:
    """INSERT the rows of each chunk (values in `columns` order, as the driver takes them).

    On SQLite, the next chunk is computed while the database inserts this one. Each chunk goes
    to SQLite as one multi-row INSERT ... VALUES statement, during whose execution the sqlite3
    module does not hold the interpreter lock; an executemany would take it back for every
    row, and a busy Python thread hands it over only every switch interval.
    """
    if conn.dialect.name != "sqlite":
        await insert_rows(conn, table, columns, [row for chunk in chunks for row in chunk])
        return
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    pending: asyncio.Future[Any] | None = None
    try:
        for rows in chunks:
            statements = _values_statements(conn.dialect, table.name, columns, rows)
            if pending is not None:
                await pending
                pending = None
            if statements:
                pending = asyncio.ensure_future(_execute_all(driver, statements))
                await asyncio.sleep(0)  # let it reach the driver's thread before computing more
    finally:
        if pending is not None:
            await pending


# The most parameters one SQLite statement may have (SQLITE_MAX_VARIABLE_NUMBER, 3.32 on).
_SQLITE_MAX_VARIABLES = 32_766


def _values_statements(
    dialect: Dialect,
    table: str,
    columns: tuple[str, ...],
    rows: Sequence[tuple[Any, ...]],
    key: tuple[str, ...] = (),
) -> list[tuple[str, tuple[Any, ...]]]:
    """SQLite: `rows` as few multi-row INSERT statements as the parameter limit allows."""
    most = _SQLITE_MAX_VARIABLES // len(columns)
    parts = (rows[start : start + most] for start in range(0, len(rows), most))
    return [
        (
            _insert_sql(dialect, table, columns, key, len(part)),
            tuple([value for row in part for value in row]),
        )
        for part in parts
    ]


async def _execute_all(driver: Any, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    for sql, parameters in statements:
        await driver.execute_fetchall(sql, parameters)


async def upsert(
    conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]], *, key: Sequence[str]
) -> None:
    """Insert `rows`; a row whose `key` columns exist already overwrites the other columns
    (no `key`: a plain INSERT)."""
    if not rows:
        return
    columns = tuple(rows[0])
    binders = [(name, _processor(conn, table.c[name])) for name in columns]
    values = [
        tuple(row[name] if bind is None else bind(row[name]) for name, bind in binders)
        for row in rows
    ]
    await _insert(conn, table.name, columns, values, tuple(key))


def bound(conn: AsyncConnection, column: Column[Any], value: Any) -> Any:
    """`value` as SQLAlchemy would hand it to the driver for `column`."""
    bind = _processor(conn, column)
    return value if bind is None else bind(value)


def _processor(conn: AsyncConnection, column: Column[Any]) -> Callable[[Any], Any] | None:
    return column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)


@lru_cache(maxsize=256)
def _insert_sql(
    dialect: Dialect, table: str, columns: tuple[str, ...], key: tuple[str, ...], count: int = 1
) -> str:
    """The INSERT of `count` rows of `columns` (more than one: SQLite's `?` marks only); with
    `key`, the other columns overwrite on conflict."""
    if dialect.paramstyle == "numeric_dollar" and count == 1:
        marks = [f"${n}" for n in range(1, len(columns) + 1)]
    elif dialect.paramstyle == "qmark":
        marks = ["?"] * len(columns)
    else:
        raise RuntimeError(f"unsupported DBAPI paramstyle {dialect.paramstyle!r}")
    quote = dialect.identifier_preparer.quote
    names = [quote(c) for c in columns]
    values = ", ".join([f"({', '.join(marks)})"] * count)
    sql = f"INSERT INTO {quote(table)} ({', '.join(names)}) VALUES {values}"
    if not key:
        return sql
    others = [f"{quote(c)} = excluded.{quote(c)}" for c in columns if c not in key]
    action = f"DO UPDATE SET {', '.join(others)}" if others else "DO NOTHING"
    return f"{sql} ON CONFLICT ({', '.join(quote(k) for k in key)}) {action}"
