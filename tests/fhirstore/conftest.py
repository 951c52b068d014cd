"""Store tests run against both databases (the root `database_url`: SQLite, the embedded
default, and PostgreSQL) through a running Herald's API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from herald.runtime import Runtime
from tests.support.herald import running_herald


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
