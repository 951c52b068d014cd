"""Migration 0011 adds the index rows searches now need to the resources stored before it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from alembic import command
from sqlalchemy import insert, select

from fhirstore.db.engine import create_engine
from fhirstore.db.migrate import alembic_config
from fhirstore.db.schema import resources, search_index
from fhirstore.search.query import parse_search
from fhirstore.search.sql import run_search
from tests.fhirstore.search.terms_corpus import observations, patients

# a blood pressure panel, 6000 ug, a typed identifier
STORED = [observations()[0], observations()[6], patients()[0]]
SEARCHES = [
    ("Observation", "component-code-value-quantity", "8480-6$gt140"),
    ("Observation", "value-quantity", "6|http://unitsofmeasure.org|mg"),
    ("Patient", "identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345"),
]


def _migrate(sync: Any, revision: str, *, down: bool = False) -> None:
    (command.downgrade if down else command.upgrade)(alembic_config(sync), revision)


async def _found(conn: Any) -> list[list[str]]:
    found = []
    for resource_type, name, value in SEARCHES:
        result = await run_search(conn, parse_search(resource_type, [(name, value)]))
        found.append([json.loads(body)["id"] for body in result.resources])
    return found


async def test_upgrade_rebuilds_the_rows_of_stored_resources(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "0010")
            for resource in STORED:
                await conn.execute(
                    insert(resources).values(
                        res_type=resource["resourceType"],
                        res_id=resource["id"],
                        version_id=1,
                        last_updated=datetime(2026, 1, 1, tzinfo=UTC),
                        deleted=False,
                        body=json.dumps(resource),
                    )
                )
            # as an older Herald indexed it: the identifier without its type
            await conn.execute(
                insert(search_index).values(
                    res_type="Patient", res_id="p-1", param="identifier", code="12345"
                )
            )
            assert await _found(conn) == [[], [], []]
            await conn.run_sync(_migrate, "head")
            assert await _found(conn) == [["bp-1"], ["mass-ug"], ["p-1"]]
            params = await conn.execute(select(search_index.c.param).distinct())
            assert {"identifier", "identifier:of-type"} <= {p for (p,) in params}
            await conn.run_sync(_migrate, "0010", down=True)
            assert await _found(conn) == [[], [], []]
            await conn.run_sync(_migrate, "head")
    finally:
        await engine.dispose()
