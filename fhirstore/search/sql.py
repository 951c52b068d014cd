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
deadline (`fhirstore.db.deadline`: 503 past it), and a page holds about `max_page_bytes` of
resources at most (`fhirstore.search.page`: sizes first, then only the bodies it takes).

Access: a `Narrowing` (`fhirstore.access.narrowing`) adds the principal's reach to the page,
the total and every `_include` / `_revinclude` (`fhirstore.search.includes`, with `:iterate`),
so a search can never return, count or bring in a resource its principal may not read; the
ValueSets of `:in` / `:not-in` are read inside it too (`valuesets`).
"""

from __future__ import annotations

import dataclasses
import string
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
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from fhirstore.db.deadline import query_deadline
from fhirstore.db.schema import resources, search_index
from fhirstore.search import definitions as d
from fhirstore.search.chain_sql import chain_clause
from fhirstore.search.compare import TRUE, All, AnyOf, Cmp, Pred, plan, sort_field
from fhirstore.search.includes import included
from fhirstore.search.index_entry import ID_PARAM, LAST_UPDATED_PARAM
from fhirstore.search.index_state import require_index
from fhirstore.search.page import BODY_SIZE, Budget, load_bodies
from fhirstore.search.query import Criterion, SearchRequest
from fhirstore.search.unions import searched_params
from fhirstore.search.valuesets import expand_criteria, has_value_sets

if TYPE_CHECKING:
    from fhirstore.access.narrowing import Narrowing

COUNT_CAP = 10_000  # matches counted at most when no accurate total was asked for
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
    if op == "starts":  # case-sensitive on every field (LIKE is not on SQLite)
        return func.substr(column, 1, len(value)) == value
    if op == "nstarts":
        return func.substr(column, 1, len(value)) != value
    if op == "contains":
        return column.contains(value, autoescape=True)
    if op == "icontains":
        return func.lower(column).contains(value.translate(_ASCII_LOWER), autoescape=True)
    raise ValueError(f"unknown comparison {op!r}")


def param_clause(entry: Any, params: tuple[str, ...]) -> ColumnElement[bool]:
    """The rows of `params` (several for a union parameter, `unions.py`)."""
    return entry.c.param == params[0] if len(params) == 1 else entry.c.param.in_(params)


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


@dataclass(frozen=True)
class _RowEntry:
    """The one entry of a parameter the resource row holds itself, which `search_index` does
    not store (fhirstore/search/index_entry.py): its columns, as expressions on `resources`."""

    c: dict[str, ColumnElement[Any]]


def _row_entry(**columns: ColumnElement[Any]) -> _RowEntry:
    empty = {"system": _NULL_TEXT, "code": _NULL_TEXT, "text": _NULL_TEXT}
    return _RowEntry({**empty, "low": _NULL_NUMBER, "high": _NULL_NUMBER, **columns})


def _on_rows(rows: Any) -> dict[str, _RowEntry]:
    """The entries `rows` (`resources` or an alias of it) hold themselves, by parameter."""
    # The instant `meta.lastUpdated` was written from, to the millisecond as written.
    last_updated = _EpochSeconds(rows.c.last_updated)
    return {
        ID_PARAM: _row_entry(code=rows.c.res_id),
        LAST_UPDATED_PARAM: _row_entry(low=last_updated, high=last_updated),
    }


_ON_RESOURCES = _on_rows(resources)


def criterion_clause(
    resource_type: str,
    criterion: Criterion,
    rows: Any = resources,
    narrowing: Narrowing | None = None,
) -> ColumnElement[bool]:
    """EXISTS (or NOT EXISTS) an index entry of the `rows` row satisfying the criterion; for
    a chained criterion, EXISTS a path of rows inside `narrowing` to one that satisfies it
    (`fhirstore.search.chain_sql`)."""
    if criterion.chain:
        return chain_clause(resource_type, criterion, rows, narrowing, criterion_clause)
    criterion_plan = plan(criterion)
    on_rows = _ON_RESOURCES if rows is resources else _on_rows(rows)
    (first, *_) = params = criterion_plan.params
    if first in on_rows:
        # The same EXISTS over the row's one entry (a SELECT without FROM), so NULLs and
        # `:not` / `:missing` come out as they do for stored entries.
        entry: Any = on_rows[first]
        conditions = []
    else:
        entry = search_index.alias()
        conditions = [
            entry.c.res_type == resource_type,
            entry.c.res_id == rows.c.res_id,
            param_clause(entry, params),
        ]
    if criterion_plan.pred != TRUE:
        conditions.append(pred_clause(criterion_plan.pred, entry))
    exists = select(literal(1)).where(*conditions).correlate(rows).exists()
    return ~exists if criterion_plan.negate else exists


def _filters(request: SearchRequest, narrowing: Narrowing | None) -> list[ColumnElement[bool]]:
    reach = narrowing.clause(resources) if narrowing is not None else None
    rtype = request.resource_type
    return [
        resources.c.res_type == rtype,
        resources.c.deleted == false(),
        *(criterion_clause(rtype, c, resources, narrowing) for c in request.criteria),
        *([reach] if reach is not None else []),
    ]


def _order(request: SearchRequest) -> list[Any]:
    order: list[Any] = []
    for param, descending in request.sort:
        if param.code in _ON_RESOURCES:  # one entry: its value is the min and the max
            value: ColumnElement[Any] = _ON_RESOURCES[param.code].c[sort_field(param, descending)]
        else:
            entry = search_index.alias()
            column = entry.c[sort_field(param, descending)]
            # A quantity sorts on its values as written, not its rows in base units.
            written = [entry.c.text.is_(None)] if param.type == d.QUANTITY else []
            value = (
                select(func.max(column) if descending else func.min(column))
                .where(
                    entry.c.res_type == request.resource_type,
                    entry.c.res_id == resources.c.res_id,
                    param_clause(entry, searched_params(param)),
                    *written,
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


async def _page(
    conn: AsyncConnection, request: SearchRequest, narrowing: Narrowing | None, budget: Budget
) -> tuple[list[tuple[str, str]], bool]:
    """Up to `count` (id, body) matches, fewer once their bodies pass the budget's bytes,
    and whether more follow (count + 1 sizes are read to know)."""
    where = _filters(request, narrowing)
    sized = (
        select(resources.c.res_id, BODY_SIZE)
        .where(*where)
        .order_by(*_order(request))
        .limit(request.count + 1)
        .offset(request.offset)
    )
    rows = (await conn.execute(sized)).all()
    has_more = len(rows) > request.count
    taken: list[str] = []
    for res_id, size in rows[: request.count]:
        if not budget.take_match(size or 0, first=not taken):
            has_more = True
            break
        taken.append(res_id)
    return await load_bodies(conn, where, taken), has_more


async def run_search(
    conn: AsyncConnection, request: SearchRequest, narrowing: Narrowing | None = None
) -> SearchResult:
    """One page of results for `request` (fetches count + 1 rows to know `has_more`), inside
    `narrowing` when given (None: Herald's own search, unnarrowed), under the request's
    limits (deadline, bytes, included resources). Criteria the stored index cannot answer
    yet (built by an older extraction, being rebuilt) are refused (`index_state`)."""
    await require_index(conn, request.criteria)
    async with query_deadline(conn, request.limits.timeout_seconds):
        return await _run_search(conn, request, narrowing)


async def _run_search(
    conn: AsyncConnection, request: SearchRequest, narrowing: Narrowing | None
) -> SearchResult:
    if has_value_sets(request.criteria):  # `:in` / `:not-in`: read inside the same reach
        criteria = await expand_criteria(conn, request.criteria, narrowing, request.limits)
        request = dataclasses.replace(request, criteria=criteria)
    budget = Budget(request.limits)
    rows, has_more = await _page(conn, request, narrowing, budget)
    result = SearchResult(resources=[body for _, body in rows], has_more=has_more)
    result.total = await _total(conn, request, narrowing, len(rows), has_more)
    ids = [res_id for res_id, _ in rows]
    if ids and (request.include or request.revinclude):
        result.included = await included(conn, request, ids, narrowing, budget)
    return result
