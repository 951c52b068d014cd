"""One client's poison write fails alone: the other writes that shared its group-commit batch
are retried one by one and all succeed, on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from sqlalchemy import text

from herald.runtime import Runtime
from tests.support.herald import running_herald

POISON = "poison-pill"

# A failure only the database knows about (no validation can see it coming): the insert of a
# resource whose body mentions POISON errors out inside the database.
_TRIGGERS = {
    "sqlite": [
        f"CREATE TRIGGER poison BEFORE INSERT ON resources WHEN NEW.body LIKE '%{POISON}%' "
        "BEGIN SELECT abs(-9223372036854775808); END"  # 'integer overflow', at run time
    ],
    "postgresql": [
        "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
        f"IF NEW.body LIKE '%{POISON}%' THEN RAISE EXCEPTION 'refused by trigger'; END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER poison BEFORE INSERT ON resources FOR EACH ROW EXECUTE FUNCTION poison()",
    ],
}


async def _install_poison(runtime: Runtime) -> None:
    async with runtime.engine.begin() as conn:
        for statement in _TRIGGERS[conn.dialect.name]:
            await conn.execute(text(statement))


async def _concurrent(
    client: httpx.AsyncClient, good: int, bad: list[dict]
) -> tuple[list[httpx.Response], list[httpx.Response]]:
    async def create(body: dict) -> httpx.Response:
        return await client.post("/Patient", json=body)

    goods = [{"resourceType": "Patient", "name": [{"family": f"Good{i}"}]} for i in range(good)]
    # The poison writes arrive among the others, so they share batches with them.
    every = max(1, good // (len(bad) + 1))
    order = list(goods)
    for n, body in enumerate(bad):
        order.insert((n + 1) * every + n, body)
    responses = await asyncio.wait_for(asyncio.gather(*(create(b) for b in order)), 120)
    by_body = dict(zip((id(b) for b in order), responses, strict=True))
    return [by_body[id(b)] for b in goods], [by_body[id(b)] for b in bad]


async def _count(client: httpx.AsyncClient, family: str) -> int:
    response = await client.get("/Patient", params={"name": family, "_total": "accurate"})
    assert response.status_code == 200
    return response.json()["total"]


async def test_a_write_the_database_refuses_fails_alone(
    herald: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = herald
    await _install_poison(runtime)
    bad = [{"resourceType": "Patient", "name": [{"family": POISON}]} for _ in range(5)]
    goods, poisoned = await _concurrent(client, 300, bad)

    assert [r.status_code for r in goods] == [201] * 300
    for response in poisoned:
        assert response.status_code >= 400
        assert response.json()["resourceType"] == "OperationOutcome"
    assert await _count(client, "Good") == 300
    assert await _count(client, POISON) == 0  # nothing of it half-written
    history = await client.get("/Patient/_history", params={"_count": "1"})
    assert history.json()["total"] == 300
    assert (await client.get("http://herald.test/healthz")).status_code == 200


@pytest.fixture
async def postgres_client(
    fresh_database: Callable[[str], str],
) -> AsyncIterator[httpx.AsyncClient]:
    """PostgreSQL only: SQLite stores a NUL character, PostgreSQL refuses it."""
    async with running_herald(fresh_database("group_commit_nul")) as (_, client):
        yield client


async def test_a_nul_character_fails_only_its_own_write(postgres_client: httpx.AsyncClient) -> None:
    client = postgres_client
    bad = [{"resourceType": "Patient", "name": [{"family": "a\u0000b"}]} for _ in range(5)]
    goods, refused = await _concurrent(client, 300, bad)

    assert [r.status_code for r in goods] == [201] * 300
    for response in refused:
        assert response.status_code in (400, 422), response.text
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert "NUL" in outcome["issue"][0]["diagnostics"]
    assert await _count(client, "Good") == 300
    history = await client.get("/Patient/_history", params={"_count": "1"})
    assert history.json()["total"] == 300
