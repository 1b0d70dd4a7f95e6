"""Alembic environment: migrates the warehouse that LIVEYIELD_DB_URL (or the caller) names."""

from __future__ import annotations

from alembic import context

from tasks.db import make_engine
from tasks.schema import metadata
from tasks.settings import get_settings

config = context.config
target_metadata = metadata


def run_migrations_online() -> None:
    """Run migrations on the connection the caller passed, or on the configured database."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or get_settings().db_url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
