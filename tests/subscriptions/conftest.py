"""Fixtures shared by the subscriptions tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from herald.runtime import Runtime
from tests.support.herald import running_herald


@pytest.fixture
async def herald(tmp_path: Path) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """Herald's API and store in this process on a fresh SQLite file (no matcher, no
    scheduler), with a client."""
    async with running_herald(
        f"sqlite+aiosqlite:///{tmp_path}/h.db", subscriptions=False, scheduler=False
    ) as running:
        yield running
