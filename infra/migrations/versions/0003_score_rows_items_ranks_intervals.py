"""score rows: item, rank and interval columns; one row per (entity, item)

Ranking, forecast, segment and plan models publish several rows per entity (one per recommended
item, forecast hour or plan hour), with a rank and an interval. The row key of a score set becomes
(entity_key, item), with item "" for one-score-per-entity models.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Frozen copy of the view (later schema edits must not change what this revision created).
CURRENT_SCORES_VIEW = """
CREATE VIEW current_scores AS
SELECT s.* FROM scores s
JOIN published_scores p ON p.score_set_id = s.score_set_id AND p.model_name = s.model_name
"""

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_NEW_COLUMNS = (
    ("rank", sa.Integer()),
    ("lower", sa.Float()),
    ("upper", sa.Float()),
)


def _create_scores(name: str, *, with_items: bool) -> None:
    """The scores table as of this revision (with_items) or the previous one."""
    key = ["score_set_id", "entity_key", "item"] if with_items else ["score_set_id", "entity_key"]
    columns = [
        sa.Column("score_set_id", sa.String(length=36), nullable=False),
        sa.Column("entity_key", sa.String(length=128), nullable=False),
        *(
            [sa.Column("item", sa.String(length=128), nullable=False, server_default="")]
            if with_items
            else []
        ),
        sa.Column("model_name", sa.String(length=64), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("as_of", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        *([sa.Column(n, t, nullable=True) for n, t in _NEW_COLUMNS] if with_items else []),
        sa.Column("label", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    ]
    op.create_table(
        name,
        *columns,
        sa.PrimaryKeyConstraint(*key),
        comment="Scored rows of every score set; consumers read current_scores.",
    )


def upgrade() -> None:
    """Apply this migration."""
    op.execute("DROP VIEW current_scores")  # the view pins the old table shape on SQLite
    item = sa.Column("item", sa.String(length=128), nullable=False, server_default="")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot alter a primary key in place: copy into the new shape, then swap.
        _create_scores("scores_new", with_items=True)
        shared = "score_set_id, entity_key, model_name, model_version, as_of, run_id, score, label, detail"
        op.execute(f"INSERT INTO scores_new ({shared}) SELECT {shared} FROM scores")
        op.drop_table("scores")
        op.rename_table("scores_new", "scores")
    else:
        op.add_column("scores", item)
        for name, type_ in _NEW_COLUMNS:
            op.add_column("scores", sa.Column(name, type_, nullable=True))
        op.drop_constraint("scores_pkey", "scores", type_="primary")
        op.create_primary_key("scores_pkey", "scores", ["score_set_id", "entity_key", "item"])
    op.execute(CURRENT_SCORES_VIEW)


def downgrade() -> None:
    """Revert this migration (rows that differ only by item cannot survive it)."""
    op.execute("DROP VIEW current_scores")
    if op.get_bind().dialect.name == "sqlite":
        _create_scores("scores_old", with_items=False)
        shared = "score_set_id, entity_key, model_name, model_version, as_of, run_id, score, label, detail"
        op.execute(f"INSERT OR IGNORE INTO scores_old ({shared}) SELECT {shared} FROM scores")
        op.drop_table("scores")
        op.rename_table("scores_old", "scores")
    else:
        op.drop_constraint("scores_pkey", "scores", type_="primary")
        for name, _ in reversed(_NEW_COLUMNS):
            op.drop_column("scores", name)
        op.drop_column("scores", "item")
        op.create_primary_key("scores_pkey", "scores", ["score_set_id", "entity_key"])
    op.execute(CURRENT_SCORES_VIEW)
