"""The FHIR store: the one API every writer and reader goes through.

Writes validate first, then run `write_versions` in a transaction (resource, history, index and
outbox together) and, once committed, tell the commit listeners (the outbox relay wakes up).
On SQLite, writes in this process are serialised by a lock: SQLite has one writer anyway, and
waiting on an asyncio lock is cheaper than retrying on SQLITE_BUSY.

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
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import urlencode

import orjson
from sqlalchemy import Select, and_, func, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fhirstore.access.boundary import Access, Reach
from fhirstore.access.narrowing import Narrowing, reach_clause
from fhirstore.access.ownership import OWNER_TAG_SYSTEM, owner_of, owner_subject, stamped
from fhirstore.access.principal import Principal
from fhirstore.access.reserved import Reserved
from fhirstore.access.scopes import Scopes
from fhirstore.clock import Clock
from fhirstore.db.deadline import query_deadline
from fhirstore.db.engine import checkpointer, is_sqlite, writer
from fhirstore.db.group_commit import GroupCommit
from fhirstore.db.schema import resource_versions, resources, search_index
from fhirstore.db.writer import (
    Head,
    PendingWrite,
    WrittenVersion,
    ids_by_type,
    last_live_body,
    load_heads,
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
from fhirstore.search.limits import DEFAULT_LIMITS, SearchLimits
from fhirstore.search.page import BodySize, Budget
from fhirstore.search.query import SearchRequest, parse_search
from fhirstore.search.sql import SearchResult, run_search
from fhirstore.validation import require_id, require_type, validate_resource

# Appended to "does not exist": a narrowed principal learns nothing about what it may not read.
_OR_OUTSIDE = " (or is outside what this token may read)"
_VERSIONS_PER_QUERY = 300  # ids per IN list when their version numbers are bound too
_IDS_PER_QUERY = 900
_HISTORY_CHUNK = 500  # versions read at a time when each must be judged against a reach
# Resources that record who created them (fhirstore/access/ownership.py).
_OWNED_TYPES = frozenset({"Subscription", "SubscriptionTopic"})


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version as stored. `body` is the JSON text (None for a delete)."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    method: str
    body: str | None

    @property
    def deleted(self) -> bool:
        return self.body is None


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    version: WrittenVersion | StoredVersion
    created: bool


# A check (and possible normalisation) of one resource type that runs before it is written, e.g.
# a Subscription's topic and channel; raises a FhirError to refuse the write.
ResourceRule = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def new_id() -> str:
    return str(uuid.uuid4())


class Store:
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

    # -- reads --------------------------------------------------------------------------------

    async def read(
        self, resource_type: str, resource_id: str, *, access: Access | None = None
    ) -> StoredVersion:
        require_type(resource_type)
        reach = access.reach(resource_type, "r") if access is not None else None
        async with self.engine.connect() as conn:
            return await self._read_in(conn, resource_type, resource_id, reach)

    async def _read_in(
        self,
        conn: AsyncConnection,
        resource_type: str,
        resource_id: str,
        reach: Reach | None = None,
    ) -> StoredVersion:
        """The current version, if `reach` admits it: judged in SQL from the search index, so
        a resource outside it is answered like a missing one, and as fast, whatever its size
        (its body is never read)."""
        r = resources.c
        query = select(resources).where(and_(r.res_type == resource_type, r.res_id == resource_id))
        inside = reach_clause(reach, resources) if reach is not None else None
        if inside is not None:
            query = query.where(inside)
        row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"{resource_type}/{resource_id} does not exist{_OR_OUTSIDE}")
        if row.deleted:
            raise Gone(f"{resource_type}/{resource_id} was deleted (version {row.version_id})")
        return StoredVersion(
            resource_type, resource_id, row.version_id, row.last_updated, "", row.body
        )

    async def vread(
        self,
        resource_type: str,
        resource_id: str,
        version_id: int,
        *,
        access: Access | None = None,
    ) -> StoredVersion:
        require_type(resource_type)
        reach = access.reach(resource_type, "r") if access is not None else None
        async with self.engine.connect() as conn:
            # The resource as it is now must be inside (from the index, as `read`), and the
            # version too (from its body, only once the resource is known to be readable).
            if reach is not None and not await _current_inside(conn, reach, resource_id):
                raise NotFound(
                    f"{resource_type}/{resource_id} has no version {version_id}{_OR_OUTSIDE}"
                )
            row = (
                await conn.execute(
                    select(resource_versions).where(
                        and_(
                            resource_versions.c.res_type == resource_type,
                            resource_versions.c.res_id == resource_id,
                            resource_versions.c.version_id == version_id,
                        )
                    )
                )
            ).first()
            if row is None or not await _admitted(conn, reach, row):
                raise NotFound(
                    f"{resource_type}/{resource_id} has no version {version_id}{_OR_OUTSIDE}"
                )
        version = _version(row)
        if version.deleted:
            raise Gone(f"{resource_type}/{resource_id} version {version_id} is a deletion")
        return version

    async def versions(
        self, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], StoredVersion]:
        """Many versions at once, by (type, id, versionId); those that do not exist are left
        out, deletions are included (`deleted`)."""
        async with self.engine.connect() as conn:
            return await _versions_in(conn, keys)

    async def history(
        self,
        resource_type: str | None = None,
        resource_id: str | None = None,
        *,
        since: datetime | None = None,
        count: int = 50,
        offset: int = 0,
        access: Access | None = None,
    ) -> tuple[list[StoredVersion], int]:
        """Versions newest first, and how many there are in all. The page holds the first of
        `count` versions whose bodies fit `search_limits.max_page_bytes` (the first always; only
        their bodies are read): the next page starts after the last one returned.

        Narrowed by `access`: versions of resources now outside it are not counted or listed,
        and of the others only versions inside it are listed (a resource that moved into a
        patient's compartment shows that patient its versions from then on).
        """
        reach = _history_reach(access, resource_type, resource_id)
        conds = []
        if resource_type is not None:
            require_type(resource_type)
            conds.append(resource_versions.c.res_type == resource_type)
        if resource_id is not None:
            conds.append(resource_versions.c.res_id == resource_id)
        if since is not None:
            conds.append(resource_versions.c.last_updated >= since)
        narrowed = reach_clause(reach, resource_versions) if reach is not None else None
        if narrowed is not None:
            conds.append(narrowed)
        if resource_type is None and access is not None and not access.principal.admin:
            # Subscriptions are their owners' alone, whatever a `*` scope says.
            conds.append(resource_versions.c.res_type != "Subscription")
        where = and_(*conds) if conds else None
        v = resource_versions.c
        order = (v.last_updated.desc(), v.version_id.desc(), v.res_type, v.res_id)
        query = select(resource_versions).order_by(*order)
        sized = select(v.res_type, v.res_id, v.version_id, BodySize(v.body)).order_by(*order)
        counter = select(func.count()).select_from(resource_versions)
        if where is not None:
            query, sized = query.where(where), sized.where(where)
            counter = counter.where(where)
        budget = Budget(self.search_limits)
        async with (
            self.engine.connect() as conn,
            query_deadline(conn, self.search_limits.timeout_seconds),
        ):
            if reach is None or reach.everything:
                taken = await _sized_page(conn, sized.limit(count).offset(offset), budget)
                found = await _versions_in(conn, taken)
                page = [found[key] for key in taken if key in found]
                total = (await conn.execute(counter)).scalar_one()
            else:
                rows, total = await _admitted_page(conn, reach, query, count, offset, budget)
                page = [_version(r) for r in rows]
        if (
            resource_id is not None
            and total == 0
            and (
                since is None
                or narrowed is not None
                or not await self._ever(resource_type, resource_id)
            )
        ):
            raise NotFound(f"{resource_type}/{resource_id} does not exist{_OR_OUTSIDE}")
        return page, total

    async def _ever(self, resource_type: str | None, resource_id: str) -> bool:
        """Whether any version of the resource was ever stored."""
        async with self.engine.connect() as conn:
            row = await conn.execute(
                select(resources.c.version_id).where(
                    and_(resources.c.res_type == resource_type, resources.c.res_id == resource_id)
                )
            )
            return row.first() is not None

    async def search(self, request: SearchRequest, *, access: Access | None = None) -> SearchResult:
        narrowing = None
        if access is not None:
            narrowing = Narrowing(access.reach(request.resource_type, "s"), access)
        async with self.engine.connect() as conn:
            return await run_search(conn, request, narrowing)

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

    @staticmethod
    async def current_in(
        conn: AsyncConnection, resource_type: str, ids: Sequence[str]
    ) -> dict[str, StoredVersion]:
        """The current version of each of `ids` that ever existed (deletions included), read
        inside the caller's transaction."""
        found: dict[str, StoredVersion] = {}
        r = resources.c
        wanted = sorted(set(ids))
        for start in range(0, len(wanted), _IDS_PER_QUERY):
            chunk = wanted[start : start + _IDS_PER_QUERY]
            rows = await conn.execute(
                select(r.res_id, r.version_id, r.last_updated, r.body).where(
                    and_(r.res_type == resource_type, r.res_id.in_(chunk))
                )
            )
            for row in rows:
                updated = row.last_updated
                found[row.res_id] = StoredVersion(
                    resource_type, row.res_id, row.version_id, updated, "", row.body
                )
        return found

    @staticmethod
    async def heads_in(
        conn: AsyncConnection, resource_type: str, ids: Sequence[str]
    ) -> dict[str, Head]:
        """`current_in` without the bodies: what a caller needs to see whether anything changed."""
        heads = await load_heads(conn, [(resource_type, i) for i in set(ids)], lock=False)
        return {resource_id: head for (_, resource_id), head in heads.items()}


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


def _history_reach(
    access: Access | None, resource_type: str | None, resource_id: str | None
) -> Reach | None:
    """What a history request may list: an instance's needs read, a type's search, and the
    whole server's a scope on every type (`*`) that is not narrowed to a patient."""
    if access is None:
        return None
    if resource_type is None:
        reach = access.may("*", "s")
        if reach is None or not reach.everything:
            raise Forbidden(
                "this token may not read the history of the whole server: that needs an "
                "administrator or a system/*.s or user/*.s scope; ask for the history of one "
                "type instead ([base]/Type/_history)"
            )
        access.granted.append(reach)
        return reach
    return access.reach(resource_type, "r" if resource_id is not None else "s")


async def _sized_page(
    conn: AsyncConnection, sized: Select[Any], budget: Budget
) -> list[tuple[str, str, int]]:
    """The keys of the versions in `sized` (type, id, version, body size) that fit `budget`,
    in order, stopping at the first that does not: the next page starts right after them."""
    taken: list[tuple[str, str, int]] = []
    for res_type, res_id, version_id, size in await conn.execute(sized):
        if not budget.take_match(size or 0, first=not taken):
            break
        taken.append((res_type, res_id, version_id))
    return taken


async def _admitted_page(
    conn: AsyncConnection,
    reach: Reach,
    query: Select[Any],
    count: int,
    offset: int,
    budget: Budget,
) -> tuple[list[Any], int]:
    """The page of `query`'s versions that are inside `reach`, and how many there are in all.
    Each version is judged by its own body, so a resource's versions from before it entered a
    patient's compartment are neither listed nor counted, and pages are full (up to `budget`'s
    bytes; a page cut short by them ends there). Reads them all, a chunk at a time: what a
    narrowed reach sees is one patient's or owner's history."""
    page: list[Any] = []
    total = start = 0
    full = False
    while True:
        rows = (await conn.execute(query.limit(_HISTORY_CHUNK).offset(start))).all()
        for row in rows:
            if await _admitted(conn, reach, row):
                if not full and offset <= total < offset + count:
                    size = len(row.body.encode()) if row.body is not None else 0
                    full = not budget.take_match(size, first=not page)
                    if not full:
                        page.append(row)
                total += 1
        if len(rows) < _HISTORY_CHUNK:
            return page, total
        start += _HISTORY_CHUNK


async def _current_inside(conn: AsyncConnection, reach: Reach, resource_id: str) -> bool:
    """Whether the current version of `reach.resource_type`/`resource_id` is inside `reach`,
    from the search index (a deletion is inside only a patient's own Patient record)."""
    clause = reach_clause(reach, resources)
    if clause is None:
        return True
    r = resources.c
    query = select(r.res_id).where(
        r.res_type == reach.resource_type, r.res_id == resource_id, clause
    )
    return (await conn.execute(query)).first() is not None


async def _admitted(conn: AsyncConnection, reach: Reach | None, row: Any) -> bool:
    """Whether the version in `row` (of `resources` or `resource_versions`) is inside `reach`;
    a deletion is judged by the last version before it."""
    if reach is None or reach.everything:
        return True
    body = row.body
    if body is None:
        body = await last_live_body(conn, row.res_type, row.res_id, row.version_id)
    return body is not None and reach.admits(orjson.loads(body))


def _version(row: Any) -> StoredVersion:
    return StoredVersion(
        row.res_type, row.res_id, row.version_id, row.last_updated, row.method, row.body
    )


async def _versions_in(
    conn: AsyncConnection, keys: Sequence[tuple[str, str, int]]
) -> dict[tuple[str, str, int], StoredVersion]:
    """`Store.versions`, read on `conn`."""
    found: dict[tuple[str, str, int], StoredVersion] = {}
    wanted = set(keys)
    numbers_of: dict[tuple[str, str], set[int]] = {}
    for resource_type, resource_id, number in wanted:
        numbers_of.setdefault((resource_type, resource_id), set()).add(number)
    v = resource_versions.c
    for resource_type, ids in ids_by_type(sorted(numbers_of)).items():
        for start in range(0, len(ids), _VERSIONS_PER_QUERY):
            chunk = ids[start : start + _VERSIONS_PER_QUERY]
            numbers = set().union(*(numbers_of[resource_type, i] for i in chunk))
            rows = await conn.execute(
                select(resource_versions).where(
                    v.res_type == resource_type,
                    v.res_id.in_(chunk),
                    v.version_id.in_(sorted(numbers)),
                )
            )
            for row in rows:  # ids x numbers may hold versions nobody asked for
                if (resource_type, row.res_id, row.version_id) in wanted:
                    found[resource_type, row.res_id, row.version_id] = _version(row)
    return found
