"""Run a `SearchRequest` against the database: `resources` filtered by EXISTS over `search_index`.

SQLAlchemy Core only, identical on SQLite and PostgreSQL. Each criterion becomes one correlated
EXISTS (NOT EXISTS for `:not` / `:missing=true`) whose condition is rendered from the same
`compare.Plan` the in-memory matcher evaluates.

Order: the `_sort` keys (min of the entries ascending, max descending, resources without a
value last), then `last_updated`, `res_id` - a stable order, so `_offset` paging is stable.

Total: `_total=accurate` counts; `_total=none` gives None. Otherwise (`estimate` or not asked)
the count is taken when cheap: free when this page reaches the end of the results, else a
count capped at `COUNT_CAP` matches (None above it, rather than a slow full count).

Cost: the request's `SearchLimits` bound what running it may take. Its queries run under a
deadline (`fhirstore.db.deadline`: 503 past it). Rows are read a few at a time and a page
stops early, with a `next` link, once its resource bodies pass `max_page_bytes` (at least one
resource is always returned, so paging moves on), so a page of large resources never holds
more than about that many bytes. A page that would bring in more than `max_included`
resources, or more than the bytes left, with `_include` / `_revinclude` is a 400 that says
to ask for a smaller `_count`.

Access: a `Narrowing` (`fhirstore.access.narrowing`) adds the principal's reach to the page,
the total and every `_include` / `_revinclude`, so a search can never return, count or bring in
a resource its principal may not read.
"""

from __future__ import annotations

import string
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    String,
    and_,
    cast,
    false,
    func,
    literal,
    null,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncResult
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from fhirstore.db.deadline import query_deadline
from fhirstore.db.schema import resources, search_index
from fhirstore.search.compare import TRUE, All, AnyOf, Cmp, Pred, plan, sort_field
from fhirstore.search.datatypes import reference_target
from fhirstore.search.index_entry import ID_PARAM, LAST_UPDATED_PARAM
from fhirstore.search.limits import SearchLimits, over_limit
from fhirstore.search.query import Criterion, Include, SearchRequest

if TYPE_CHECKING:
    from fhirstore.access.narrowing import Narrowing

COUNT_CAP = 10_000  # matches counted at most when no accurate total was asked for
_ROWS_PER_FETCH = 50  # rows read from the database at a time
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@dataclass(slots=True)
class SearchResult:
    resources: list[str]  # JSON bodies of this page, in order
    included: list[str] = field(default_factory=list)  # _include / _revinclude, deduplicated
    total: int | None = None
    has_more: bool = False


def _cmp(cmp: Cmp, entry: Any) -> ColumnElement[bool]:
    column = entry.c[cmp.field]
    op, value = cmp.op, cmp.value
    if op == "null":
        return column.is_(None)
    if op == "eq":
        return column == value
    if op == "in":
        return column.in_(sorted(value))
    if op == "lt":
        return column < value
    if op == "le":
        return column <= value
    if op == "gt":
        return column > value
    if op == "ge":
        return column >= value
    if op == "prefix":
        if cmp.field == "text":  # folded text: LIKE is exact there on both databases
            return column.startswith(value, autoescape=True)
        return func.substr(column, 1, len(value)) == value  # case-sensitive everywhere
    if op == "contains":
        return column.contains(value, autoescape=True)
    if op == "icontains":
        return func.lower(column).contains(value.translate(_ASCII_LOWER), autoescape=True)
    raise ValueError(f"unknown comparison {op!r}")


def pred_clause(pred: Pred, entry: Any) -> ColumnElement[bool]:
    """`pred` as a SQL condition on the `search_index` alias `entry`."""
    if isinstance(pred, Cmp):
        return _cmp(pred, entry)
    clauses = [pred_clause(part, entry) for part in pred.parts]
    if isinstance(pred, All):
        return and_(*clauses) if clauses else literal(True)
    assert isinstance(pred, AnyOf)
    return or_(*clauses)


class _EpochSeconds(FunctionElement[float]):
    """A timestamp column as UTC epoch seconds, cut to the millisecond."""

    type = Float()
    inherit_cache = True


@compiles(_EpochSeconds, "sqlite")
def _epoch_seconds_sqlite(element: _EpochSeconds, compiler: SQLCompiler, **kw: Any) -> str:
    # Stored as text `YYYY-MM-DD HH:MM:SS.ffffff` (UTC). strftime('%s') of the whole value
    # would round the fraction into the seconds, so the seconds and milliseconds are read
    # apart and joined into the decimal the index would hold (normalize.date_range).
    value = compiler.process(element.clauses, **kw)
    return f"CAST(strftime('%s', substr({value}, 1, 19)) || '.' || substr({value}, 21, 3) AS REAL)"


@compiles(_EpochSeconds, "postgresql")
def _epoch_seconds_postgresql(element: _EpochSeconds, compiler: SQLCompiler, **kw: Any) -> str:
    value = compiler.process(element.clauses, **kw)
    return f"CAST(trunc(EXTRACT(EPOCH FROM {value}), 3) AS DOUBLE PRECISION)"


_NULL_TEXT = cast(null(), String)
_NULL_NUMBER = cast(null(), Float)
_LAST_UPDATED = _EpochSeconds(resources.c.last_updated)


@dataclass(frozen=True)
class _RowEntry:
    """The one entry of a parameter the resource row holds itself, which `search_index` does
    not store (fhirstore/search/index_entry.py): its columns, as expressions on `resources`."""

    c: dict[str, ColumnElement[Any]]


def _row_entry(**columns: ColumnElement[Any]) -> _RowEntry:
    empty = {"system": _NULL_TEXT, "code": _NULL_TEXT, "text": _NULL_TEXT}
    return _RowEntry({**empty, "low": _NULL_NUMBER, "high": _NULL_NUMBER, **columns})


_ON_RESOURCES: dict[str, _RowEntry] = {
    ID_PARAM: _row_entry(code=resources.c.res_id),
    # The instant `meta.lastUpdated` was written from, to the millisecond as written.
    LAST_UPDATED_PARAM: _row_entry(low=_LAST_UPDATED, high=_LAST_UPDATED),
}


def criterion_clause(resource_type: str, criterion: Criterion) -> ColumnElement[bool]:
    """EXISTS (or NOT EXISTS) an index entry of the resource row satisfying the criterion."""
    criterion_plan = plan(criterion)
    if criterion_plan.param in _ON_RESOURCES:
        # The same EXISTS over the row's one entry (a SELECT without FROM), so NULLs and
        # `:not` / `:missing` come out as they do for stored entries.
        entry: Any = _ON_RESOURCES[criterion_plan.param]
        conditions = []
    else:
        entry = search_index.alias()
        conditions = [
            entry.c.res_type == resource_type,
            entry.c.res_id == resources.c.res_id,
            entry.c.param == criterion_plan.param,
        ]
    if criterion_plan.pred != TRUE:
        conditions.append(pred_clause(criterion_plan.pred, entry))
    exists = select(literal(1)).where(*conditions).correlate(resources).exists()
    return ~exists if criterion_plan.negate else exists


def _filters(request: SearchRequest, narrowing: Narrowing | None) -> list[ColumnElement[bool]]:
    reach = narrowing.clause(resources) if narrowing is not None else None
    return [
        resources.c.res_type == request.resource_type,
        resources.c.deleted == false(),
        *(criterion_clause(request.resource_type, c) for c in request.criteria),
        *([reach] if reach is not None else []),
    ]


def _other(narrowing: Narrowing | None, resource_type: str) -> list[ColumnElement[bool]]:
    """The reach condition on `resources` rows of an included type, if any."""
    reach = narrowing.other(resource_type, resources) if narrowing is not None else None
    return [reach] if reach is not None else []


def _order(request: SearchRequest) -> list[Any]:
    order: list[Any] = []
    for param, descending in request.sort:
        if param.code in _ON_RESOURCES:  # one entry: its value is the min and the max
            value: ColumnElement[Any] = _ON_RESOURCES[param.code].c[sort_field(param, descending)]
        else:
            entry = search_index.alias()
            column = entry.c[sort_field(param, descending)]
            value = (
                select(func.max(column) if descending else func.min(column))
                .where(
                    entry.c.res_type == request.resource_type,
                    entry.c.res_id == resources.c.res_id,
                    entry.c.param == param.code,
                )
                .scalar_subquery()
            )
        order.append((value.desc() if descending else value.asc()).nulls_last())
    return [*order, resources.c.last_updated, resources.c.res_id]


async def _total(
    conn: AsyncConnection,
    request: SearchRequest,
    narrowing: Narrowing | None,
    found: int,
    has_more: bool,
) -> int | None:
    if request.total == "none":
        return None
    if request.total != "accurate" and not has_more and (found or request.offset == 0):
        return request.offset + found
    matching: Select[Any] = select(resources.c.res_id).where(*_filters(request, narrowing))
    if request.total != "accurate":
        matching = matching.limit(COUNT_CAP + 1)
    count = (await conn.execute(select(func.count()).select_from(matching.subquery()))).scalar()
    total = int(count or 0)
    return None if request.total != "accurate" and total > COUNT_CAP else total


class _Budget:
    """What is left of one page's `SearchLimits`: resource bytes and included resources."""

    def __init__(self, limits: SearchLimits) -> None:
        self.limits = limits
        self.bytes_left = limits.max_page_bytes
        self.included_left = limits.max_included

    def include(self, wanted: int) -> None:
        """Take `wanted` included resources, or refuse the page (400)."""
        if wanted > self.included_left:
            raise self._too_many(self.limits.max_included - self.included_left + wanted)
        self.included_left -= wanted

    def _too_many(self, asked: int) -> Exception:
        return over_limit(
            "_include",
            asked,
            self.limits.max_included,
            "HERALD_SEARCH_MAX_INCLUDED",
            "this page brings in more resources with _include / _revinclude than a page may "
            "hold; ask for a smaller _count",
        )

    def take_included(self, body: str) -> None:
        if len(body) > self.bytes_left:
            raise over_limit(
                "_include",
                self.limits.max_page_bytes - self.bytes_left + len(body),
                self.limits.max_page_bytes,
                "HERALD_SEARCH_MAX_PAGE_BYTES",
                "the resources this page brings in with _include / _revinclude are larger "
                "(in bytes) than a page may hold; ask for a smaller _count",
            )
        self.bytes_left -= len(body)


async def _rows(conn: AsyncConnection, query: Select[Any]) -> AsyncIterator[Any]:
    """The rows of `query`, read from the database a few at a time."""
    result: AsyncResult[Any] = await conn.stream(query)
    try:
        async for chunk in result.partitions(_ROWS_PER_FETCH):
            for row in chunk:
                yield row
    finally:
        await result.close()


async def _bodies(
    conn: AsyncConnection,
    wanted: dict[str, set[str]],
    narrowing: Narrowing | None,
    budget: _Budget,
) -> list[tuple[str, str, str]]:
    budget.include(sum(len(ids) for ids in wanted.values()))
    rows: list[tuple[str, str, str]] = []
    for resource_type, ids in sorted(wanted.items()):
        query = (
            select(resources.c.res_type, resources.c.res_id, resources.c.body)
            .where(
                resources.c.res_type == resource_type,
                resources.c.res_id.in_(sorted(ids)),
                resources.c.deleted == false(),
                *_other(narrowing, resource_type),
            )
            .order_by(resources.c.res_id)
        )
        async for res_type, res_id, body in _rows(conn, query):
            budget.take_included(body)
            rows.append((res_type, res_id, body))
    return rows


async def _included(
    conn: AsyncConnection,
    include: Include,
    resource_type: str,
    ids: list[str],
    narrowing: Narrowing | None,
    budget: _Budget,
) -> list[tuple[str, str, str]]:
    query = select(search_index.c.code).where(
        search_index.c.res_type == resource_type,
        search_index.c.res_id.in_(ids),
        search_index.c.param.in_([p.code for p in include.params()]),
    )
    if include.target_type is not None:
        query = query.where(search_index.c.system == include.target_type)
    wanted: dict[str, set[str]] = {}
    references = query.distinct().limit(budget.included_left + 1)
    for (code,) in (await conn.execute(references)).all():
        target = reference_target(code) if code and "://" not in code else None
        if target is not None:
            wanted.setdefault(target[0], set()).add(target[1])
    return await _bodies(conn, wanted, narrowing, budget)


async def _revincluded(
    conn: AsyncConnection,
    include: Include,
    resource_type: str,
    ids: list[str],
    narrowing: Narrowing | None,
    budget: _Budget,
) -> list[tuple[str, str, str]]:
    entry = search_index.alias()
    referencing = select(literal(1)).where(
        entry.c.res_type == include.source_type,
        entry.c.res_id == resources.c.res_id,
        entry.c.param.in_([p.code for p in include.params()]),
        entry.c.code.in_([f"{resource_type}/{i}" for i in ids]),
    )
    query = (
        select(resources.c.res_type, resources.c.res_id, resources.c.body)
        .where(
            resources.c.res_type == include.source_type,
            resources.c.deleted == false(),
            referencing.exists(),
            *_other(narrowing, include.source_type),
        )
        .order_by(resources.c.res_id)
        .limit(budget.included_left + 1)
    )
    rows: list[tuple[str, str, str]] = []
    async for res_type, res_id, body in _rows(conn, query):
        budget.include(1)
        budget.take_included(body)
        rows.append((res_type, res_id, body))
    return rows


async def _page(
    conn: AsyncConnection, query: Select[Any], count: int, budget: _Budget
) -> tuple[list[tuple[str, str]], bool]:
    """Up to `count` (id, body) rows of `query`, fewer once their bodies pass the budget's
    bytes, and whether more follow (`query` fetches count + 1)."""
    rows: list[tuple[str, str]] = []
    async for res_id, body in _rows(conn, query):
        if len(rows) == count or (rows and len(body) > budget.bytes_left):
            return rows, True
        rows.append((res_id, body))
        budget.bytes_left -= len(body)
    return rows, False


async def run_search(
    conn: AsyncConnection, request: SearchRequest, narrowing: Narrowing | None = None
) -> SearchResult:
    """One page of results for `request` (fetches count + 1 rows to know `has_more`), inside
    `narrowing` when given (None: Herald's own search, unnarrowed), under the request's
    limits (deadline, bytes, included resources)."""
    async with query_deadline(conn, request.limits.timeout_seconds):
        return await _run_search(conn, request, narrowing)


async def _run_search(
    conn: AsyncConnection, request: SearchRequest, narrowing: Narrowing | None
) -> SearchResult:
    page = (
        select(resources.c.res_id, resources.c.body)
        .where(*_filters(request, narrowing))
        .order_by(*_order(request))
        .limit(request.count + 1)
        .offset(request.offset)
    )
    budget = _Budget(request.limits)
    rows, has_more = await _page(conn, page, request.count, budget)
    result = SearchResult(resources=[body for _, body in rows], has_more=has_more)
    result.total = await _total(conn, request, narrowing, len(rows), has_more)
    ids = [res_id for res_id, _ in rows]
    if ids and (request.include or request.revinclude):
        seen = {(request.resource_type, res_id) for res_id in ids}
        found: list[tuple[str, str, str]] = []
        for include in request.include:
            found += await _included(conn, include, request.resource_type, ids, narrowing, budget)
        for include in request.revinclude:
            found += await _revincluded(
                conn, include, request.resource_type, ids, narrowing, budget
            )
        for resource_type, res_id, body in found:
            if (resource_type, res_id) not in seen:
                seen.add((resource_type, res_id))
                result.included.append(body)
    return result
