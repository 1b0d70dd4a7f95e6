"""Registry writes that concurrent writers may collide on, and the alias read they check against.

MLflow's SQL store sets a tag or an alias by select-then-insert, so two processes writing one
model's tag or alias at the same moment can both insert, and one fails on the unique key
(PostgreSQL: ``UniqueViolation``). A write here re-checks whether it is still needed and retries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient


def alias_version(client: MlflowClient, model: str, alias: str) -> int | None:
    """The version ``alias`` points at, or None (no such alias or no such model)."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(model)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = (registered.aliases or {}).get(alias)
    return None if version is None else int(version)


def idempotent_write(write: Callable[[], None], done: Callable[[], bool], attempts: int = 4) -> None:
    """Run ``write`` unless ``done()``; on an MLflow error re-check ``done()`` and retry."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        if done():
            return
        try:
            write()
            return
        except MlflowException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
