"""champion integrity: the artifact checksum and gate verdict recorded with every champion move

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this migration (moves recorded before it keep NULLs: no integrity record)."""
    with op.batch_alter_table("alias_ledger") as batch:
        batch.add_column(sa.Column("model_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("gate_verdict", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("report_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Revert this migration."""
    with op.batch_alter_table("alias_ledger") as batch:
        batch.drop_column("report_sha256")
        batch.drop_column("gate_verdict")
        batch.drop_column("model_sha256")
