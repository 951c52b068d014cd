"""`Quarantine`: the dead-letter records of the change stream (table `stream_quarantine`).

A consumer group (the matcher, the scheduler, the dispatcher) that cannot process a message
after its bounded retries hands it here (`set_aside`, called by the bus) and moves on. The
record keeps the message whole, so that a replay can feed it to that group again once the
cause is fixed, with what an operator needs to find the cause: the group, the key
(`ResourceType/id`), the change's event id, version and sequence, the error's class, where it
was raised and its message. Logs carry the ids and the error class, never the message's
content.

Which failures count: the bus asks `outage` about every failure. A database error of the kind
an outage raises (connection refused or lost, a timeout) is checked by asking the database
itself (`SELECT 1`): if it does not answer, the failure is the outage's, not the message's, and
is waited out without counting a try. If it answers, the failure counts like any other, so a
message that fails "transiently" while the database is fine is still set aside after its
tries: nothing stalls a consumer forever.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, func, insert, or_, select, text, update
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from events.bus.base import Message
from events.metrics import QUARANTINE_OPEN, QUARANTINED
from events.tables import stream_quarantine
from fhirstore import Store, failed_at
from fhirstore.wire import CHANGES_TOPIC, EVENT_ID_HEADER

# Errors an unreachable database (or network) raises; any other error is the message's.
_OUTAGE_ERRORS = (OperationalError, InterfaceError, DisconnectionError, OSError, TimeoutError)
_PROBE_SECONDS = 5.0
_REASON_CHARS = 1000


@dataclass(frozen=True, slots=True)
class QuarantinedMessage:
    """One record: what was set aside, for which group, why, and what became of it."""

    id: int
    consumer_group: str
    topic: str
    key: str
    event_id: str | None
    version_id: str | None
    sequence: int | None
    error_class: str
    reason: str
    attempts: int
    recorded_at: datetime
    replay_requested_at: datetime | None
    resolved_at: datetime | None

    @property
    def status(self) -> str:
        """`resolved` (a replay succeeded), `replay-requested` or `quarantined`."""
        if self.resolved_at is not None:
            return "resolved"
        return "replay-requested" if self.replay_requested_at is not None else "quarantined"

    def message_of(self, value: bytes, headers: str) -> Message:
        return Message(self.topic, self.key, value, json.loads(headers))


class Quarantine:
    """The `SetAside` the bus hands poison messages to, and the records' reader and writer."""

    def __init__(
        self,
        store: Store,
        *,
        attempts: int = 5,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.attempts = attempts
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._store = store
        self.clock = store.clock  # replays wait on it
        self.requested = asyncio.Event()  # set when a replay is asked for in this process

    # -- the bus's side -------------------------------------------------------------------------

    async def outage(self, error: Exception) -> bool:
        if not isinstance(error, _OUTAGE_ERRORS):
            return False
        try:
            async with asyncio.timeout(_PROBE_SECONDS), self._store.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except asyncio.CancelledError:
            raise
        except Exception:
            return True
        return False

    async def set_aside(
        self, group: str, message: Message, error: Exception, attempts: int
    ) -> None:
        event_id, version_id, sequence = _change_ids(message)
        async with self._store.bookkeeping_transaction() as conn:
            if event_id is not None and await self._again(
                conn, group, message, event_id, error, attempts
            ):
                return  # redelivered (a crash before the offset was committed): one record
            await conn.execute(
                insert(stream_quarantine).values(
                    consumer_group=group,
                    topic=message.topic,
                    message_key=_storable(message.key, 256),
                    event_id=event_id,
                    version_id=version_id,
                    sequence=sequence,
                    headers=json.dumps(message.headers),
                    value=message.value,
                    error_class=error_class(error),
                    reason=_storable(reason(error, attempts), _REASON_CHARS),
                    attempts=attempts,
                    recorded_at=self._store.clock.now(),
                )
            )
        QUARANTINED.labels(group).inc()
        QUARANTINE_OPEN.labels(group).inc()

    async def _again(
        self,
        conn: AsyncConnection,
        group: str,
        message: Message,
        event_id: str,
        error: Exception,
        attempts: int,
    ) -> bool:
        """Count a redelivered message's tries on its open record, if it has one."""
        q = stream_quarantine.c
        done = await conn.execute(
            update(stream_quarantine)
            .where(
                q.consumer_group == group,
                q.topic == message.topic,
                q.event_id == event_id,
                q.resolved_at.is_(None),
            )
            .values(attempts=q.attempts + attempts, error_class=error_class(error))
        )
        return done.rowcount > 0

    # -- operators' side ------------------------------------------------------------------------

    async def records(
        self, *, include_resolved: bool = False, group: str | None = None
    ) -> list[QuarantinedMessage]:
        """The records, oldest first: only the unresolved ones unless `include_resolved`."""
        query = select(*_LISTED).order_by(stream_quarantine.c.id)
        if not include_resolved:
            query = query.where(stream_quarantine.c.resolved_at.is_(None))
        if group is not None:
            query = query.where(stream_quarantine.c.consumer_group == group)
        async with self._store.engine.connect() as conn:
            return [_record(row) for row in await conn.execute(query)]

    async def record(self, record_id: int) -> QuarantinedMessage | None:
        async with self._store.engine.connect() as conn:
            query = select(*_LISTED).where(stream_quarantine.c.id == record_id)
            row = (await conn.execute(query)).first()
        return _record(row) if row is not None else None

    async def request_replay(self, record_id: int) -> QuarantinedMessage | None:
        """Ask for the record's message to be fed to its group again (by a process running
        that group, within its replay interval). None if unknown or already resolved."""
        q = stream_quarantine.c
        async with self._store.bookkeeping_transaction() as conn:
            done = await conn.execute(
                update(stream_quarantine)
                .where(and_(q.id == record_id, q.resolved_at.is_(None)))
                .values(replay_requested_at=self._store.clock.now())
            )
        if done.rowcount != 1:
            return None
        self.requested.set()
        return await self.record(record_id)

    # -- the replayer's side --------------------------------------------------------------------

    async def claim_replays(
        self, groups: Sequence[tuple[str, str]]
    ) -> list[tuple[QuarantinedMessage, Message]]:
        """Take the replays asked for of these (topic, group)s: each is taken by one process
        (the request is cleared as it is taken; a failed replay can be asked for again)."""
        if not groups:
            return []
        q = stream_quarantine.c
        wanted = or_(*(and_(q.topic == t, q.consumer_group == g) for t, g in groups))
        taken: list[tuple[QuarantinedMessage, Message]] = []
        async with self._store.engine.connect() as conn:
            query = (
                select(*_LISTED, q.value, q.headers)
                .where(q.replay_requested_at.is_not(None), q.resolved_at.is_(None))
                .where(wanted)
                .order_by(q.id)
            )
            rows = (await conn.execute(query)).all()
        for row in rows:
            async with self._store.bookkeeping_transaction() as conn:
                claimed = await conn.execute(
                    update(stream_quarantine)
                    .where(and_(q.id == row.id, q.replay_requested_at.is_not(None)))
                    .values(replay_requested_at=None)
                )
            if claimed.rowcount == 1:
                record = _record(row)
                taken.append((record, record.message_of(row.value, row.headers)))
        return taken

    async def resolved(self, record: QuarantinedMessage) -> None:
        async with self._store.bookkeeping_transaction() as conn:
            await conn.execute(
                update(stream_quarantine)
                .where(stream_quarantine.c.id == record.id)
                .values(resolved_at=self._store.clock.now(), attempts=record.attempts + 1)
            )

    async def failed_again(self, record: QuarantinedMessage, error: Exception) -> None:
        attempts = record.attempts + 1
        async with self._store.bookkeeping_transaction() as conn:
            await conn.execute(
                update(stream_quarantine)
                .where(stream_quarantine.c.id == record.id)
                .values(
                    error_class=error_class(error),
                    reason=_storable("replay: " + reason(error, attempts), _REASON_CHARS),
                    attempts=attempts,
                )
            )

    async def open_counts(self) -> dict[str, int]:
        """Unresolved records per consumer group (for the `herald_quarantine_open` gauge)."""
        q = stream_quarantine.c
        async with self._store.engine.connect() as conn:
            rows = await conn.execute(
                select(q.consumer_group, func.count())
                .where(q.resolved_at.is_(None))
                .group_by(q.consumer_group)
            )
            return {group: count for group, count in rows}


_LISTED = tuple(
    stream_quarantine.c[name]
    for name in (
        "id",
        "consumer_group",
        "topic",
        "message_key",
        "event_id",
        "version_id",
        "sequence",
        "error_class",
        "reason",
        "attempts",
        "recorded_at",
        "replay_requested_at",
        "resolved_at",
    )
)


def _record(row: Any) -> QuarantinedMessage:
    return QuarantinedMessage(
        id=row.id,
        consumer_group=row.consumer_group,
        topic=row.topic,
        key=row.message_key,
        event_id=row.event_id,
        version_id=row.version_id,
        sequence=row.sequence,
        error_class=row.error_class,
        reason=row.reason,
        attempts=row.attempts,
        recorded_at=row.recorded_at,
        replay_requested_at=row.replay_requested_at,
        resolved_at=row.resolved_at,
    )


def _storable(text_: str, limit: int) -> str:
    """`text_` as both databases store it: at most `limit` characters, no NUL (a message from
    another producer may carry anything, and its record must still be written)."""
    return text_.replace("\x00", "\ufffd")[:limit]


def _change_ids(message: Message) -> tuple[str | None, str | None, int | None]:
    """(eventId, versionId, sequence) of a change event, as far as it can be read."""
    found = _read_ids(message)
    event_id, version_id, sequence = found
    return (
        _storable(event_id, 64) if event_id else None,
        _storable(version_id, 64) if version_id else None,
        sequence if sequence is not None and -(2**63) <= sequence < 2**63 else None,
    )


def _read_ids(message: Message) -> tuple[str | None, str | None, int | None]:
    event_id = message.headers.get(EVENT_ID_HEADER) or None
    if message.topic != CHANGES_TOPIC:
        return event_id, None, None
    try:
        body = json.loads(message.value)
    except (ValueError, RecursionError):
        return event_id, None, None
    if not isinstance(body, dict):
        return event_id, None, None
    found_id = body.get("eventId")
    version = body.get("versionId")
    sequence = body.get("sequence")
    return (
        (found_id if isinstance(found_id, str) else event_id),
        str(version) if isinstance(version, str | int) else None,
        sequence if isinstance(sequence, int) else None,
    )


def error_class(error: BaseException) -> str:
    kind = type(error)
    return _storable(f"{kind.__module__}.{kind.__qualname__}", 256)


def reason(error: BaseException, attempts: int) -> str:
    """What failed, where and after how many tries. A validation error is summed up by where
    and what, without the values it was given (they may be the resource's)."""
    cause = error.__cause__
    said = _said(error)
    if cause is not None and not isinstance(error, ValidationError):
        said = f"{said}: {type(cause).__name__}: {_said(cause)}"
    tries = "try" if attempts == 1 else "tries"
    return f"{type(error).__name__} at {failed_at(error)} after {attempts} {tries}: {said}"[
        :_REASON_CHARS
    ]


def _said(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '(message)'}: {item['msg']}"
            for item in error.errors(include_input=False, include_url=False)
        )
    try:
        return str(error)
    except Exception:  # an error that cannot say what it is still gets its record
        return "(no message)"
