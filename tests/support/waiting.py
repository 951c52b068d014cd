"""Wait for something a test can only observe by asking (an HTTP status, a database row)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float, what: Callable[[], str]
) -> None:
    """Ask `check` every 50 ms until it says True; after `within` seconds fail with `what()`."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(what())
        await asyncio.sleep(0.05)
