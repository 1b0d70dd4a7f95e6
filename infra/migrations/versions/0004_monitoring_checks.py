"""monitoring checks: one row per monitoring statistic (drift, freshness, realised performance)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "monitoring_checks",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("as_of", sa.BigInteger(), nullable=False),
        sa.Column("check", sa.String(length=32), nullable=False),
        sa.Column("feature", sa.String(length=128), nullable=True),
        sa.Column("statistic", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        comment="One row per monitoring statistic: model, version, as_of, check, value, threshold, status.",
    )
    op.create_index(
        "ix_monitoring_checks_model", "monitoring_checks", ["model", "check", "as_of"], unique=False
    )


def downgrade() -> None:
    """Revert this migration."""
    op.drop_index("ix_monitoring_checks_model", table_name="monitoring_checks")
    op.drop_table("monitoring_checks")
