"""Column types every package's tables use: UTC timestamps and 64-bit row ids.

`UtcDateTime` fixes a database quirk once, in the column, rather than at every read: SQLite
hands timestamps back naive (it stores them as text without an offset), PostgreSQL aware
(`timestamp with time zone`). Written values are converted to UTC (a naive one is taken to be
UTC already) and read values always come back aware, in UTC. What is stored is what
`DateTime(timezone=True)` stored before: the same text on SQLite, the same timestamptz on
PostgreSQL, so no migration was needed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Integer
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants a BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back as an aware UTC datetime."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
