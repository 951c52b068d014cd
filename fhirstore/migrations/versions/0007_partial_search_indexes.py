"""search index: the text index leaves out rows without a text, and (SQLite) the range
index rows without a range

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TEXT_OPS = {"text": "text_pattern_ops"}


def _where(condition: str) -> dict[str, sa.TextClause]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def _recreate(*, partial: bool) -> None:
    """The text and range indexes, partial (0007) or over every row (before)."""
    text_where = _where("text IS NOT NULL") if partial else {}
    # On SQLite only: PostgreSQL could not use it for comparisons on `high` alone (gt, ge, le),
    # since they do not imply `low IS NOT NULL` to its planner.
    range_where = {"sqlite_where": sa.text("low IS NOT NULL")} if partial else {}
    with op.batch_alter_table("search_index", schema=None) as batch_op:
        batch_op.drop_index("ix_search_text", postgresql_ops=_TEXT_OPS)
        batch_op.drop_index("ix_search_range")
        batch_op.create_index(
            "ix_search_text",
            ["res_type", "param", "text"],
            unique=False,
            postgresql_ops=_TEXT_OPS,
            **text_where,
        )
        batch_op.create_index(
            "ix_search_range", ["res_type", "param", "low", "high"], unique=False, **range_where
        )


def upgrade() -> None:
    _recreate(partial=True)


def downgrade() -> None:
    _recreate(partial=False)
