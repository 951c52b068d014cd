"""Timestamp columns store UTC and read back aware UTC datetimes, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import insert, select, text

from fhirstore.db.engine import create_engine
from fhirstore.db.migrate import upgrade
from fhirstore.db.schema import audit_log

_ENTRY = {"kind": "rest", "interaction": "read", "outcome": "200"}


async def test_a_local_time_is_stored_as_utc_and_read_back_aware(database_url: str) -> None:
    local = datetime(2026, 3, 29, 8, 30, tzinfo=timezone(timedelta(hours=2)))
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(insert(audit_log).values(**_ENTRY, recorded_at=local))
            read = (await conn.execute(select(audit_log.c.recorded_at))).scalar_one()
            if conn.dialect.name == "sqlite":
                stored = "SELECT recorded_at FROM audit_log"
            else:
                stored = "SELECT to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
                stored += " FROM audit_log"
            raw = (await conn.execute(text(stored))).scalar_one()
    finally:
        await engine.dispose()
    assert read == local
    assert read.tzinfo is UTC
    assert read.hour == 6
    assert raw.startswith("2026-03-29 06:30:00")


async def test_a_row_written_without_the_column_type_reads_back_aware_utc(
    database_url: str,
) -> None:
    """Rows stored before the column type existed, or by hand (SQLite: text without an
    offset, which SQLAlchemy alone hands back naive)."""
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            at, value = ":at", "2026-12-06 23:59:58.250000"
            if conn.dialect.name == "postgresql":
                at, value = "CAST(CAST(:at AS TEXT) AS TIMESTAMPTZ)", value + "+00"
            await conn.execute(
                text(
                    "INSERT INTO audit_log (recorded_at, kind, interaction, outcome) "
                    f"VALUES ({at}, 'rest', 'read', '200')"
                ),
                {"at": value},
            )
            read = (await conn.execute(select(audit_log.c.recorded_at))).scalar_one()
    finally:
        await engine.dispose()
    assert read == datetime(2026, 12, 6, 23, 59, 58, 250000, tzinfo=UTC)
    assert read.tzinfo is UTC
