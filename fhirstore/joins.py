"""The store's data as parts of another package's query, for the few checks that must stay one
SQL statement over thousands of rows (scheduler/settled.py, scheduler/bookkeeping.py).

Other packages never name the store's tables or columns. Where reading the store's data
through `Store` methods would turn one query into one per row, they join one of these: each
offers only what the store promises to keep answering (a resource's current version, whether
it is deleted, its body; the values indexed for one search parameter), and compiles to the same
SQL a join on the tables would.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, FromClause, and_

from fhirstore.db.schema import resources, search_index


class CurrentVersions:
    """The current version of each resource of one type (deleted ones included), by id."""

    def __init__(self, resource_type: str, name: str | None = None) -> None:
        """`name` aliases the rows, to join the same store data more than once."""
        self.resource_type = resource_type
        self.rows: FromClause = resources if name is None else resources.alias(name)

    @property
    def of_type(self) -> ColumnElement[bool]:
        """True of the rows of this type (for a query over `rows` alone)."""
        return self.rows.c.res_type == self.resource_type

    def on(self, resource_id: ColumnElement[str]) -> ColumnElement[bool]:
        """The join condition: the row of the resource whose id is `resource_id`."""
        return and_(self.of_type, self.rows.c.res_id == resource_id)

    @property
    def id(self) -> ColumnElement[str]:
        return self.rows.c.res_id

    @property
    def version_id(self) -> ColumnElement[int]:
        return self.rows.c.version_id

    @property
    def deleted(self) -> ColumnElement[bool]:
        return self.rows.c.deleted

    @property
    def body(self) -> ColumnElement[str | None]:
        """The current body's JSON text (None once deleted)."""
        return self.rows.c.body


class IndexedValues:
    """The values indexed for one search parameter of the current versions of one resource
    type: `code` and `system` of a token, `code` ("Type/id") of a reference (see the comment
    above `search_index` in fhirstore/db/schema.py)."""

    def __init__(self, resource_type: str, param: str, name: str | None = None) -> None:
        """`name` aliases the rows, to join values of several parameters."""
        self.resource_type = resource_type
        self.param = param
        self.rows: FromClause = search_index if name is None else search_index.alias(name)

    @property
    def of_param(self) -> ColumnElement[bool]:
        """True of the rows of this type and parameter."""
        return and_(self.rows.c.res_type == self.resource_type, self.rows.c.param == self.param)

    def on(self, resource_id: ColumnElement[str]) -> ColumnElement[bool]:
        """The join condition: the values of the resource whose id is `resource_id`."""
        return and_(
            self.rows.c.res_type == self.resource_type,
            self.rows.c.res_id == resource_id,
            self.rows.c.param == self.param,
        )

    @property
    def resource_id(self) -> ColumnElement[str]:
        return self.rows.c.res_id

    @property
    def code(self) -> ColumnElement[str | None]:
        return self.rows.c.code

    @property
    def system(self) -> ColumnElement[str | None]:
        return self.rows.c.system
