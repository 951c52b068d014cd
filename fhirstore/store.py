"""The FHIR store: the one API every writer and reader goes through.

`Store` writes here and reads through `StoreReads` (fhirstore/reads.py); what Herald reads on
a connection it already holds is in fhirstore/stored.py. Writes validate first, then run
`write_versions` in a transaction (resource, history, index and outbox together) and, once
committed, tell the commit listeners (the outbox relay wakes up). On SQLite, writes in this
process are serialised by a lock: SQLite has one writer anyway, and waiting on an asyncio lock
is cheaper than retrying on SQLITE_BUSY.

Access: the methods clients reach take `access` (`fhirstore.access.boundary`) and stay inside
it. What it may not read is, on every interaction, what does not exist: reads, history, PUT and
DELETE answer for it exactly as for a missing id (404), decided in SQL from the search index,
never from the body (docs/access.md). Searches are narrowed in SQL. Writes refuse (403) a new
body outside the reach, and a current version it may read but not write. A narrowed reach
never creates by PUT, and a PUT that creates needs the `c` scope. Reserved resources (the
built-in SubscriptionTopics, `reserve`) only administrators write.
`access=None` is Herald itself (the subscription machinery, loaders): not narrowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlencode

import orjson
from sqlalchemy import select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fhirstore.access.boundary import Access, Reach
from fhirstore.access.narrowing import Narrowing
from fhirstore.access.ownership import owner_of, owner_subject, stamped
from fhirstore.access.principal import Principal
from fhirstore.access.reserved import Reserved
from fhirstore.access.scopes import Scopes
from fhirstore.clock import Clock
from fhirstore.db.engine import checkpointer, is_sqlite, writer
from fhirstore.db.group_commit import GroupCommit
from fhirstore.db.schema import resources, search_index
from fhirstore.db.writer import (
    PendingWrite,
    WrittenVersion,
    lock_condition,
    write_independent,
    write_versions,
)
from fhirstore.errors import (
    BadRequest,
    Conflict,
    FhirError,
    Forbidden,
    Gone,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from fhirstore.reads import StoreReads
from fhirstore.search.limits import DEFAULT_LIMITS, SearchLimits
from fhirstore.search.query import parse_search
from fhirstore.search.sql import run_search
from fhirstore.stored import StoredVersion, current_in, heads_in
from fhirstore.validation import require_id, require_type, validate_resource
from fhirstore.validation.pool import ValidationPool
from fhirstore.wire import OWNER_TAG_SYSTEM

# Resources that record who created them (fhirstore/access/ownership.py).
_OWNED_TYPES = frozenset({"Subscription", "SubscriptionTopic"})


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    version: WrittenVersion | StoredVersion
    created: bool


# A check (and possible normalisation) of one resource type that runs before it is written, e.g.
# a Subscription's topic and channel; raises a FhirError to refuse the write.
ResourceRule = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def new_id() -> str:
    return str(uuid.uuid4())


class Store(StoreReads):
    """Reads (`StoreReads`) and writes of FHIR resources, and the transactions they run in."""

    def __init__(
        self, engine: AsyncEngine, clock: Clock, search_limits: SearchLimits = DEFAULT_LIMITS
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.search_limits = search_limits  # every client's search and history request
        self._write_lock = asyncio.Lock() if is_sqlite(engine) else None
        self._writer = writer(engine)
        # SQLite file: checkpoints the WAL after commits, on a thread (db/checkpoint.py).
        self.checkpointer = checkpointer(engine)
        self._listeners: list[Callable[[], None]] = []
        self._rules: dict[str, ResourceRule] = {}
        self._reserved: dict[str, Reserved] = {}
        self._group = GroupCommit(self.write_transaction, clock.now)
        # Where a transaction Bundle's resources are validated (in place unless given workers).
        self.validation = ValidationPool(0)

    def add_commit_listener(self, listener: Callable[[], None]) -> None:
        """`listener` is called (synchronously, cheaply) after every committed write."""
        self._listeners.append(listener)

    def add_rule(self, resource_type: str, rule: ResourceRule) -> None:
        """`rule` checks every client write of `resource_type` (REST and Bundles)."""
        self._rules[resource_type] = rule

    def reserve(self, resource_type: str, reserved: Reserved) -> None:
        """Resources of `resource_type` that only administrators may write (Herald's own,
        e.g. the built-in SubscriptionTopics every patient's Subscriptions rely on)."""
        self._reserved[resource_type] = reserved

    def require_changeable(
        self,
        resource_type: str,
        resource_id: str | None,
        resource: dict[str, Any] | None,
        access: Access | None,
    ) -> None:
        """Refuse (403) a client's write of a reserved resource (`reserve`) unless it comes
        from an administrator: its id, or (for a body) its canonical `url`."""
        reserved = self._reserved.get(resource_type)
        if reserved is None or access is None or access.principal.admin:
            return
        url = resource.get("url") if resource is not None else None
        problem = reserved.problem(resource_id, url if isinstance(url, str) else None)
        if problem is not None:
            raise Forbidden(f"{resource_type}: {problem}")

    async def apply_rules(self, resource: dict[str, Any]) -> dict[str, Any]:
        rule = self._rules.get(resource["resourceType"])
        return await rule(resource) if rule is not None else resource

    async def client_body(
        self,
        resource: dict[str, Any],
        access: Access | None,
        reach: Reach | None,
        resource_id: str | None,
    ) -> dict[str, Any]:
        """A validated resource a client sends, ready to write: a Subscription's or
        SubscriptionTopic's owner recorded (kept from the stored version when there is one),
        refused (403) when it would land outside `reach`, then the type's rule applied (which
        so sees the owner, e.g. to count what the owner has: docs/limits.md)."""
        rtype = resource["resourceType"]
        self.require_changeable(rtype, resource_id, resource, access)
        if rtype in _OWNED_TYPES and access is not None:
            owner = await self._owner(rtype, resource_id, access.principal)
            resource = stamped(resource, _owner_record(rtype, owner))
        if reach is not None:
            reach.require(resource)
        return await self.apply_rules(resource)

    async def _owner(
        self, resource_type: str, resource_id: str | None, principal: Principal
    ) -> Principal | None:
        """Who owns a Subscription (or SubscriptionTopic) about to be written. An
        administrator's update keeps the stored owner; anyone else may only write their own
        Subscriptions (the writer checks the stored version), and is recorded with the scopes
        they hold now, so another app of the same person cannot widen what an existing
        Subscription hears."""
        if resource_id is not None and principal.admin:
            with contextlib.suppress(NotFound, Gone):
                current = await self.read(resource_type, resource_id)
                assert current.body is not None
                return owner_of(orjson.loads(current.body))
        return None if principal.kind == "anonymous" else principal

    async def owned_ids(
        self, resource_type: str, owner: str, *, excluding: str | None, most: int
    ) -> set[str]:
        """The ids of live resources of `resource_type` that `owner` (a token subject) owns,
        other than `excluding`: no more than `most` + 1 of them.

        A Subscription's owner tag is in the search index. The index has no `_tag` for types
        the FHIRPath model does not know (SubscriptionTopic is R4B-only), so those are found by
        the subject in the body text and then checked by their owner record.
        """
        async with self.engine.connect() as conn:
            if resource_type == "Subscription":
                s = search_index.c
                owned = select(s.res_id).where(
                    s.res_type == resource_type,
                    s.param == "_tag",
                    s.system == OWNER_TAG_SYSTEM,
                    s.code == owner,
                    s.res_id != (excluding or ""),
                )
                rows = await conn.execute(owned.distinct().limit(most + 1))
                return set(rows.scalars())
            r = resources.c
            stream = await conn.stream(
                select(r.res_id, r.body).where(
                    r.res_type == resource_type,
                    r.deleted.is_(False),
                    r.res_id != (excluding or ""),
                    r.body.contains(orjson.dumps(owner).decode(), autoescape=True),
                )
            )
            found: set[str] = set()
            async for resource_id, body in stream:
                if owner_subject(orjson.loads(body)) == owner:
                    found.add(resource_id)
                    if len(found) > most:
                        break
            return found

    async def stored_ids(self, resource_type: str, ids: Sequence[str]) -> set[str]:
        """Those of `ids` that were ever stored as `resource_type` (deleted ones included)."""
        if not ids:
            return set()
        async with self.engine.connect() as conn:
            return set(await self.heads_in(conn, resource_type, ids))

    @asynccontextmanager
    async def write_transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; listeners hear of it after it commits."""
        try:
            async with self.bookkeeping_transaction() as conn:
                yield conn
        except IntegrityError:
            # Two requests created the same new resource at once (PostgreSQL); one wins.
            raise Conflict(
                "another request wrote the same resource at the same moment and won; read it "
                "and retry"
            ) from None
        except DBAPIError as error:
            sqlstate = getattr(error.orig, "sqlstate", None) or ""
            if not isinstance(error, DataError) and not sqlstate.startswith("22"):
                raise
            # A value the database cannot hold, e.g. a NUL character on PostgreSQL.
            raise Unprocessable(
                f"the database cannot store this resource (SQLSTATE {sqlstate or 'unknown'}): "
                "it holds a value the database refuses, such as a NUL character (\\u0000) "
                "in a string; remove it and send the resource again"
            ) from None
        for listener in self._listeners:
            listener()

    @asynccontextmanager
    async def bookkeeping_transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction that changes no resource (e.g. the relay's cursor).

        On SQLite it queues behind resource writes in this process instead of spinning on the
        database's busy handler.
        """
        async with self._write_lock or nullcontext(), self._writer.begin() as conn:
            yield conn
        if self.checkpointer is not None:
            self.checkpointer.nudge()

    # -- writes -------------------------------------------------------------------------------

    async def create(
        self,
        body: Any,
        *,
        resource_type: str | None = None,
        if_none_exist: list[tuple[str, str]] | None = None,
        access: Access | None = None,
    ) -> CreateOutcome:
        resource = validate_resource(resource_type, body)
        rtype = resource["resourceType"]
        reach = access.reach(rtype, "c") if access is not None else None
        resource["id"] = new_id()  # checked with the id it will have, not the client's
        resource = await self.client_body(resource, access, reach, None)
        write = PendingWrite(rtype, resource["id"], resource, new=True)
        if not if_none_exist:
            written = await self._group.write(write)
        else:  # the search and the write must share one transaction
            # What the condition may match, and so hand back, is what the client may read.
            narrowing = Narrowing(access.reach(rtype, "r"), access) if access is not None else None
            async with self.write_transaction() as conn:
                await lock_condition(conn, rtype, urlencode(sorted(if_none_exist)))
                existing = await self._conditional_match(conn, rtype, if_none_exist, narrowing)
                if existing is not None:
                    return CreateOutcome(existing, created=False)
                [written] = await write_versions(conn, [write], self.clock.now())
        assert written is not None
        return CreateOutcome(written, created=True)

    async def update(
        self,
        resource_type: str,
        resource_id: str,
        body: Any,
        *,
        if_match: int | None = None,
        internal: bool = False,
        access: Access | None = None,
    ) -> WrittenVersion:
        """Write a new version. `internal` writes (Herald's own, e.g. a Subscription's status)
        skip the resource rules, which are for what clients send."""
        require_id(resource_id)
        resource = validate_resource(resource_type, body)
        reach = access.reach(resource_type, "u") if access is not None else None
        if not internal:
            resource = await self.client_body(resource, access, reach, resource_id)
        if resource.get("id") not in (None, resource_id):
            raise_id_mismatch(resource_type, resource_id, resource["id"])
        may_create = access is None or access.may(resource_type, "c") is not None
        written = await self._group.write(
            PendingWrite(
                resource_type, resource_id, resource, if_match, reach=reach, may_create=may_create
            )
        )
        assert written is not None
        return written

    async def delete(
        self,
        resource_type: str,
        resource_id: str,
        *,
        if_match: int | None = None,
        access: Access | None = None,
    ) -> WrittenVersion | None:
        """Delete; None when there was nothing live to delete (deleting twice is harmless)."""
        require_type(resource_type)
        reach = access.reach(resource_type, "d") if access is not None else None
        self.require_changeable(resource_type, resource_id, None, access)
        written = await self._group.write(
            PendingWrite(resource_type, resource_id, None, if_match, reach=reach)
        )
        if written is None:
            with contextlib.suppress(Gone):  # already deleted: nothing to do
                async with self.engine.connect() as conn:  # never existed, or hidden: 404
                    await self._read_in(conn, resource_type, resource_id, reach)
        return written

    async def _conditional_match(
        self,
        conn: AsyncConnection,
        resource_type: str,
        criteria: list[tuple[str, str]],
        narrowing: Narrowing | None,
    ) -> StoredVersion | None:
        request = parse_search(
            resource_type,
            [*criteria, ("_count", "2")],
            now=self.clock.now(),
            limits=self.search_limits,
        )
        result = await run_search(conn, request, narrowing)
        if not result.resources:
            return None
        if len(result.resources) > 1:
            raise PreconditionFailed(
                f"If-None-Exist matches more than one {resource_type}; make the criteria "
                f"specific enough to match at most one"
            )
        found = orjson.loads(result.resources[0])
        return await self._read_in(conn, resource_type, found["id"])

    async def write_batch(
        self, conn: AsyncConnection, writes: Sequence[PendingWrite]
    ) -> list[WrittenVersion | None]:
        """Several writes inside a `write_transaction` (transaction Bundles, loaders)."""
        return await write_versions(conn, writes, self.clock.now())

    async def write_each(
        self, conn: AsyncConnection, writes: Sequence[PendingWrite]
    ) -> list[WrittenVersion | FhirError | None]:
        """Several independent writes inside a `write_transaction`: each that passes its own
        checks (e.g. If-Match) is applied, the others come back as their error. For Herald's
        own writes, which are valid by construction (no validation here)."""
        return await write_independent(conn, writes, self.clock.now())

    current_in = staticmethod(current_in)
    heads_in = staticmethod(heads_in)


def _owner_record(resource_type: str, owner: Principal | None) -> Principal | None:
    """What a resource records of its owner: everything for a Subscription (a standing read on
    the owner's behalf), only the subject and whether an administrator for a SubscriptionTopic,
    which every reader of topics sees."""
    if owner is None or resource_type == "Subscription":
        return owner
    return Principal(owner.kind, owner.subject, Scopes.parse(""), admin=owner.admin)


def raise_id_mismatch(resource_type: str, url_id: str, body_id: Any) -> NoReturn:
    raise BadRequest(
        f"the body's id {body_id!r} does not match the URL's id {url_id!r} for {resource_type}",
        expression=[f"{resource_type}.id"],
    )
