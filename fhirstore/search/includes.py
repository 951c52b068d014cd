"""The resources a search page brings in with it: `_include`, `_revinclude` and their `:iterate`.

- `_include=Source:param[:Target]`: the resources the page's `Source` matches point at through
  `param` (local references only; `Source:*` follows every reference parameter).
- `_revinclude=Source:param[:Target]`: the `Source` resources whose `param` points at a match.
- `:iterate` (the FHIR search page's "iterative" includes): applied to the matches with the
  others, then again to the resources the last round brought in, round after round, until a
  round brings in nothing new. An `_include:iterate` follows its source type wherever it is in
  the result (`MedicationRequest?_include=MedicationRequest:patient&_include:iterate=
  Patient:general-practitioner`); a `_revinclude:iterate` looks for resources pointing at any
  resource in the result (of its target type, when it names one).

Bounds (`SearchLimits`): the rounds after the first are at most `max_include_depth`; a search
whose references go on further is refused (400 too-costly naming the limit) rather than
answered with some of them missing. Every round counts against the page's included resources
and bytes (`fhirstore.search.page.Budget`), so a cycle of references costs nothing more: a
resource already in the result is never read or counted again.

Access: each included resource passes the principal's `Narrowing` like a match, in the same
query that finds it; a resource out of reach is not included and is not followed further, so
an iteration can never reach through it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, false, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fhirstore.db.schema import resources, search_index
from fhirstore.search.datatypes import reference_target
from fhirstore.search.limits import over_limit
from fhirstore.search.page import BODY_SIZE, Budget, load_bodies
from fhirstore.search.query import Include, SearchRequest

if TYPE_CHECKING:
    from fhirstore.access.narrowing import Narrowing

Found = dict[str, list[str]]  # resource type -> ids, in the order they came in


class _Gathering:
    """One page's includes as they run: what they brought in so far (bodies in order), and
    every (type, id) in the result, the matches too, so nothing is read, counted or returned
    twice."""

    def __init__(
        self,
        conn: AsyncConnection,
        narrowing: Narrowing | None,
        budget: Budget,
        resource_type: str,
        ids: Iterable[str],
    ) -> None:
        self.conn = conn
        self.narrowing = narrowing
        self.budget = budget
        self.seen: dict[str, set[str]] = {resource_type: set(ids)}
        self.bodies: list[str] = []

    async def include(self, include: Include, at_hand: Found, found: Found) -> None:
        """What the `include.source_type` resources at hand point at through its params."""
        sources = at_hand.get(include.source_type)
        if not sources:
            return
        query = select(search_index.c.code).where(
            search_index.c.res_type == include.source_type,
            search_index.c.res_id.in_(sources),
            search_index.c.param.in_([p.code for p in include.params()]),
        )
        if include.target_type is not None:
            query = query.where(search_index.c.system == include.target_type)
        # Room for the references to what is already in the result, which are left out below.
        room = self.budget.included_left + 1 + sum(len(ids) for ids in self.seen.values())
        wanted: dict[str, set[str]] = {}
        for (code,) in (await self.conn.execute(query.distinct().limit(room))).all():
            target = reference_target(code) if code and "://" not in code else None
            if target is not None and target[1] not in self.seen.get(target[0], ()):
                wanted.setdefault(target[0], set()).add(target[1])
        for resource_type, targets in sorted(wanted.items()):
            where = [
                resources.c.res_type == resource_type,
                resources.c.res_id.in_(sorted(targets)),
                resources.c.deleted == false(),
                *self._reach(resource_type),
            ]
            await self._take(resource_type, where, found)

    async def revinclude(self, include: Include, at_hand: Found, found: Found) -> None:
        """The `include.source_type` resources pointing at the resources at hand."""
        targets = [
            f"{resource_type}/{res_id}"
            for resource_type, ids in sorted(at_hand.items())
            if include.target_type in (None, resource_type)
            for res_id in ids
        ]
        if not targets:
            return
        entry = search_index.alias()
        referencing = select(literal(1)).where(
            entry.c.res_type == include.source_type,
            entry.c.res_id == resources.c.res_id,
            entry.c.param.in_([p.code for p in include.params()]),
            entry.c.code.in_(targets),
        )
        where = [
            resources.c.res_type == include.source_type,
            resources.c.deleted == false(),
            referencing.exists(),
            *_not_in(self.seen.get(include.source_type, ())),
            *self._reach(include.source_type),
        ]
        await self._take(include.source_type, where, found)

    def _reach(self, resource_type: str) -> list[ColumnElement[bool]]:
        """The reach condition on `resources` rows of an included type, if any."""
        narrowing = self.narrowing
        reach = narrowing.other(resource_type, resources) if narrowing is not None else None
        return [reach] if reach is not None else []

    async def _take(
        self, resource_type: str, where: list[ColumnElement[bool]], found: Found
    ) -> None:
        """Bring in the rows satisfying `where`, inside the page's budget (else a 400), and
        note the new ones in `found`."""
        sized = (
            select(resources.c.res_id, BODY_SIZE)
            .where(*where)
            .order_by(resources.c.res_id)
            .limit(self.budget.included_left + 1)
        )
        rows = (await self.conn.execute(sized)).all()
        self.budget.take_included([size or 0 for _, size in rows])
        known = self.seen.setdefault(resource_type, set())
        for res_id, body in await load_bodies(self.conn, where, [r for r, _ in rows]):
            if res_id not in known:
                known.add(res_id)
                self.bodies.append(body)
                found.setdefault(resource_type, []).append(res_id)


async def included(
    conn: AsyncConnection,
    request: SearchRequest,
    ids: list[str],
    narrowing: Narrowing | None,
    budget: Budget,
) -> list[str]:
    """The bodies the request's includes bring in for the matches `ids` (not the matches)."""
    gathering = _Gathering(conn, narrowing, budget, request.resource_type, ids)
    at_hand: Found = {request.resource_type: ids}
    includes, revincludes = request.include, request.revinclude
    depth = request.limits.max_include_depth
    for round_number in range(depth + 2):
        if round_number > 0:  # from the second round on, only the iterating ones
            includes = [i for i in includes if i.iterate]
            revincludes = [i for i in revincludes if i.iterate]
        if not at_hand or not (includes or revincludes):
            break
        found: Found = {}
        for include in includes:
            await gathering.include(include, at_hand, found)
        for include in revincludes:
            await gathering.revinclude(include, at_hand, found)
        if found and round_number > depth:
            raise _too_deep(request, depth)
        at_hand = found
    return gathering.bodies


def _too_deep(request: SearchRequest, depth: int) -> Exception:
    name = "_include:iterate" if any(i.iterate for i in request.include) else "_revinclude:iterate"
    return over_limit(
        name,
        depth + 1,
        depth,
        "HERALD_SEARCH_MAX_INCLUDE_DEPTH",
        "the included resources lead on further than the iterations this server follows; "
        "ask for fewer matches, or start a second search where this one stops",
    )


def _not_in(ids: Iterable[str]) -> Sequence[ColumnElement[bool]]:
    known = sorted(ids)
    return [resources.c.res_id.not_in(known)] if known else []
