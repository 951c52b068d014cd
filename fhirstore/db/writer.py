"""Writes resource versions: current row, history row, search index and outbox, in one transaction.

Every write path (single REST interaction, batch entry, transaction Bundle, loader, scheduler) goes
through `write_versions`, so the change event is always committed with the version it describes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, delete, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore import fhirjson
from fhirstore.access.boundary import Reach
from fhirstore.access.narrowing import reach_clause
from fhirstore.db.locks import CONDITIONAL_CREATE_LOCK_CLASS, OUTBOX_LOCK_KEY, int4_key
from fhirstore.db.schema import outbox, resource_versions, resources, search_index
from fhirstore.db.upsert import bound, insert_chunks, insert_rows
from fhirstore.errors import BadRequest, FhirError, Forbidden, NotFound, PreconditionFailed
from fhirstore.search.extract import changed_entries, index_entries
from fhirstore.search.index_entry import ON_RESOURCES, IndexEntry
from fhirstore.search.index_state import index_current
from fhirstore.wire import OUTBOX_CHANNEL

_CHUNK = 500
_INDEX_CHUNK = 100  # resources
_T = TypeVar("_T")


@dataclass(slots=True)
class PendingWrite:
    """A requested change. `body` None means delete; `if_match` is the expected current version."""

    resource_type: str
    id: str
    body: dict[str, Any] | None
    if_match: int | None = None
    # A server-assigned (random UUID) id: nothing can exist under it, so skip looking.
    new: bool = False
    # What the writer may touch (None: Herald's own write): the current version, if any, must
    # be inside it. The new body is checked before it gets here (`Store.client_body`).
    reach: Reach | None = None
    # Whether a PUT may create (the writer holds a scope allowing `c` on the type).
    may_create: bool = True
    # The body of version `if_match`, as the writer read it: an update then rewrites only
    # the index rows of the parameters whose values changed (`search.extract.changed_entries`).
    previous: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class WrittenVersion:
    resource_type: str
    id: str
    version_id: int
    previous_version_id: int | None
    last_updated: datetime
    interaction: str  # create | update | delete
    body: dict[str, Any] | None

    @property
    def created(self) -> bool:
        return self.interaction == "create"


@dataclass(frozen=True, slots=True)
class Head:
    """Where a resource stands now, without its body."""

    version_id: int
    deleted: bool


async def lock_condition(conn: AsyncConnection, resource_type: str, condition: str) -> None:
    """Serialise conditional creates with the same criteria (PostgreSQL, until commit).

    Without it two processes can both find no match and both create. On SQLite the store's
    write lock and BEGIN IMMEDIATE already serialise writers.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:c, :k)"),
            {"c": CONDITIONAL_CREATE_LOCK_CLASS, "k": int4_key(f"{resource_type}?{condition}")},
        )


def fhir_instant(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def write_versions(
    conn: AsyncConnection, writes: Sequence[PendingWrite], now: datetime
) -> list[WrittenVersion | None]:
    """Apply all of `writes` inside the caller's transaction, or raise before applying any.

    A delete of nothing yields None.
    """
    outcomes = await _write(conn, writes, now, all_or_nothing=True)
    return [o for o in outcomes if not isinstance(o, FhirError)]


async def write_independent(
    conn: AsyncConnection, writes: Sequence[PendingWrite], now: datetime
) -> list[WrittenVersion | FhirError | None]:
    """Apply each write that passes its own checks; the others come back as their error.

    Used by group commit, where unrelated requests share one transaction.
    """
    return await _write(conn, writes, now, all_or_nothing=False)


async def _write(
    conn: AsyncConnection, writes: Sequence[PendingWrite], now: datetime, *, all_or_nothing: bool
) -> list[WrittenVersion | FhirError | None]:
    keys = [(w.resource_type, w.id) for w in writes]
    if len(set(keys)) != len(keys):
        raise BadRequest("the same resource appears more than once in one transaction")
    postgres = conn.dialect.name == "postgresql"
    current = await load_heads(
        conn, [(w.resource_type, w.id) for w in writes if not w.new], lock=postgres
    )
    hidden, outside = await _outside_reach(conn, writes, current)
    outcomes: list[WrittenVersion | FhirError | None] = []
    instant = fhir_instant(now)
    for write in writes:
        try:
            key = (write.resource_type, write.id)
            if key in outside:
                raise Forbidden(
                    f"{write.resource_type}/{write.id} is outside what this token may change "
                    f"({_reach_text(write.reach)})"
                )
            # What the writer may not read is, to it, not there (see `_outside_reach`).
            head = None if key in hidden else current.get(key)
            _may_create(write, head)
            outcomes.append(_plan(write, head, now, instant))
        except FhirError as error:
            if all_or_nothing:
                raise
            outcomes.append(error)
    done = [o for o in outcomes if isinstance(o, WrittenVersion)]
    if done:
        changes = await _index_changes(conn, writes, outcomes)
        await _apply(conn, done, current, changes, now, postgres=postgres)
    return outcomes


# Per updated resource: the index parameters whose rows it replaces, and their new entries.
_Changes = dict[tuple[str, str], tuple[frozenset[str], list[IndexEntry]]]


async def _index_changes(
    conn: AsyncConnection,
    writes: Sequence[PendingWrite],
    outcomes: Sequence[WrittenVersion | FhirError | None],
) -> _Changes:
    """The index changes of the updates whose writer gave the body they replace (the version
    `If-Match` named, which `_plan` checked is the current one), when the stored index is
    this extraction's (during a rebuild, an update rewrites all its rows)."""
    changes: _Changes = {}
    for write, outcome in zip(writes, outcomes, strict=True):
        if (
            write.previous is not None
            and write.if_match is not None
            and isinstance(outcome, WrittenVersion)
            and outcome.interaction == "update"
            and outcome.body is not None
        ):
            change = changed_entries(write.previous, outcome.body)
            if change is not None:
                changes[(write.resource_type, write.id)] = change
    if changes and not await index_current(conn):
        return {}
    return changes


async def load_heads(
    conn: AsyncConnection, keys: list[tuple[str, str]], *, lock: bool
) -> dict[tuple[str, str], Head]:
    """The current version of each (type, id) that ever existed, read in the caller's
    transaction (`lock`: and locked until it ends, PostgreSQL)."""
    found: dict[tuple[str, str], Head] = {}
    r = resources.c
    for resource_type, ids in ids_by_type(keys).items():
        for chunk in _chunks(ids):
            query = select(r.res_id, r.version_id, r.deleted).where(
                and_(r.res_type == resource_type, r.res_id.in_(chunk))
            )
            if lock:
                query = query.with_for_update()
            for row in await conn.execute(query):
                found[(resource_type, row.res_id)] = Head(row.version_id, row.deleted)
    return found


async def _outside_reach(
    conn: AsyncConnection, writes: Sequence[PendingWrite], current: dict[tuple[str, str], Head]
) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(hidden, outside): among the stored resources of `writes`, those the write's narrowed
    reach may not read, and those it may read but not write (in another patient's
    compartment too). Decided from the search index, in the caller's transaction after
    `current` was locked, never from the bodies: a hidden resource costs what a missing one
    does. A deleted resource has no index entries, so it is hidden from every narrowed reach
    but a patient's own Patient record (`narrowing.reach_clause`)."""
    by_reach: dict[Reach, list[str]] = {}
    for write in writes:
        # Missing ids are asked about too, so a hidden one costs the same statements.
        if write.reach is not None and not write.reach.everything and not write.new:
            by_reach.setdefault(write.reach, []).append(write.id)
    hidden: set[tuple[str, str]] = set()
    outside: set[tuple[str, str]] = set()
    for reach, ids in by_reach.items():
        readable = await _ids_within(conn, reach, ids, writing=False)
        writable = await _ids_within(conn, reach, ids, writing=True)
        for resource_id in ids:
            key = (reach.resource_type, resource_id)
            if key not in current:
                continue
            if resource_id not in readable:
                hidden.add(key)
            elif resource_id not in writable and not current[key].deleted:
                outside.add(key)
    return hidden, outside


async def _ids_within(
    conn: AsyncConnection, reach: Reach, ids: list[str], *, writing: bool
) -> set[str]:
    clause = reach_clause(reach, resources, writing=writing)
    if clause is None:
        return set(ids)
    r = resources.c
    inside: set[str] = set()
    for chunk in _chunks(ids):
        query = select(r.res_id).where(
            r.res_type == reach.resource_type, r.res_id.in_(chunk), clause
        )
        inside.update((await conn.execute(query)).scalars())
    return inside


def _may_create(write: PendingWrite, head: Head | None) -> None:
    """Refuse a PUT that would create (nothing there, or deleted) without the right to.

    A narrowed reach (one patient's compartment, one owner's Subscriptions) never creates
    under an id of the client's choosing: the id may belong to a resource it may not read,
    and answering differently for that id than for a free one would tell it so. It creates
    with POST (a server-assigned id). It gets 404, as for a read of that id."""
    if write.body is None or write.new or (head is not None and not head.deleted):
        return
    reach = write.reach
    if reach is not None and not reach.everything:
        raise NotFound(
            f"{write.resource_type}/{write.id} does not exist (or is outside what this token "
            f"may read); a token limited to {_reach_text(reach)} cannot create under an id of "
            f"its choosing: create with POST, and the server assigns the id"
        )
    if not write.may_create:
        raise Forbidden(
            f"{write.resource_type}/{write.id} does not exist, and this PUT would create it: "
            f"that needs a scope allowing {write.resource_type}.c (e.g. "
            f"user/{write.resource_type}.c); it may only update what exists"
        )


async def last_live_body(
    conn: AsyncConnection, resource_type: str, resource_id: str, before_version: int
) -> str | None:
    """The body of the newest version before `before_version` that is not a deletion."""
    v = resource_versions.c
    query = (
        select(v.body)
        .where(
            v.res_type == resource_type,
            v.res_id == resource_id,
            v.version_id < before_version,
            v.body.is_not(None),
        )
        .order_by(v.version_id.desc())
        .limit(1)
    )
    return (await conn.execute(query)).scalar()


def _reach_text(reach: Reach | None) -> str:
    if reach is not None and reach.patient is not None:
        return f"the compartment of Patient/{reach.patient}"
    return "Subscriptions it owns"


def ids_by_type(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(type, id) keys as the ids of each type, for `res_type = ? AND res_id IN (...)`: SQLite
    answers a row-value IN list (`(res_type, res_id) IN (...)`) with a full table scan."""
    grouped: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        grouped.setdefault(resource_type, []).append(resource_id)
    return grouped


def _plan(
    write: PendingWrite, cur: Head | None, now: datetime, instant: str
) -> WrittenVersion | None:
    """The version `write` makes of the resource at `cur`; `instant` is `now` for meta."""
    live = cur is not None and not cur.deleted
    if write.if_match is not None and (cur is None or cur.version_id != write.if_match):
        have = f"version {cur.version_id}" if cur else "no version"
        raise PreconditionFailed(
            f"{write.resource_type}/{write.id}: If-Match expects version {write.if_match} but "
            f"the server has {have}; read the resource again and retry with its ETag"
        )
    if write.body is None and not live:
        return None
    version = cur.version_id + 1 if cur else 1
    body = None
    if write.body is not None:
        body = write.body
        body["id"] = write.id
        meta = dict(body.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = instant
        body["meta"] = meta
    interaction = "delete" if write.body is None else ("update" if live else "create")
    return WrittenVersion(
        resource_type=write.resource_type,
        id=write.id,
        version_id=version,
        previous_version_id=cur.version_id if cur else None,
        last_updated=now,
        interaction=interaction,
        body=body,
    )


async def _apply(
    conn: AsyncConnection,
    done: list[WrittenVersion],
    current: dict[tuple[str, str], Head],
    changes: _Changes,
    now: datetime,
    *,
    postgres: bool,
) -> None:
    texts = {(v.resource_type, v.id): _dump(v.body) for v in done}
    fresh = [v for v in done if (v.resource_type, v.id) not in current]
    existing = [v for v in done if (v.resource_type, v.id) in current]
    # Rows go to the driver as tuples (see `insert_rows`), `now` and the flags bound once.
    stamp = bound(conn, resources.c.last_updated, now)
    deleted = {flag: bound(conn, resources.c.deleted, flag) for flag in (False, True)}
    if fresh:
        await insert_rows(
            conn,
            resources,
            _RESOURCE_COLUMNS,
            [
                (
                    v.resource_type,
                    v.id,
                    v.version_id,
                    stamp,
                    deleted[v.body is None],
                    texts[v.resource_type, v.id],
                )
                for v in fresh
            ],
        )
    if existing:
        await conn.execute(
            resources.update()
            .where(
                and_(
                    resources.c.res_type == bindparam("k_type"),
                    resources.c.res_id == bindparam("k_id"),
                )
            )
            .values(
                version_id=bindparam("version_id"),
                last_updated=bindparam("last_updated"),
                deleted=bindparam("deleted"),
                body=bindparam("body"),
            ),
            [
                {
                    "k_type": v.resource_type,
                    "k_id": v.id,
                    "version_id": v.version_id,
                    "last_updated": now,
                    "deleted": v.body is None,
                    "body": texts[(v.resource_type, v.id)],
                }
                for v in existing
            ],
        )
        await _delete_index_rows(conn, existing, changes)
    await insert_rows(
        conn,
        resource_versions,
        _VERSION_COLUMNS,
        [
            (
                v.resource_type,
                v.id,
                v.version_id,
                stamp,
                v.interaction,
                texts[v.resource_type, v.id],
            )
            for v in done
        ],
    )
    # In chunks: on SQLite the next chunk's values are extracted while one is inserted.
    index_chunks = (list(_index_rows(chunk, changes)) for chunk in _chunks(done, _INDEX_CHUNK))
    await insert_chunks(conn, search_index, INDEX_COLUMNS, index_chunks)
    if postgres:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": OUTBOX_LOCK_KEY})
    await insert_rows(
        conn,
        outbox,
        _OUTBOX_COLUMNS,
        [
            (
                event_id,
                v.resource_type,
                v.id,
                v.version_id,
                v.previous_version_id,
                v.interaction,
                stamp,
                texts[v.resource_type, v.id],
            )
            for event_id, v in zip(_event_ids(now, len(done)), done, strict=True)
        ],
    )
    if postgres:
        await conn.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))


_RESOURCE_COLUMNS = ("res_type", "res_id", "version_id", "last_updated", "deleted", "body")
_VERSION_COLUMNS = ("res_type", "res_id", "version_id", "last_updated", "method", "body")
INDEX_COLUMNS = ("res_type", "res_id", "param", "system", "code", "text", "low", "high")
_OUTBOX_COLUMNS = (
    "event_id",
    "res_type",
    "res_id",
    "version_id",
    "previous_version_id",
    "interaction",
    "occurred_at",
    "body",
)


def _event_ids(now: datetime, count: int) -> list[str]:
    """`count` UUIDs whose first 48 bits are `now` in Unix ms, the rest random (the layout of
    UUID version 7). Random UUIDs (version 4) put each event in a random page of the outbox's
    unique index, and a batch of thousands dirtied thousands of pages to write at commit;
    these grow the index at its end."""
    millis = (int(now.timestamp() * 1000) & _MS_BITS) << 80
    random = os.urandom(_RANDOM_BYTES * count)  # one system call for the batch
    ids = []
    for start in range(0, len(random), _RANDOM_BYTES):
        value = millis | int.from_bytes(random[start : start + _RANDOM_BYTES])
        digits = f"{value & ~_VERSION_AND_VARIANT | _V7:032x}"
        ids.append(f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}")
    return ids


_RANDOM_BYTES = 10
_MS_BITS = (1 << 48) - 1
_VERSION_AND_VARIANT = 0xF << 76 | 0x3 << 62
_V7 = 0x7 << 76 | 0x2 << 62  # version 7, RFC 4122 variant


async def _delete_index_rows(
    conn: AsyncConnection, existing: list[WrittenVersion], changes: _Changes
) -> None:
    """Delete the index rows the new versions replace: all of a resource's, or those of the
    parameters its change names."""
    s = search_index.c
    whole = [(v.resource_type, v.id) for v in existing if (v.resource_type, v.id) not in changes]
    for resource_type, ids in ids_by_type(whole).items():
        for chunk in _chunks(ids):
            await conn.execute(
                delete(search_index).where(and_(s.res_type == resource_type, s.res_id.in_(chunk)))
            )
    by_param: dict[tuple[str, str], list[str]] = {}
    for (resource_type, resource_id), (params, _) in changes.items():
        for param in params:
            by_param.setdefault((resource_type, param), []).append(resource_id)
    for (resource_type, param), ids in by_param.items():
        for chunk in _chunks(ids):
            await conn.execute(
                delete(search_index).where(
                    and_(s.res_type == resource_type, s.param == param, s.res_id.in_(chunk))
                )
            )


def _index_rows(done: Iterable[WrittenVersion], changes: _Changes) -> Iterable[tuple[Any, ...]]:
    for v in done:
        change = changes.get((v.resource_type, v.id))
        if change is not None:
            rtype, rid = v.resource_type, v.id
            yield from ((rtype, rid, *e) for e in change[1])
        elif v.body is not None:
            yield from index_rows(v.resource_type, v.id, v.body)


def index_rows(resource_type: str, resource_id: str, body: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The `search_index` rows of a resource, values in `INDEX_COLUMNS` order."""
    return [
        (resource_type, resource_id, *e) for e in index_entries(body) if e.param not in ON_RESOURCES
    ]


def _dump(body: dict[str, Any] | None) -> str | None:
    return None if body is None else fhirjson.dumps(body).decode()


def _chunks(items: list[_T], size: int = _CHUNK) -> Iterable[list[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
