"""schedule sweep: what a sweep compares to leave a CarePlan alone

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing plans get NULLs: the first sweep after the upgrade reconciles every CarePlan,
    # which also sets `wanted` right on every row it judges.
    with op.batch_alter_table("schedule_plans", schema=None) as batch_op:
        batch_op.add_column(sa.Column("patient_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("policy", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("covered_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("schedule_tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("wanted", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("schedule_tasks", schema=None) as batch_op:
        batch_op.drop_column("wanted")
    with op.batch_alter_table("schedule_plans", schema=None) as batch_op:
        batch_op.drop_column("covered_until")
        batch_op.drop_column("policy")
        batch_op.drop_column("patient_version")
