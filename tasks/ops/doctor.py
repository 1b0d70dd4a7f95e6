"""Environment checks behind ``liveyield doctor``: which services are used and whether they answer."""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tasks.settings import Settings, get_settings, redact_url


@dataclass(frozen=True)
class Check:
    """The outcome of one check."""

    name: str
    target: str
    ok: bool
    detail: str


def check_database(settings: Settings) -> Check:
    """The warehouse database answers a query."""
    from tasks.db import DatabaseUnavailable, check_connection, make_engine

    engine = make_engine(settings.db_url)
    try:
        check_connection(engine)
        return Check("database", redact_url(settings.db_url), True, engine.dialect.name)
    except DatabaseUnavailable as exc:
        return Check("database", redact_url(settings.db_url), False, str(exc))
    finally:
        engine.dispose()


def _http_ok(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200, f"HTTP {response.status}"
    except OSError as exc:
        return False, str(exc)


def check_mlflow(settings: Settings) -> Check:
    """The MLflow tracking store is reachable (a server answers, its PostgreSQL database answers,
    or a local store is writable)."""
    uri = settings.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        ok, detail = _http_ok(uri.rstrip("/") + "/health")
        return Check("mlflow", redact_url(uri), ok, detail)
    if uri.startswith("postgresql"):  # the production store: MLflow's tables in a database of their own
        from tasks.db import DatabaseUnavailable, check_connection, make_engine

        engine = make_engine(uri)
        try:
            check_connection(engine)
            return Check("mlflow", redact_url(uri), True, "postgresql store")
        except DatabaseUnavailable as exc:
            return Check("mlflow", redact_url(uri), False, str(exc))
        finally:
            engine.dispose()
    path = Path(uri.split("///", 1)[-1]) if "///" in uri else Path(uri.removeprefix("file:"))
    folder = path.parent if uri.startswith("sqlite") else path
    probe = folder if folder.exists() else folder.parent
    ok = os.access(probe, os.W_OK)
    return Check("mlflow", redact_url(uri), ok, "local store, writable" if ok else f"{probe} is not writable")


def check_prefect(settings: Settings) -> Check:
    """The Prefect API answers (a server), or the ephemeral in-process API will be used."""
    if settings.prefect_api_url is None:
        return Check("prefect", "ephemeral API (in-process)", True, "no server needed")
    ok, detail = _http_ok(settings.prefect_api_url.rstrip("/") + "/health")
    return Check("prefect", settings.prefect_api_url, ok, detail)


def run_checks(settings: Settings | None = None) -> list[Check]:
    """All environment checks, in the order a person reads them."""
    settings = settings or get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    return [check_database(settings), check_mlflow(settings), check_prefect(settings)]
