"""INSERT ... ON CONFLICT DO UPDATE for both databases (SQLite and PostgreSQL speak the same)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection


async def upsert(
    conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]], *, key: Sequence[str]
) -> None:
    """Insert `rows`; a row whose `key` columns exist already overwrites the other columns."""
    if not rows:
        return
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(table)
    others = {c: statement.excluded[c] for c in rows[0] if c not in key}
    await conn.execute(
        statement.on_conflict_do_update(index_elements=[table.c[k] for k in key], set_=others),
        list(rows),
    )
