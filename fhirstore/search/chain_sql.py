"""A chained criterion as SQL: one nested EXISTS per link, over `search_index` reference entries
and the `resources` rows they reach.

A forward link (`subject:Patient.name`) looks up the reference entries of the row at hand
(`ix_search_resource`: type, id, parameter) that are relative references `Patient/<id>`, and
the Patient row by its primary key. A reverse link (`_has:Observation:patient:code`) looks up
the entries of Observations whose `patient` is `Patient/<id of the row at hand>`
(`ix_search_code`: type, parameter, code), and each Observation row by its primary key. The
criterion's own test runs on the row the last link reaches, as it would unchained.

Each row a link reaches must exist, must not be deleted, and must be inside the principal's
reach (`Narrowing.other`: a type the principal may not read reaches nothing), so a chain can
never tell a client anything about a resource it may not read. Only relative references
(`Patient/123`, versioned or not) are followed, as `_include` does: an absolute URL names a
resource on some server, which may not be this one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, false, func, literal, select

from fhirstore.db.schema import resources, search_index
from fhirstore.search.query import Criterion, Link

if TYPE_CHECKING:
    from fhirstore.access.narrowing import Narrowing

# The clause of an unchained criterion on rows of a type: (type, criterion, rows).
FinalClause = Callable[[str, Criterion, Any], ColumnElement[bool]]


def chain_clause(
    resource_type: str,
    criterion: Criterion,
    rows: Any,
    narrowing: Narrowing | None,
    final: FinalClause,
) -> ColumnElement[bool]:
    """EXISTS a path along `criterion.chain` from the `rows` row (of `resource_type`) to a
    row inside `narrowing` that satisfies the criterion (tested by `final`)."""
    tested = replace(criterion, chain=())
    return _step(resource_type, criterion.chain, tested, rows, narrowing, final)


def _step(
    current: str,
    links: Sequence[Link],
    tested: Criterion,
    rows: Any,
    narrowing: Narrowing | None,
    final: FinalClause,
) -> ColumnElement[bool]:
    if not links:
        return final(current, tested, rows)
    link, more = links[0], links[1:]
    reached = resources.alias()
    entry = search_index.alias()
    reach = narrowing.other(link.target, reached) if narrowing is not None else None
    inside = select(literal(1)).where(
        reached.c.res_type == link.target,
        _reached_id(link, entry, reached),
        reached.c.deleted == false(),
        *([reach] if reach is not None else []),
        _step(link.target, more, tested, reached, narrowing, final),
    )
    if link.reverse:  # entries of `target` resources pointing at the row at hand
        conditions = [
            entry.c.res_type == link.target,
            entry.c.param == link.param.code,
            entry.c.code == literal(f"{current}/") + rows.c.res_id,
        ]
    else:  # the row's own relative references to `target`
        prefix = f"{link.target}/"
        conditions = [
            entry.c.res_type == current,
            entry.c.res_id == rows.c.res_id,
            entry.c.param == link.param.code,
            func.substr(entry.c.code, 1, len(prefix)) == prefix,
        ]
    return (
        select(literal(1))
        .where(*conditions, inside.correlate(entry).exists())
        .correlate(rows)
        .exists()
    )


def _reached_id(link: Link, entry: Any, reached: Any) -> ColumnElement[bool]:
    """The reached row is the one the entry names (forward) or the entry's own (reverse)."""
    if link.reverse:
        return reached.c.res_id == entry.c.res_id
    return reached.c.res_id == func.substr(entry.c.code, len(link.target) + 2)
