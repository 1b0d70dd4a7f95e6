"""Which failures a person can act on, and the one line that tells them what happened and what to do."""

from __future__ import annotations

import errno
import os
import sys

from sqlalchemy.exc import OperationalError


def user_facing(exc: BaseException) -> str | None:
    """One readable line for a known failure; None for a bug (only `--debug` shows its traceback)."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, loaded_exceptions("tasks.models.training", "NoTrainingData")):
        return f"{first_line}; pick a later --as-of, or land data and run `liveyield validate` first"
    stale = (
        loaded_exceptions("tasks.models.scoring_frame", "StaleFeatures")
        + loaded_exceptions("tasks.featurestore.retrieval", "ViewNotMaterialized")
        + loaded_exceptions("tasks.featurestore.materialize", "PartitionNotReady")
    )
    if isinstance(exc, stale):
        return f"{first_line}; run `liveyield features build` (after `liveyield validate`)"
    if isinstance(exc, loaded_exceptions("tasks.gates.promotion", "NoChampion")):
        return f"{first_line}; train one first with `liveyield train MODEL`"
    if isinstance(
        exc,
        loaded_exceptions("tasks.quality.report", "DataQualityError")
        + loaded_exceptions("tasks.quality", "QualityError"),
    ):
        return str(exc)  # the gate's report: one line per rejected batch
    if isinstance(exc, loaded_exceptions("tasks.db", "DatabaseUnavailable")):
        return f"{first_line}; check LIVEYIELD_DB_URL (`liveyield doctor` shows what is used)"
    if isinstance(exc, OperationalError):
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else first_line
        return f"database error: {reason}; check LIVEYIELD_DB_URL (`liveyield doctor` shows what is used)"
    known = (
        loaded_exceptions("tasks.models.catalog", "UnknownModel")
        + loaded_exceptions(
            "tasks.featurestore.definitions", "UnknownView", "UnknownFeature", "InvalidDefinition"
        )
        + loaded_exceptions("tasks.warehouse", "UnknownTable")
        + loaded_exceptions("tasks.importer", "ImportError_")
        + loaded_exceptions("tasks.landing", "LandingWriteError")
        + loaded_exceptions("tasks.gates.promotion", "PromotionError")
        + loaded_exceptions("tasks.registry.register", "RegistryError")
        + loaded_exceptions("tasks.scoring.publish", "ScoreSetError")
        + loaded_exceptions("tasks.ops.servers", "StackError")
        + loaded_exceptions("tasks.ops.remote", "RemoteRunError")
    )
    if isinstance(exc, known):
        return first_line
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or os.strerror(exc.errno or 0)}{where}"
    return _mlflow(exc)


# A disk that cannot take a write: full, over quota, or read-only. The person can act on these.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def loaded_exceptions(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """The named exception classes of a module, if it was imported: one never imported raised nothing.

    Looking them up this way keeps a failing command from importing the whole platform to name it.
    """
    loaded = sys.modules.get(module)
    return tuple(getattr(loaded, name) for name in names) if loaded is not None else ()


def _mlflow(exc: BaseException) -> str | None:
    """A registry failure: a model or version MLflow does not know, or an unreachable tracking store."""
    (mlflow_exception,) = loaded_exceptions("mlflow.exceptions", "MlflowException") or (None,)
    if mlflow_exception is None or not isinstance(exc, mlflow_exception):
        return None
    text = str(getattr(exc, "message", exc)).strip()
    message = text.splitlines()[0] if text else type(exc).__name__
    if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
        return f"{message}; `liveyield models list` shows what is registered"
    return f"MLflow error: {message}; check MLFLOW_TRACKING_URI (`liveyield doctor` shows what is used)"
