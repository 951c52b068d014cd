"""Serve an ASGI app with uvicorn on a free port of 127.0.0.1, in this process and event loop,
so that tests talk to it over real sockets (HTTP and WebSocket)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn

from channels.websocket.api import MAX_FRAME_BYTES

_SHUTDOWN_S = 5.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # Ctrl+C belongs to the test runner, not to this server


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[int]:
    """The port `app` listens on while the context is open."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(  # the WebSocket frame limit as `herald serve` sets it
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
        ws_max_size=MAX_FRAME_BYTES,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await _started(server, task)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await _stopped(server, task)
        sock.close()


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(_SHUTDOWN_S):
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError("the test server stopped before it started")
            await asyncio.sleep(0.01)


async def _stopped(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(task), _SHUTDOWN_S)
    except TimeoutError:
        server.force_exit = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
