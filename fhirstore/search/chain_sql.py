"""A chained criterion as SQL: one EXISTS per link, over `search_index` reference entries and
the `resources` rows they reach.

A forward link (`subject:Patient.name`) looks up the reference entries of the row at hand
(`ix_search_resource`: type, id, parameter) and keeps those naming one of a set: `Patient/<id>`
of every stored Patient the rest of the chain accepts. That set is not correlated with the row
at hand, so each database builds it once per search and probes it per row; what the rest of a
forward chain tests is usually selective (an identifier, a name). A reverse link
(`_has:Observation:patient:code`) looks up the entries of Observations whose `patient` is
`Patient/<id of the row at hand>` (`ix_search_code`: type, parameter, code) and tests each of
those Observations, found by primary key: a few per row, however common the code is. The
criterion's own test runs on the row the last link reaches, as it would unchained.
`bench/search_chains.py` measures both against the plain searches they stand for.

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

from sqlalchemy import ColumnElement, false, literal, select

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
    accepted = [
        reached.c.res_type == link.target,
        reached.c.deleted == false(),
        *([reach] if reach is not None else []),
        _step(link.target, more, tested, reached, narrowing, final),
    ]
    if link.reverse:
        # The entries of `target` resources pointing at the row at hand (`ix_search_code`),
        # each resource looked up by its key and tested: a few per row, however common what
        # the rest of the chain tests is among all `target` resources.
        accepted.append(reached.c.res_id == entry.c.res_id)
        conditions = [
            entry.c.res_type == link.target,
            entry.c.param == link.param.code,
            entry.c.code == literal(f"{current}/") + rows.c.res_id,
            select(literal(1)).where(*accepted).correlate(entry).exists(),
        ]
    else:
        # The row's own references (`ix_search_resource`) to one of the `target` resources the
        # rest of the chain accepts: one set, not correlated with the row at hand, so the
        # database builds it once per search (the rest is usually selective: an identifier,
        # a name) and probes it per row.
        named = literal(f"{link.target}/") + reached.c.res_id
        conditions = [
            entry.c.res_type == current,
            entry.c.res_id == rows.c.res_id,
            entry.c.param == link.param.code,
            entry.c.code.in_(select(named).where(*accepted)),
        ]
    return select(literal(1)).where(*conditions).correlate(rows).exists()
