"""search index: rows for composite parameters, quantities in UCUM base units, `:of-type`

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 04:00:00

The index gained three kinds of rows, written with every resource from now on
(fhirstore/search/composite.py, ucum.py, datatypes.py): one per element of a composite
parameter, a second row in base units for a quantity with a UCUM unit, and
`<param>:of-type` rows for typed Identifiers. The upgrade runs the extraction of this version
of Herald over every stored resource, in batches, and adds the rows of those new kinds (the
other rows are what they were); the downgrade deletes the rows of the new kinds.
"""

from collections.abc import Iterator

import orjson
import sqlalchemy as sa
from alembic import op

from fhirstore.search import definitions as d
from fhirstore.search.datatypes import OF_TYPE
from fhirstore.search.extract import index_entries
from fhirstore.search.index_entry import CANONICAL, IndexEntry

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_BATCH = 500
_resources = sa.table(
    "resources",
    sa.column("res_type", sa.String),
    sa.column("res_id", sa.String),
    sa.column("deleted", sa.Boolean),
    sa.column("body", sa.Text),
)
_index = sa.table(
    "search_index",
    sa.column("res_type", sa.String),
    sa.column("res_id", sa.String),
    sa.column("param", sa.String),
    sa.column("system", sa.String),
    sa.column("code", sa.String),
    sa.column("text", sa.String),
    sa.column("low", sa.Float),
    sa.column("high", sa.Float),
)


def _batches(bind: sa.Connection) -> Iterator[list[tuple[str, str, str]]]:
    """Every live resource as (type, id, body), in batches by primary key order (one batch in
    memory at a time)."""
    after = ("", "")
    key = sa.tuple_(_resources.c.res_type, _resources.c.res_id)
    while True:
        rows = bind.execute(
            sa.select(_resources.c.res_type, _resources.c.res_id, _resources.c.body)
            .where(_resources.c.deleted == sa.false(), key > sa.tuple_(*after))
            .order_by(_resources.c.res_type, _resources.c.res_id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        yield [(t, i, b) for t, i, b in rows]
        after = (rows[-1][0], rows[-1][1])


def _composites() -> frozenset[str]:
    return frozenset(
        param.code
        for resource_type in d.resource_types()
        for param in d.search_params(resource_type).values()
        if param.type == d.COMPOSITE
    )


def _new_kind(entry: IndexEntry, composites: frozenset[str]) -> bool:
    """A row of a kind this revision adds (the same test as the downgrade's SQL)."""
    in_base_units = entry.code is None and entry.low is not None
    return (
        entry.param in composites
        or entry.param.endswith(OF_TYPE)
        or (in_base_units and (entry.text or "").startswith(CANONICAL))
    )


def _add(
    bind: sa.Connection, batch: list[tuple[str, str, str]], composites: frozenset[str]
) -> None:
    rows = [
        {"res_type": res_type, "res_id": res_id, **entry.row()}
        for res_type, res_id, body in batch
        for entry in (index_entries(orjson.loads(body)) if body else ())
        if _new_kind(entry, composites)
    ]
    if rows:
        bind.execute(sa.insert(_index), rows)


def upgrade() -> None:
    bind, composites = op.get_bind(), _composites()
    for batch in _batches(bind):
        _add(bind, batch, composites)


def downgrade() -> None:
    op.get_bind().execute(
        sa.delete(_index).where(
            sa.or_(
                _index.c.param.in_(sorted(_composites())),
                _index.c.param.like("%" + OF_TYPE),
                sa.and_(
                    _index.c.code.is_(None),
                    _index.c.low.is_not(None),
                    _index.c.text.like(CANONICAL + "%"),
                ),
            )
        )
    )
