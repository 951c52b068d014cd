"""The audit trail: who did what to which resource, when, how it went and what allowed it.

One `AuditEntry` per REST request under the FHIR base (`fhirstore/api/audit.py`), per
delivery attempt (`channels/audit.py`) and per write Herald makes as a system identity
(`fhirstore/access/acting.py`: the scheduler's Tasks). An entry never holds a resource body:
only names, ids, a status and a short reason. A REST request's entry carries its request id,
the one in its `X-Request-ID` answer header and in every log line written while serving it.

`AuditTrail.record` stamps the entry with the store's clock and appends it to a buffer in
memory, so the request or delivery it describes never waits for the database. `run` writes the
buffer in one INSERT every `flush_interval` seconds (200 ms), or as soon as `batch_size` entries
wait; `flush` writes it at once (on shutdown, and before the trail is read). So a crash loses at
most the entries of the last `flush_interval`. While the database refuses them, entries stay
buffered and are tried again, up to `max_buffered`; past that the oldest are dropped and the
log says how many.

The table is append-only: rows are never changed, and deleted only by the retention prune
(`retention`, once an hour; None keeps them forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, delete, or_, select

from fhirstore.db.schema import audit_log
from fhirstore.db.upsert import upsert
from fhirstore.periodic import Periodic
from fhirstore.store import Store

log = logging.getLogger(__name__)

AuditKind = Literal["rest", "delivery", "authentication", "system"]
DELIVERED, FAILED = "delivered", "failed"
_PRUNE_EVERY = 3600.0  # seconds


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited request or delivery attempt. `outcome` is the HTTP status (`"403"`) or, for
    a delivery, `delivered` / `failed`; `granted_by` the scopes (or `administrator`) that
    allowed it, space-separated; a delivery's resource is its Subscription."""

    kind: AuditKind
    interaction: str
    outcome: str
    reason: str | None = None
    subject: str | None = None
    client: str | None = None
    patient: str | None = None
    granted_by: str | None = None
    res_type: str | None = None
    res_id: str | None = None
    query: str | None = None
    notification: str | None = None
    first_event: int | None = None
    last_event: int | None = None
    endpoint: str | None = None
    request_id: str | None = None  # a REST request's `X-Request-ID`


_FIELDS = tuple(f.name for f in fields(AuditEntry))


@dataclass(frozen=True, slots=True)
class StoredEntry:
    id: int
    recorded_at: datetime
    entry: AuditEntry


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries to list. Each field narrows when set; values within a field are
    alternatives. `since` is inclusive, `until` exclusive; an entity is `(type, id)` with
    either part None for any."""

    since: datetime | None = None
    until: datetime | None = None
    agents: tuple[str, ...] = ()  # subject or client
    entities: tuple[tuple[str | None, str | None], ...] = ()
    interactions: tuple[str, ...] = ()
    kinds: tuple[AuditKind, ...] = ()
    request_ids: tuple[str, ...] = ()


class AuditTrail:
    def __init__(
        self,
        store: Store,
        *,
        retention: timedelta | None = None,
        flush_interval: float = 0.2,
        batch_size: int = 500,
        max_buffered: int = 100_000,
    ) -> None:
        self._store = store
        self.clock = store.clock
        self._retention = retention
        self._interval = flush_interval
        self._batch_size = batch_size
        self._max_buffered = max_buffered
        self._buffer: list[dict[str, Any]] = []
        self._full = asyncio.Event()
        self._writing = asyncio.Lock()

    def record(self, entry: AuditEntry) -> None:
        """Keep `entry`, recorded now; written within `flush_interval`. Never blocks."""
        row = {field: getattr(entry, field) for field in _FIELDS}  # not asdict: no deep copy
        self._buffer.append({"recorded_at": self.clock.now(), **row})
        if len(self._buffer) >= self._batch_size:
            self._full.set()

    async def flush(self) -> None:
        """Write every buffered entry now; on failure they stay buffered (and it raises)."""
        async with self._writing:
            rows, self._buffer = self._buffer, []
            if not rows:
                return
            try:
                async with self._store.bookkeeping_transaction() as conn:
                    await upsert(conn, audit_log, rows, key=())  # a plain INSERT
            except BaseException:
                self._keep(rows)
                raise

    def _keep(self, rows: list[dict[str, Any]]) -> None:
        """Put unwritten rows back in front of those recorded meanwhile, within the bound."""
        self._buffer = rows + self._buffer
        excess = len(self._buffer) - self._max_buffered
        if excess > 0:
            del self._buffer[:excess]
            log.error("audit trail: dropped the %d oldest unwritten entries", excess)

    async def run(self) -> None:
        """Write the buffer every `flush_interval` (sooner when full) and prune once an hour,
        until cancelled."""
        loop = asyncio.get_running_loop()
        last_prune = float("-inf")

        async def flush_and_prune() -> None:
            nonlocal last_prune
            await self.flush()
            if self._retention is not None and loop.time() - last_prune >= _PRUNE_EVERY:
                last_prune = loop.time()
                await self.prune(self.clock.now() - self._retention)

        def failed(_error: Exception, _retry_in: float) -> None:
            log.exception("audit trail: could not write; %d entries wait", len(self._buffer))

        await Periodic(
            "audit trail",
            flush_and_prune,
            interval=self._interval,
            clock=self.clock,
            first_pass_at_start=False,
            failed=failed,
            woken_by=self._full,
        ).run()

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[AuditTrail]:
        """`run` for the length of the block, then `flush` what is left (for a command that
        writes, such as `herald scheduler reconcile`)."""
        task = asyncio.create_task(self.run(), name="audit-trail")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.flush()

    async def prune(self, older_than: datetime) -> int:
        """Delete entries recorded before `older_than`."""
        async with self._store.bookkeeping_transaction() as conn:
            pruned = (
                await conn.execute(delete(audit_log).where(audit_log.c.recorded_at < older_than))
            ).rowcount
        if pruned:
            log.info("pruned %d audit entries recorded before %s", pruned, older_than)
        return pruned

    async def entries(
        self, where: AuditFilter, *, before: int | None, count: int
    ) -> list[StoredEntry]:
        """Up to `count` entries matching `where`, newest (last stored) first, stored before
        entry `before` when given (the next page)."""
        conditions = _conditions(where)
        if before is not None:
            conditions.append(audit_log.c.id < before)
        query = select(audit_log).where(*conditions).order_by(audit_log.c.id.desc()).limit(count)
        async with self._store.engine.connect() as conn:
            return [_stored(row) for row in await conn.execute(query)]

    async def entry(self, entry_id: int) -> StoredEntry | None:
        async with self._store.engine.connect() as conn:
            row = (await conn.execute(select(audit_log).where(audit_log.c.id == entry_id))).first()
        return _stored(row) if row is not None else None


def _conditions(where: AuditFilter) -> list[ColumnElement[bool]]:
    c = audit_log.c
    found: list[ColumnElement[bool]] = []
    if where.since is not None:
        found.append(c.recorded_at >= where.since)
    if where.until is not None:
        found.append(c.recorded_at < where.until)
    if where.agents:
        found.append(or_(c.subject.in_(where.agents), c.client.in_(where.agents)))
    if where.entities:
        found.append(or_(*(_entity(t, i) for t, i in where.entities)))
    if where.interactions:
        found.append(c.interaction.in_(where.interactions))
    if where.kinds:
        found.append(c.kind.in_(where.kinds))
    if where.request_ids:
        found.append(c.request_id.in_(where.request_ids))
    return found


def _entity(res_type: str | None, res_id: str | None) -> ColumnElement[bool]:
    c = audit_log.c
    if res_type is None:
        return c.res_id == res_id
    if res_id is None:
        return c.res_type == res_type
    return and_(c.res_type == res_type, c.res_id == res_id)


def _stored(row: Any) -> StoredEntry:
    values = dict(row._mapping)
    entry_id, recorded_at = values.pop("id"), values.pop("recorded_at")
    return StoredEntry(entry_id, recorded_at, AuditEntry(**values))
