"""The outbox relay: publishes committed change events, in commit order, to the bus.

It reads outbox rows after its cursor, publishes them (waiting for the bus to accept them), and
only then advances the cursor. The cursor is stored at most every `CURSOR_EVERY` seconds under
steady traffic (each write is a transaction that waits for the store's write lock), on the first
pass with nothing to publish, and when the relay stops: a crash republishes what was published
since, with the same event ids; nothing is skipped. On PostgreSQL only one process relays at a
time (a session advisory lock); the others stand by and take over when it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from events.bus import Bus, Message, TopicSpec
from events.metrics import OUTBOX_LAG, RELAY_IS_LEADER, RELAY_PUBLISH_FAILURES, RELAY_PUBLISHED
from events.model import ChangeEvent
from events.tables import relay_cursor
from fhirstore import Backoff, OutboxEntry, Periodic, Store, entries_after, newest_sequence, prune
from fhirstore.db import RELAY_LOCK_KEY, Lead, Leadership, LeadershipLost
from fhirstore.db.upsert import upsert
from fhirstore.wire import CHANGES_TOPIC, EVENT_ID_HEADER, OUTBOX_CHANNEL

log = logging.getLogger(__name__)

CURSOR_NAME = CHANGES_TOPIC
CHANGES = TopicSpec(
    CHANGES_TOPIC,
    ChangeEvent,
    "Every committed create, update and delete in the FHIR store, in commit order. "
    f"Key: `ResourceType/id` (per-resource order). Header `{EVENT_ID_HEADER}`: the "
    "event id, identical on redelivery (drop duplicates by it).",
)


_MAX_BACKOFF = 10.0  # seconds: the longest wait before the relay tries again
CURSOR_EVERY = 0.2  # seconds: the longest the persisted cursor lags under steady traffic


def _publish_failed(error: Exception, retry_in: float) -> None:
    RELAY_PUBLISH_FAILURES.inc()
    log.warning("outbox relay: publish failed (%s); retrying in %.1fs", error, retry_in)


def _starting_over(error: Exception, retry_in: float) -> None:
    log.warning("outbox relay: %s; starting over in %.1fs", error, retry_in)


def to_message(row: OutboxEntry) -> Message:
    """The `fhir.changes` record of an outbox entry (the `ChangeEvent` wire shape).

    The stored resource JSON is spliced in as it is: no parsing, and decimals stay exact.
    """
    event: dict[str, Any] = {
        "eventId": row.event_id,
        "sequence": row.seq,
        "resourceType": row.res_type,
        "id": row.res_id,
        "versionId": str(row.version_id),
        "interaction": row.interaction,
        "timestamp": row.occurred_at,
    }
    if row.previous_version_id is not None:
        event["previousVersionId"] = str(row.previous_version_id)
    if row.body is not None:
        event["resource"] = orjson.Fragment(row.body)
    return Message(
        topic=CHANGES_TOPIC,
        key=f"{row.res_type}/{row.res_id}",
        value=orjson.dumps(event),
        headers={EVENT_ID_HEADER: row.event_id, "content-type": "application/json"},
    )


class OutboxRelay:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        self._store = store
        self._engine = store.engine
        self._bus = bus
        bus.declare(CHANGES)
        self._clock = store.clock
        self._batch_size = batch_size
        self._retention = retention
        self._last_prune = 0.0
        self._cursor: int | None = None  # published through (this process, while leading)
        self._persisted: int | None = None  # the cursor as stored
        self._persisted_at = float("-inf")  # loop time of the last cursor write
        self.leadership = Leadership(
            store.engine,
            RELAY_LOCK_KEY,
            "outbox relay",
            clock=store.clock,
            retry_interval=poll_interval * 4,
        )
        # Relays batches while leading: a failed publish is retried with backoff (a lost
        # leadership ends it), an empty or short batch waits for a commit or the poll.
        self._batches = Periodic(
            "outbox relay",
            self._relay_pending,
            interval=poll_interval,
            clock=store.clock,
            backoff=Backoff(poll_interval, _MAX_BACKOFF),
            fatal=(LeadershipLost,),
            failed=_publish_failed,
        )
        self._lead: Lead | None = None

    def wake(self) -> None:
        """Called after a local commit so the event goes out without waiting for the poll."""
        self._batches.wake()

    def _on_notify(self, *_args: Any) -> None:
        self._batches.wake()

    async def run(self) -> None:
        """Relay forever (cancel to stop). Any database error: step down, wait, start again."""
        await Periodic(
            "outbox relay",
            self._lead_and_relay,
            interval=self._batches.interval,
            clock=self._clock,
            backoff=Backoff(self._batches.interval, _MAX_BACKOFF),
            failed=_starting_over,
        ).run()

    async def _lead_and_relay(self) -> None:
        """Once this process leads (on PostgreSQL, by a session advisory lock), relay while
        the lead lasts; then step down."""
        try:
            async with self.leadership.lead() as lead:
                self._cursor = None  # only the leader moves it: read it afresh
                RELAY_IS_LEADER.set(1)
                await lead.listen(OUTBOX_CHANNEL, self._on_notify)
                self._lead = lead
                try:
                    await self._batches.run()
                finally:
                    with contextlib.suppress(Exception):  # the next leader republishes
                        await asyncio.shield(self._persist())
        finally:
            RELAY_IS_LEADER.set(0)
            self._lead = None
            self._cursor = self._persisted = None

    async def _relay_pending(self) -> None:
        """Relay batches until one is not full, checking before each that this process still
        leads: the lock lives as long as its session, and if that is gone (another process may
        lead now) this raises before anything is published."""
        while True:
            if self._lead is not None:
                await self._lead.check()
            sent = await self.relay_once()
            await self._maybe_prune()
            if sent < self._batch_size:
                return

    async def relay_once(self) -> int:
        """Publish the next batch after the cursor; return how many events went out."""
        async with self._engine.connect() as conn:
            if self._cursor is None:  # only the leader moves it, so read it once
                self._cursor = self._persisted = await _read_cursor(conn)
            cursor = self._cursor
            rows = await entries_after(conn, cursor, self._batch_size)
            full = len(rows) == self._batch_size
            head = await newest_sequence(conn) if full else None
        if not rows:
            OUTBOX_LAG.set(0)
            await self._persist()
            return 0
        try:
            await self._bus.publish([to_message(r) for r in rows])
        except BaseException:
            self._cursor = None  # re-read after any failure
            raise
        self._cursor = rows[-1].seq
        RELAY_PUBLISHED.inc(len(rows))
        OUTBOX_LAG.set((head or rows[-1].seq) - rows[-1].seq)
        if asyncio.get_running_loop().time() - self._persisted_at >= CURSOR_EVERY:
            await self._persist()
        return len(rows)

    async def _persist(self) -> None:
        """Store the cursor, if it moved since it was last stored."""
        cursor = self._cursor
        if cursor is None or cursor == self._persisted:
            return
        try:
            async with self._store.bookkeeping_transaction() as conn:
                await _write_cursor(conn, cursor)
        except BaseException:
            self._cursor = None  # re-read after any failure
            raise
        self._persisted = cursor
        self._persisted_at = asyncio.get_running_loop().time()

    async def _maybe_prune(self) -> None:
        """At most once a minute, drop published rows older than the retention period."""
        loop_now = asyncio.get_running_loop().time()
        cursor = self._persisted  # what a restart would read: never prune past it
        if cursor is None or loop_now - self._last_prune < 60:
            return
        self._last_prune = loop_now
        cutoff = self._clock.now() - self._retention
        async with self._store.bookkeeping_transaction() as conn:
            await prune(conn, through=cursor, before=cutoff)


async def _read_cursor(conn: AsyncConnection) -> int:
    value = (
        await conn.execute(
            select(relay_cursor.c.position).where(relay_cursor.c.name == CURSOR_NAME)
        )
    ).scalar()
    return int(value or 0)


async def _write_cursor(conn: AsyncConnection, position: int) -> None:
    await upsert(conn, relay_cursor, [{"name": CURSOR_NAME, "position": position}], key=["name"])
