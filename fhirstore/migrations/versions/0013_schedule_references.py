"""schedule references: the requests each CarePlan was planned from; longer activity keys

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 07:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule_references",
        sa.Column("careplan_id", sa.String(length=64), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("careplan_id", "res_type", "res_id"),
    )
    with op.batch_alter_table("schedule_references", schema=None) as batch_op:
        batch_op.create_index(
            "ix_schedule_references_request", ["res_type", "res_id"], unique=False
        )
    # A request's second and later dosage instructions are keyed `{key}/{i}`.
    with op.batch_alter_table("schedule_tasks", schema=None) as batch_op:
        batch_op.alter_column(
            "activity",
            existing_type=sa.String(length=64),
            type_=sa.String(length=128),
            existing_nullable=False,
        )
    # Plans made before know nothing of their requests: the next sweep plans each CarePlan
    # again (scheduler/settled.py), which records them.
    op.execute(sa.text("UPDATE schedule_plans SET covered_until = NULL"))


def downgrade() -> None:
    # Keys longer than 64 characters no longer fit: their rows go (the Tasks stay), and the
    # next sweep makes rows again for what the schedule still wants.
    op.execute(sa.text("DELETE FROM schedule_tasks WHERE length(activity) > 64"))
    with op.batch_alter_table("schedule_tasks", schema=None) as batch_op:
        batch_op.alter_column(
            "activity",
            existing_type=sa.String(length=128),
            type_=sa.String(length=64),
            existing_nullable=False,
        )
    with op.batch_alter_table("schedule_references", schema=None) as batch_op:
        batch_op.drop_index("ix_schedule_references_request")
    op.drop_table("schedule_references")
