"""Writes resource versions: current row, history row, search index and outbox, in one transaction.

Every write path (single REST interaction, batch entry, transaction Bundle, loader, scheduler) goes
through `write_versions`, so the change event is always committed with the version it describes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import and_, bindparam, delete, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore import fhirjson
from fhirstore.access.boundary import Reach
from fhirstore.access.narrowing import reach_clause
from fhirstore.db.locks import CONDITIONAL_CREATE_LOCK_CLASS, OUTBOX_LOCK_KEY, int4_key
from fhirstore.db.schema import outbox, resource_versions, resources, search_index
from fhirstore.errors import BadRequest, FhirError, Forbidden, PreconditionFailed
from fhirstore.search.extract import index_entries

# Any constant shared by all Herald processes; taken (transaction-scoped) right before the outbox
# insert so that on PostgreSQL outbox sequence order equals commit order.
# PostgreSQL channel notified (at commit) whenever outbox rows are added: relays in other
# processes wake at once instead of waiting for their next poll.
OUTBOX_CHANNEL = "herald_outbox"
_CHUNK = 500
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
    outside = await _outside_reach(conn, writes, current)
    outcomes: list[WrittenVersion | FhirError | None] = []
    for write in writes:
        try:
            if (write.resource_type, write.id) in outside:
                raise Forbidden(
                    f"{write.resource_type}/{write.id} is outside what this token may change "
                    f"({_reach_text(write.reach)})"
                )
            outcomes.append(_plan(write, current.get((write.resource_type, write.id)), now))
        except FhirError as error:
            if all_or_nothing:
                raise
            outcomes.append(error)
    done = [o for o in outcomes if isinstance(o, WrittenVersion)]
    if done:
        await _apply(conn, done, current, now, postgres=postgres)
    return outcomes


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
) -> set[tuple[str, str]]:
    """The live resources among `writes` whose current version is outside the write's reach
    (read in the caller's transaction, after `current` was locked)."""
    by_reach: dict[Reach, list[str]] = {}
    for write in writes:
        head = current.get((write.resource_type, write.id))
        if write.reach is not None and head is not None and not head.deleted:
            by_reach.setdefault(write.reach, []).append(write.id)
    outside: set[tuple[str, str]] = set()
    for write in writes:  # a deleted id stays with whoever could write its last version
        head = current.get((write.resource_type, write.id))
        if write.reach is None or write.reach.everything or head is None or not head.deleted:
            continue
        last = await last_live_body(conn, write.resource_type, write.id, head.version_id)
        if last is not None and not write.reach.admits(orjson.loads(last), writing=True):
            outside.add((write.resource_type, write.id))
    r = resources.c
    for reach, ids in by_reach.items():
        clause = reach_clause(reach, resources, writing=True)
        if clause is None:
            continue
        inside: set[str] = set()
        for chunk in _chunks(ids):
            query = select(r.res_id).where(
                r.res_type == reach.resource_type, r.res_id.in_(chunk), clause
            )
            inside.update((await conn.execute(query)).scalars())
        outside.update((reach.resource_type, i) for i in ids if i not in inside)
    return outside


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


def _plan(write: PendingWrite, cur: Head | None, now: datetime) -> WrittenVersion | None:
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
        meta["lastUpdated"] = fhir_instant(now)
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
    now: datetime,
    *,
    postgres: bool,
) -> None:
    texts = {(v.resource_type, v.id): _dump(v.body) for v in done}
    fresh = [v for v in done if (v.resource_type, v.id) not in current]
    existing = [v for v in done if (v.resource_type, v.id) in current]
    if fresh:
        await conn.execute(resources.insert(), [_current_row(v, texts) for v in fresh])
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
        s = search_index.c
        for resource_type, ids in ids_by_type((v.resource_type, v.id) for v in existing).items():
            for chunk in _chunks(ids):
                await conn.execute(
                    delete(search_index).where(
                        and_(s.res_type == resource_type, s.res_id.in_(chunk))
                    )
                )
    await conn.execute(
        resource_versions.insert(),
        [
            {
                "res_type": v.resource_type,
                "res_id": v.id,
                "version_id": v.version_id,
                "last_updated": now,
                "method": v.interaction,
                "body": texts[(v.resource_type, v.id)],
            }
            for v in done
        ],
    )
    index_rows = list(_index_rows(done))
    if index_rows:
        # Plain strings and floats: hand them to the driver's executemany as they are.
        # SQLAlchemy's per-row bind processing cost more than the insert itself.
        await conn.exec_driver_sql(_index_insert_sql(conn.dialect.paramstyle), index_rows)
    if postgres:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": OUTBOX_LOCK_KEY})
    await conn.execute(
        outbox.insert(),
        [
            {
                "event_id": str(uuid.uuid4()),
                "res_type": v.resource_type,
                "res_id": v.id,
                "version_id": v.version_id,
                "previous_version_id": v.previous_version_id,
                "interaction": v.interaction,
                "occurred_at": now,
                "body": texts[(v.resource_type, v.id)],
            }
            for v in done
        ],
    )
    if postgres:
        await conn.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))


def _current_row(v: WrittenVersion, texts: dict[tuple[str, str], str | None]) -> dict[str, Any]:
    return {
        "res_type": v.resource_type,
        "res_id": v.id,
        "version_id": v.version_id,
        "last_updated": v.last_updated,
        "deleted": v.body is None,
        "body": texts[(v.resource_type, v.id)],
    }


_INDEX_COLUMNS = ("res_type", "res_id", "param", "system", "code", "text", "low", "high")


def _index_insert_sql(paramstyle: str) -> str:
    if paramstyle == "numeric_dollar":
        marks = [f"${n}" for n in range(1, len(_INDEX_COLUMNS) + 1)]
    elif paramstyle == "qmark":
        marks = ["?"] * len(_INDEX_COLUMNS)
    else:
        raise RuntimeError(f"unsupported DBAPI paramstyle {paramstyle!r}")
    return (
        f"INSERT INTO {search_index.name} ({', '.join(_INDEX_COLUMNS)}) VALUES ({', '.join(marks)})"
    )


def _index_rows(done: Iterable[WrittenVersion]) -> Iterable[tuple[Any, ...]]:
    for v in done:
        if v.body is None:
            continue
        for e in index_entries(v.body):
            yield (v.resource_type, v.id, e.param, e.system, e.code, e.text, e.low, e.high)


def _dump(body: dict[str, Any] | None) -> str | None:
    return None if body is None else fhirjson.dumps(body).decode()


def _chunks(items: list[_T]) -> Iterable[list[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
