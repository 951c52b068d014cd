"""Background tasks whose lifetime is an `AsyncExitStack`: started now, cancelled (and waited
for) when the stack unwinds, so that a part's start registers its own stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

log = logging.getLogger(__name__)


def run_in_background(
    stack: AsyncExitStack,
    name: str,
    work: Callable[[], Awaitable[object]],
    *,
    crashed: Callable[[], None] | None = None,
) -> asyncio.Task[None]:
    """Run `work()` as a task named `name` until `stack` closes. If it ends with an error, the
    error is logged and `crashed` (when given) is told."""

    async def guarded() -> None:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s stopped with an error", name)
            if crashed is not None:
                crashed()
            raise

    task = asyncio.create_task(guarded(), name=name)

    async def cancel() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    stack.push_async_callback(cancel)
    return task
