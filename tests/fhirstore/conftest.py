"""Store tests run against both databases: SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from herald.runtime import Runtime
from tests.support.herald import running_herald

_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/herald.db"
    fresh: Callable[[str], str] = request.getfixturevalue("fresh_database")
    return fresh(f"store_{next(_names)}")


@pytest.fixture
async def herald(database_url: str) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with running_herald(database_url, max_body_bytes=64 * 1024) as running:
        yield running


@pytest.fixture
def client(herald: tuple[Runtime, httpx.AsyncClient]) -> httpx.AsyncClient:
    return herald[1]


@pytest.fixture
def runtime(herald: tuple[Runtime, httpx.AsyncClient]) -> Runtime:
    return herald[0]
