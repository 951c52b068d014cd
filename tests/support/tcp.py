"""A bare TCP listener on 127.0.0.1 for peers that greet wrongly or not at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def raw_server(port: int, greeting: bytes) -> AsyncIterator[None]:
    """A TCP server that sends `greeting` (perhaps nothing), then only listens."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await reader.read()
        writer.close()

    server = await asyncio.start_server(talk, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
