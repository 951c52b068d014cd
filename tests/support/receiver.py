"""A real HTTP receiver for delivery tests: uvicorn on 127.0.0.1, in this process and event loop.

    async with http_receiver() as receiver:
        ...  # point a subscription at receiver.url (or receiver.url + "/anything")
        [first] = await receiver.wait_for(1)

Every request is recorded in `receiver.requests` with what was answered. What it answers can
change at runtime: `respond_with(status)` (a 3xx comes with a `Location`), `slow(seconds)`
(answer after a delay), `hang()` (hold each request without answering), `reset()` (answer 200
again and let held requests go, with 503).
Leaving the context lets held requests go too, so shutdown is quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tests.support.serving import serving

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes
    arrived: float  # time.monotonic()
    json: Any  # the parsed body when it is JSON, else None
    status: int | None  # what was answered; None when it was held by hang()
    client: tuple[str, int] | None  # the peer's (host, port): one port per connection


class Receiver:
    """The ASGI app and the record of what reached it."""

    def __init__(self) -> None:
        self.port = 0  # set once it listens
        self.requests: list[Request] = []
        self._status = 200
        self._delay = 0.0
        self._hanging = False
        self._release = asyncio.Event()
        self._arrived = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def respond_with(self, status: int) -> None:
        """Answer later requests with `status`."""
        self._status = status

    def slow(self, seconds: float) -> None:
        """Take `seconds` before answering each later request."""
        self._delay = seconds

    def hang(self) -> None:
        """Hold later requests without answering, until `reset()` or shutdown."""
        self._hanging = True
        if self._release.is_set():
            self._release = asyncio.Event()

    def reset(self) -> None:
        """Answer 200 again; held requests get 503. Recorded requests are kept."""
        self._status = 200
        self._hanging = False
        self._release.set()

    # A bounded wait is the point of this helper, so it takes the bound (ASYNC109).
    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Request]:  # noqa: ASYNC109
        """All requests so far, once at least `count` arrived; AssertionError after `timeout`."""
        try:
            async with asyncio.timeout(timeout), self._arrived:
                await self._arrived.wait_for(lambda: len(self.requests) >= count)
        except TimeoutError:
            seen = [f"{r.method} {r.path} -> {r.status}" for r in self.requests]
            raise AssertionError(
                f"expected at least {count} requests at {self.url} within {timeout} s, "
                f"got {len(self.requests)}: {seen}"
            ) from None
        return list(self.requests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        status = None if self._hanging else self._status
        self.requests.append(_record(scope, body, status))
        async with self._arrived:
            self._arrived.notify_all()
        if status is None:
            await self._release.wait()
            status = 503
        elif self._delay:
            await asyncio.sleep(self._delay)
        await _answer(send, status, self.url)


def _record(scope: Scope, body: bytes, status: int | None) -> Request:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    client = scope.get("client")
    return Request(
        method=scope["method"],
        path=scope["path"],
        headers=headers,
        body=body,
        arrived=time.monotonic(),
        json=_json(headers.get("content-type", ""), body),
        status=status,
        client=(client[0], client[1]) if client else None,
    )


def _json(content_type: str, body: bytes) -> Any:
    if "json" not in content_type or not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, status: int, url: str) -> None:
    headers = [(b"content-length", b"0")]
    if 300 <= status < 400:
        headers.append((b"location", f"{url}/moved".encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


@contextlib.asynccontextmanager
async def http_receiver() -> AsyncIterator[Receiver]:
    """A receiver listening on a free port of 127.0.0.1 while the context is open."""
    receiver = Receiver()
    async with serving(receiver) as port:
        receiver.port = port
        try:
            yield receiver
        finally:
            receiver.reset()
