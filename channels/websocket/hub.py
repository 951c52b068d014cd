"""The WebSockets this process holds, which subscriptions each is bound to, and the shared
record (in the database) of where every subscription's sockets are.

A notification for a subscription bound here is written to its sockets directly. One bound
in another replica is forwarded over the bus (`herald.websocket`, which every process reads
from the moment it starts) and written there. Bindings are renewed while the socket is open
and expire `lease` after a process dies, so a crashed replica's sockets stop counting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import and_, delete, insert, select, update

from channels.tables import websocket_bindings
from events.bus import Bus, Message, TopicSpec
from fhirstore import Periodic, Store
from fhirstore.db import is_sqlite
from fhirstore.wire import GREETED_BEFORE_HEADER, OWNER_HEADER, WEBSOCKET_TOPIC
from subscriptions import NotificationBundle

log = logging.getLogger(__name__)

FORWARDED = TopicSpec(
    WEBSOCKET_TOPIC,
    NotificationBundle,
    "Internal: notifications on their way to the replica that holds the subscription's "
    f"WebSocket. Key: the Subscription id. Header `{OWNER_HEADER}`: the forwarding replica. "
    "Every replica reads it, without a group.",
)


class Socket(Protocol):
    async def send_text(self, data: str) -> None: ...


@dataclass(eq=False)
class Connection:
    """One client's socket; sends are serialised so that frames never interleave.
    `greeted` says when each bound subscription's handshake went out on it (after the ledger
    recorded it), so that a delivery step that read the ledger before then does not greet
    the socket a second time."""

    socket: Socket
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    subscriptions: set[str] = field(default_factory=set)
    greeted: dict[str, datetime] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, text: str, *, within: float) -> bool:
        """Write one frame; False when the socket is gone or too slow to take it."""
        try:
            async with asyncio.timeout(within), self.lock:
                await self.socket.send_text(text)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a closed or broken socket
            log.info("websocket %s: could not send: %r", self.id, error)
            return False
        return True


class SocketHub:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        *,
        owner: str,
        lease: timedelta = timedelta(seconds=30),
        send_timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._bus = bus
        bus.declare(FORWARDED)
        self.owner = owner
        self._lease = lease
        self.send_timeout = send_timeout
        self._bound: dict[str, set[Connection]] = {}
        self.renewals = Periodic(
            "WebSocket bindings renewal",
            self._renew,
            interval=lease.total_seconds() / 3,
            clock=store.clock,
            first_pass_at_start=False,
        )

    def listen(self) -> None:
        """Take notifications other replicas forward for sockets held here (before bus start)."""
        self._bus.subscribe_broadcast(WEBSOCKET_TOPIC, self._on_forwarded)

    async def start(self) -> None:
        """On SQLite (one process per file) every binding row is a previous run's: drop them,
        so that nothing is forwarded to sockets that are gone."""
        if is_sqlite(self._store.engine):
            async with self._store.bookkeeping_transaction() as conn:
                await conn.execute(delete(websocket_bindings))

    def bound(self, subscription_id: str) -> list[Connection]:
        return list(self._bound.get(subscription_id, ()))

    async def bind(self, connection: Connection, subscription_id: str) -> None:
        """Bind (call with `connection.lock` held, after its handshake went out and the
        ledger recorded it)."""
        connection.subscriptions.add(subscription_id)
        connection.greeted[subscription_id] = self._store.clock.now()
        self._bound.setdefault(subscription_id, set()).add(connection)
        b = websocket_bindings.c
        async with self._store.bookkeeping_transaction() as conn:
            await conn.execute(
                delete(websocket_bindings).where(
                    and_(b.subscription_id == subscription_id, b.connection_id == connection.id)
                )
            )
            await conn.execute(
                insert(websocket_bindings).values(
                    subscription_id=subscription_id,
                    connection_id=connection.id,
                    owner=self.owner,
                    expires_at=self._store.clock.now() + self._lease,
                )
            )

    async def disconnect(self, connection: Connection) -> None:
        for subscription_id in connection.subscriptions:
            sockets = self._bound.get(subscription_id)
            if sockets is not None:
                sockets.discard(connection)
                if not sockets:
                    del self._bound[subscription_id]
        connection.subscriptions.clear()
        connection.greeted.clear()
        async with self._store.bookkeeping_transaction() as conn:
            await conn.execute(
                delete(websocket_bindings).where(
                    websocket_bindings.c.connection_id == connection.id
                )
            )

    async def push(
        self, subscription_id: str, text: str, *, greeted_before: datetime | None = None
    ) -> int:
        """Write to every socket bound here to the subscription: how many took it. With
        `greeted_before` (a handshake from a delivery step), only to those whose last
        handshake for it went out before then."""
        sockets = [
            s
            for s in self.bound(subscription_id)
            if greeted_before is None or _greeted_before(s, subscription_id, greeted_before)
        ]
        if not sockets:
            return 0
        sent = await asyncio.gather(*(s.send(text, within=self.send_timeout) for s in sockets))
        return sum(sent)

    async def bound_elsewhere(self, subscription_id: str) -> bool:
        """Whether another live replica holds a socket bound to the subscription."""
        b = websocket_bindings.c
        async with self._store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(b.owner)
                    .where(
                        and_(
                            b.subscription_id == subscription_id,
                            b.owner != self.owner,
                            b.expires_at > self._store.clock.now(),
                        )
                    )
                    .limit(1)
                )
            ).first()
        return row is not None

    async def forward(
        self, subscription_id: str, text: str, *, greeted_before: datetime | None = None
    ) -> None:
        """Hand a notification to the replicas (the one holding the socket writes it)."""
        headers = {OWNER_HEADER: self.owner}
        if greeted_before is not None:
            headers[GREETED_BEFORE_HEADER] = greeted_before.isoformat()
        await self._bus.publish([Message(WEBSOCKET_TOPIC, subscription_id, text.encode(), headers)])

    async def _on_forwarded(self, messages: Sequence[Message]) -> None:
        for message in messages:
            if message.headers.get(OWNER_HEADER) == self.owner:
                continue  # sent by this process, which had no socket for it
            before = message.headers.get(GREETED_BEFORE_HEADER)
            with contextlib.suppress(UnicodeDecodeError, ValueError):
                greeted_before = datetime.fromisoformat(before) if before else None
                await self.push(message.key, message.value.decode(), greeted_before=greeted_before)

    async def run(self) -> None:
        """Every third of the lease, renew this process's bindings and drop expired ones,
        until cancelled."""
        await self.renewals.run()

    async def _renew(self) -> None:
        b = websocket_bindings.c
        now = self._store.clock.now()
        async with self._store.bookkeeping_transaction() as conn:
            if self._bound:
                await conn.execute(
                    update(websocket_bindings)
                    .where(b.owner == self.owner)
                    .values(expires_at=now + self._lease)
                )
            await conn.execute(delete(websocket_bindings).where(b.expires_at < now))


def _greeted_before(connection: Connection, subscription_id: str, instant: datetime) -> bool:
    greeted = connection.greeted.get(subscription_id)
    return greeted is None or greeted < instant
