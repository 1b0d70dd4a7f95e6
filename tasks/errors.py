"""Which failures a person can act on, and the one line that tells them what happened."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError


def user_facing(exc: BaseException) -> str | None:
    """One readable line for a known failure; None for a bug (let its traceback show)."""
    from tasks.db import DatabaseUnavailable
    from tasks.importer import ImportError_
    from tasks.quality import QualityError
    from tasks.quality.report import DataQualityError
    from tasks.warehouse import UnknownTable

    if isinstance(exc, (DatabaseUnavailable, UnknownTable, ImportError_, QualityError, DataQualityError)):
        return str(exc)
    if isinstance(exc, OperationalError):
        return f"database error: {str(exc.orig).splitlines()[0] if exc.orig else exc}"
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return f"{exc.strerror}: {exc.filename}"
    return None
