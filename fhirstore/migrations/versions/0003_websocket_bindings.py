"""websocket binding tokens and bindings

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 05:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "websocket_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("subscription_ids", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("websocket_tokens", schema=None) as batch_op:
        batch_op.create_index("ix_websocket_tokens_expires", ["expires_at"], unique=False)

    op.create_table(
        "websocket_bindings",
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("connection_id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", "connection_id"),
    )
    with op.batch_alter_table("websocket_bindings", schema=None) as batch_op:
        batch_op.create_index("ix_websocket_bindings_expires", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("websocket_bindings", schema=None) as batch_op:
        batch_op.drop_index("ix_websocket_bindings_expires")
    op.drop_table("websocket_bindings")
    with op.batch_alter_table("websocket_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_websocket_tokens_expires")
    op.drop_table("websocket_tokens")
