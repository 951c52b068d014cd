"""A `Reach` as SQL: the condition that keeps rows of `resources` or `resource_versions` inside it.

Compartment membership is read from the current version's search index, the same entries
`compartment.in_patient_compartment` computes in memory: a Patient by its id, another type by an
index entry `Patient/<id>` under one of its compartment parameters. A Subscription owner is the
`_tag` entry in `ownership.OWNER_TAG_SYSTEM`.

`Narrowing` is what a search is run with: the reach of the searched type, and which other types
its `_include` / `_revinclude` may bring in (those the principal may read, each narrowed the
same way; the others are left out rather than refused).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, false, literal, select

from fhirstore.access.boundary import Access, Reach
from fhirstore.access.compartment import compartment_params
from fhirstore.db.schema import search_index
from fhirstore.wire import OWNER_TAG_SYSTEM


def reach_clause(reach: Reach, rows: Any, *, writing: bool = False) -> ColumnElement[bool] | None:
    """The condition on `rows` (a table or alias with `res_type` / `res_id`) for resources of
    `reach.resource_type` inside `reach` (`writing`: and in no other patient's compartment,
    as `Reach.admits`); None when it holds for every one."""
    if reach.everything:
        return None
    entry = search_index.alias()
    conditions = [entry.c.res_type == reach.resource_type, entry.c.res_id == rows.c.res_id]
    if reach.owner is not None:
        conditions += [
            entry.c.param == "_tag",
            entry.c.system == OWNER_TAG_SYSTEM,
            entry.c.code == reach.owner,
        ]
    else:
        assert reach.patient is not None
        if reach.resource_type == "Patient":
            return rows.c.res_id == reach.patient
        params = compartment_params(reach.resource_type)
        mine = f"Patient/{reach.patient}"
        inside = select(literal(1)).where(
            *conditions, entry.c.param.in_(params), entry.c.code == mine
        )
        if not writing:
            return inside.exists()
        other = search_index.alias()
        shared = select(literal(1)).where(
            other.c.res_type == reach.resource_type,
            other.c.res_id == rows.c.res_id,
            other.c.param.in_(params),
            other.c.code.startswith("Patient/"),
            other.c.code != mine,
        )
        return and_(inside.exists(), ~shared.exists())
    return select(literal(1)).where(*conditions).exists()


class Narrowing:
    """What one search may return: `reach` for the searched type, and for other types what
    `access` may read."""

    def __init__(self, reach: Reach, access: Access | None) -> None:
        self.reach = reach
        self._access = access

    def clause(self, rows: Any) -> ColumnElement[bool] | None:
        """The condition for rows of the searched type."""
        return reach_clause(self.reach, rows)

    def other(self, resource_type: str, rows: Any) -> ColumnElement[bool] | None:
        """The condition for rows of `resource_type` brought in by `_include` / `_revinclude`:
        false when the principal may not read that type at all."""
        if resource_type == self.reach.resource_type:
            return self.clause(rows)
        if self._access is None:
            return None
        reach = self._access.may(resource_type, "r")
        return false() if reach is None else reach_clause(reach, rows)
