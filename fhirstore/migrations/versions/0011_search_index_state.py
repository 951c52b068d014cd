"""search_index_state: which extraction version built the search index

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 04:00:00

The schema only. The index gained rows of three kinds (composite parameters, quantities in UCUM
base units, `<param>:of-type`); rebuilding it is not a migration's work (it would run the
extraction code of whatever Herald runs the migration, inside the schema upgrade, with no
progress). The new table records which extraction version built the index: a database
upgraded from 0010 holds rows of version 1 (the last before versions were recorded), which
Herald rebuilds at start (in the background) or `herald reindex` does (fhirstore/reindex.py;
docs/operations.md).

The downgrade drops the table and the rows of the three new kinds, which the code of 0010
would misread (a quantity row in base units would answer a unit-less quantity search). The
composite codes are those of the R4B definitions, written out here so this file does not
change meaning when the code does. Version 2 no longer writes rows for Observation's union
parameters (`combo-code`, `combo-data-absent-reason`, `combo-value-concept`,
`combo-value-quantity`: fhirstore/search/unions.py), which 0010's code searches: the downgrade
writes them again from their members' rows, as version 1 wrote them (one row per distinct
value, quantities as written only).
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# The version of the extraction that wrote the rows of a database at 0010.
_BEFORE_VERSIONS = 1
_COMPOSITES = (
    "characteristic-value",
    "chromosome-variant-coordinate",
    "chromosome-window-coordinate",
    "code-value-concept",
    "code-value-date",
    "code-value-quantity",
    "code-value-string",
    "combo-code-value-concept",
    "combo-code-value-quantity",
    "component-code-value-concept",
    "component-code-value-quantity",
    "context-type-quantity",
    "context-type-value",
    "referenceseqid-variant-coordinate",
    "referenceseqid-window-coordinate",
    "relationship",
)


# Observation's union parameters version 1 indexed, with their members (fixed, as above).
_UNIONS = {
    "combo-code": ("code", "component-code"),
    "combo-data-absent-reason": ("data-absent-reason", "component-data-absent-reason"),
    "combo-value-concept": ("value-concept", "component-value-concept"),
    "combo-value-quantity": ("value-quantity", "component-value-quantity"),
}


def upgrade() -> None:
    state = op.create_table(
        "search_index_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("built_by", sa.Integer(), nullable=False),
        sa.Column("building", sa.Integer(), nullable=True),
        sa.Column("after_type", sa.String(length=64), nullable=True),
        sa.Column("after_id", sa.String(length=64), nullable=True),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(state, [{"id": 1, "built_by": _BEFORE_VERSIONS, "done": 0, "total": 0}])


def downgrade() -> None:
    op.drop_table("search_index_state")
    index = sa.table(
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
    bind = op.get_bind()
    values = ("system", "code", "text", "low", "high")
    for union, members in _UNIONS.items():
        bind.execute(sa.delete(index).where(index.c.param == union))
        of_members = (
            sa.select(
                index.c.res_type,
                index.c.res_id,
                sa.literal(union, sa.String),
                *(index.c[name] for name in values),
            )
            .where(index.c.res_type == "Observation", index.c.param.in_(members))
            .distinct()
        )
        names = ["res_type", "res_id", "param", *values]
        bind.execute(sa.insert(index).from_select(names, of_members))
    # Then the rows of the new kinds (the copies of quantities in base units among them).
    bind.execute(
        sa.delete(index).where(
            sa.or_(
                index.c.param.in_(_COMPOSITES),
                index.c.param.like("%:of-type"),
                sa.and_(
                    index.c.code.is_(None),
                    index.c.low.is_not(None),
                    index.c.text.like("=%"),
                ),
            )
        )
    )
