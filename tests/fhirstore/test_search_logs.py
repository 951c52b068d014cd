"""Logs never carry what a client searched for: not in a failed query's error, not in the
database drivers' debug records, at any level, on both databases."""

from __future__ import annotations

import logging

import httpx
import pytest
from sqlalchemy import text

from herald.runtime import Runtime

SECRET = "Zqxvwyborrowdale"  # a patient name nobody else would log


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Herald's records, whole: message, structured fields and traceback (the test's own HTTP
    client logs the URLs it asks for)."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    server = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    return "\n".join(f"{formatter.format(r)} {vars(r)}" for r in server)


async def test_a_failed_search_logs_neither_the_searched_value_nor_the_sql_parameters(
    herald: tuple[Runtime, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    runtime, client = herald
    created = await client.post(
        "/Patient", json={"resourceType": "Patient", "name": [{"family": SECRET}]}
    )
    assert created.status_code == 201
    caplog.set_level(logging.DEBUG)
    async with runtime.engine.begin() as conn:  # the database fails every search from now
        await conn.execute(text("ALTER TABLE search_index RENAME TO search_index_away"))
    try:
        response = await client.get("/Patient", params={"name": SECRET, "_sort": "name"})
        assert response.status_code == 500
        assert response.json()["resourceType"] == "OperationOutcome"
        assert SECRET not in response.text
    finally:
        async with runtime.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE search_index_away RENAME TO search_index"))

    found = await client.get("/Patient", params={"name": SECRET})
    assert found.status_code == 200 and len(found.json()["entry"]) == 1
    logged = _logged(caplog)
    # The failure is logged with what failed (the exception's kinds), never its message.
    assert "sqlalchemy.exc." in logged
    assert SECRET not in logged
    assert SECRET.lower() not in logged.lower()
