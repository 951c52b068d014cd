"""subscription state: the kind of delivery failure of the last error (coded in $status)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 04:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Errors recorded before keep no kind: `$status` shows their text only, as it did.
    op.add_column(
        "subscription_state", sa.Column("last_failure", sa.String(length=16), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("subscription_state", "last_failure")  # SQLite 3.35 and later drop in place
