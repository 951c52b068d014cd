"""Herald's own writers act as a system identity: a `Principal` of kind `system` with scopes of
its own, like a client's (the scheduler's are in `scheduler/identity.py`, the Subscription
status writer's in `subscriptions/lifecycle.py`).

`ActingAs.transaction()` is a store write transaction in which each write is checked against the
identity's reach, in the transaction, as a client's write is; once it commits, each write made
is recorded in the audit trail (kind `system`), so the trail answers who changed a resource
whether a client or Herald did. A transaction that rolls back records nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore.access.audit import AuditEntry
from fhirstore.access.boundary import Access
from fhirstore.access.principal import Principal
from fhirstore.access.scopes import Interaction
from fhirstore.db.writer import PendingWrite, WrittenVersion
from fhirstore.errors import FhirError
from fhirstore.store import Store

Record = Callable[[AuditEntry], None]
_STATUS = {"create": "201", "update": "200", "delete": "204"}


@dataclass
class ActingTransaction:
    """One write transaction of a system identity: `conn` for what else it reads and writes."""

    conn: AsyncConnection
    store: Store
    access: Access  # this transaction's: what it was granted is recorded with each write
    written: list[tuple[WrittenVersion, str]] = field(default_factory=list)  # (what, grant)

    async def write_each(
        self, writes: Sequence[PendingWrite]
    ) -> list[WrittenVersion | FhirError | None]:
        """`Store.write_each`, each write inside the identity's reach (Forbidden when its
        scopes do not allow it at all)."""
        reach = self.access.reach
        reached = [replace(w, reach=reach(w.resource_type, _interaction(w))) for w in writes]
        outcomes = await self.store.write_each(self.conn, reached)
        for write, outcome in zip(reached, outcomes, strict=True):
            if isinstance(outcome, WrittenVersion) and write.reach is not None:
                self.written.append((outcome, write.reach.grant))
        return outcomes


class ActingAs:
    def __init__(self, store: Store, principal: Principal, record: Record | None) -> None:
        self.store = store
        self.principal = principal
        self._record = record

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[ActingTransaction]:
        async with self.store.write_transaction() as conn:
            acting = ActingTransaction(conn, self.store, Access(self.principal))
            yield acting
        if self._record is not None:
            for version, grant in acting.written:
                self._record(self._entry(version, grant))

    async def update(
        self, resource_type: str, resource_id: str, body: dict[str, Any], *, if_match: int
    ) -> WrittenVersion:
        """`Store.update` as an internal write (the client rules do not apply) of this
        identity, recorded once written."""
        access = Access(self.principal)
        written = await self.store.update(
            resource_type, resource_id, body, if_match=if_match, internal=True, access=access
        )
        if self._record is not None:
            self._record(self._entry(written, access.granted[-1].grant))
        return written

    def _entry(self, version: WrittenVersion, grant: str) -> AuditEntry:
        return AuditEntry(
            kind="system",
            interaction=version.interaction,
            outcome=_STATUS[version.interaction],
            subject=self.principal.subject,
            client=self.principal.client,
            granted_by=grant,
            res_type=version.resource_type,
            res_id=version.id,
        )


def _interaction(write: PendingWrite) -> Interaction:
    if write.body is None:
        return "d"
    return "c" if write.new or write.if_match is None else "u"
