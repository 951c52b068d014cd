"""audit trail: each REST request's id (X-Request-ID), searchable

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 23:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE on both databases: a rebuilt SQLite table would lose AUTOINCREMENT.
    op.add_column("audit_log", sa.Column("request_id", sa.String(length=64), nullable=True))
    op.create_index("ix_audit_log_request", "audit_log", ["request_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_log_request", table_name="audit_log")
    op.drop_column("audit_log", "request_id")  # SQLite 3.35 and later drop columns in place
