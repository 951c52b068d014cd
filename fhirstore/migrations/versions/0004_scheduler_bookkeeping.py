"""scheduler bookkeeping

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule_plans",
        sa.Column("careplan_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.Column("patient", sa.String(length=128), nullable=True),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("scheduled", sa.Boolean(), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("careplan_id"),
    )
    with op.batch_alter_table("schedule_plans", schema=None) as batch_op:
        batch_op.create_index("ix_schedule_plans_patient", ["patient"], unique=False)

    op.create_table(
        "schedule_tasks",
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("careplan_id", sa.String(length=64), nullable=False),
        sa.Column("activity", sa.String(length=64), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("task_version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("task_id"),
    )
    with op.batch_alter_table("schedule_tasks", schema=None) as batch_op:
        batch_op.create_index("ix_schedule_tasks_plan", ["careplan_id", "start"], unique=False)
        batch_op.create_index("ix_schedule_tasks_due", ["due_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("schedule_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_schedule_tasks_due")
        batch_op.drop_index("ix_schedule_tasks_plan")
    op.drop_table("schedule_tasks")
    with op.batch_alter_table("schedule_plans", schema=None) as batch_op:
        batch_op.drop_index("ix_schedule_plans_patient")
    op.drop_table("schedule_plans")
