"""oracle shifts: the changes the simulator planted (kind, first day, parameters)

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "oracle_shifts",
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("from_date", sa.Date(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "from_date"),
        comment="Changes the simulator planted from a day on; params is a JSON object.",
    )


def downgrade() -> None:
    """Revert this migration."""
    op.drop_table("oracle_shifts")
