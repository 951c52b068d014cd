"""search index: `_lastUpdated` is answered from `resources.last_updated`, no longer stored

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 23:40:00
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The entry the index held: `meta.lastUpdated` (the column, to the millisecond) as UTC epoch
# seconds in low and high. SQLite stores the column as text `YYYY-MM-DD HH:MM:SS.ffffff`.
_EPOCH = {
    "sqlite": (
        "CAST(strftime('%s', substr(last_updated, 1, 19)) || '.' "
        "|| substr(last_updated, 21, 3) AS REAL)"
    ),
    "postgresql": "CAST(trunc(EXTRACT(EPOCH FROM last_updated), 3) AS DOUBLE PRECISION)",
}


def upgrade() -> None:
    op.execute("DELETE FROM search_index WHERE param = '_lastUpdated'")


def downgrade() -> None:
    epoch = _EPOCH[op.get_bind().dialect.name]
    op.execute(
        "INSERT INTO search_index (res_type, res_id, param, low, high) "
        f"SELECT res_type, res_id, '_lastUpdated', {epoch}, {epoch} "
        "FROM resources WHERE NOT deleted"
    )
