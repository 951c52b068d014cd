"""Bring a database to the current schema with Alembic (safe to run from several processes).

Schema only: rebuilding the search index for a newer extraction is `fhirstore.reindex`'s work.
A database without live resources has nothing to rebuild, and is recorded as indexed by this
version here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from fhirstore.db.locks import MIGRATION_LOCK_KEY
from fhirstore.search.index_state import stamp_if_empty

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(connection: Any | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), "head"))
        await stamp_if_empty(conn)
