"""Load approved models from the registry, verified against the warehouse's integrity record.

Loading a model runs its registrant's code (pickle), so a model is loaded only when the warehouse
approves it (its champion, or a pinned version on the champion history: tasks/registry/ledger.py)
and only after its artifacts were downloaded to a private temporary directory and their SHA-256
matched the checksum the warehouse recorded when the version became champion. MLflow tags are
never trusted for either decision: anyone with MLflow access can set them. The model is then
loaded from that verified copy, so nothing can swap a file between check and load.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.registry.hashing import artifact_sha256
from tasks.registry.ledger import IntegrityRecord, UnapprovedModel, approved_record
from tasks.registry.register import RegistryError, check_model_name, model_versions
from tasks.registry.tags import GATE_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from sqlalchemy import Engine


class TamperedModel(RegistryError):
    """The downloaded artifact does not match the checksum the warehouse recorded."""


class MissingRecord(TamperedModel):
    """The warehouse holds no checksum for an approved version, so its artifact cannot be verified."""


@dataclass(frozen=True)
class ApprovedModel:
    """A verified, loaded model and where it came from."""

    model: Any
    name: str
    version: int
    sha256: str
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def _client(tracking_uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def approved_version(
    client: MlflowClient, warehouse: Engine | str | None, name: str, version: int | None = None
) -> tuple[ModelVersion, IntegrityRecord]:
    """The version the warehouse approves (its champion, or the pinned one) and its record."""
    from mlflow.exceptions import MlflowException

    check_model_name(name)
    record = _with_engine(warehouse, lambda engine: approved_record(engine, name, version))
    try:
        mv = client.get_model_version(name, str(record.version))
    except MlflowException as exc:
        raise UnapprovedModel(f"{name} v{record.version}: not found in the registry: {exc.message}") from exc
    return mv, record


def _with_engine(warehouse: Engine | str | None, use: Any) -> Any:
    """Call ``use(engine)`` on the given engine, a URL, or (None) the configured warehouse."""
    from sqlalchemy import Engine

    if isinstance(warehouse, Engine):
        return use(warehouse)
    from tasks.db import make_engine
    from tasks.settings import get_settings

    engine = make_engine(warehouse or get_settings().db_url)
    try:
        return use(engine)
    finally:
        engine.dispose()


def _verified_download(
    client: MlflowClient, mv: ModelVersion, record: IntegrityRecord, workdir: Path
) -> Path:
    """Download the version's artifacts under workdir and check them against the warehouse record."""
    import mlflow

    uri = client.get_model_version_download_uri(mv.name, mv.version)
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(workdir), tracking_uri=client.tracking_uri
        )
    )
    try:
        actual = artifact_sha256(local)
    except (OSError, ValueError) as exc:
        raise TamperedModel(f"{mv.name} v{mv.version}: artifact cannot be verified: {exc}") from exc
    if record.model_sha256 is None:
        raise MissingRecord(
            f"{mv.name} v{mv.version}: the warehouse holds no artifact checksum for this version "
            f"(it became champion before integrity records existed); downloaded sha256 {actual}, "
            "recorded sha256 none; refusing to load it (tasks.gates.promotion.record_integrity "
            "attests and records the champion history once after the upgrade)"
        )
    if actual != record.model_sha256:
        raise TamperedModel(
            f"{mv.name} v{mv.version}: downloaded artifact sha256 {actual} does not match the "
            f"sha256 {record.model_sha256} the warehouse recorded at promotion "
            f"(ledger entry {record.ledger_id}); refusing to load it"
        )
    return local


def _metadata(mv: ModelVersion, record: IntegrityRecord) -> dict[str, Any]:
    return {
        "name": mv.name,
        "version": int(mv.version),
        "run_id": mv.run_id,
        "model_id": getattr(mv, "model_id", None),
        "source": mv.source,
        "aliases": list(getattr(mv, "aliases", []) or []),
        "creation_timestamp": mv.creation_timestamp,
        "sha256": record.model_sha256,
        "ledger_id": record.ledger_id,
        "gate_verdict": record.gate_verdict,
        "gate_report_sha256": record.report_sha256,
    }


def load_approved(
    tracking_uri: str, name: str, version: int | None = None, *, warehouse: Engine | str | None = None
) -> ApprovedModel:
    """Load the warehouse's champion (or a pinned approved version) after verifying its checksum.

    ``warehouse`` is the warehouse engine or URL holding the champion ledger (default: the
    configured one). Raises UnapprovedModel for a version the warehouse does not approve,
    TamperedModel when the artifact's SHA-256 differs from the recorded one and MissingRecord
    when none was recorded; in every case nothing of the artifact is unpickled.
    """
    import mlflow.sklearn

    client = _client(tracking_uri)
    mv, record = approved_version(client, warehouse, name, version)
    with tempfile.TemporaryDirectory(prefix="liveyield-load-") as tmp:
        local = _verified_download(client, mv, record, Path(tmp))
        model = mlflow.sklearn.load_model(str(local))
    metadata = _metadata(mv, record)
    return ApprovedModel(
        model, mv.name, int(mv.version), str(record.model_sha256), dict(mv.tags or {}), metadata
    )


def pull(
    tracking_uri: str,
    name: str,
    dest: Path,
    version: int | None = None,
    *,
    warehouse: Engine | str | None = None,
) -> Path:
    """Copy a verified approved model to ``dest/model`` with ``dest/metadata.json``; returns dest."""
    client = _client(tracking_uri)
    mv, record = approved_version(client, warehouse, name, version)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".liveyield-pull-", dir=dest) as tmp:
        local = _verified_download(client, mv, record, Path(tmp))
        target = dest / "model"
        if target.exists():
            shutil.rmtree(target)
        local.rename(target)  # same filesystem: the verified files move, never re-download
    metadata = {**_metadata(mv, record), "tags": dict(mv.tags or {})}
    (dest / "metadata.json").write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
    return dest


def list_models(tracking_uri: str) -> list[dict[str, Any]]:
    """Every registered model: name, aliases, latest version, description."""
    client = _client(tracking_uri)
    out: list[dict[str, Any]] = []
    token = None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        for rm in page:
            versions = [int(v.version) for v in (rm.latest_versions or [])]
            out.append(
                {
                    "name": rm.name,
                    "aliases": {a: int(v) for a, v in (rm.aliases or {}).items()},
                    "latest_version": max(versions) if versions else None,
                    "description": rm.description or "",
                    "tags": dict(rm.tags or {}),
                }
            )
        token = page.token
        if not token:
            break
    return sorted(out, key=lambda m: m["name"])


def show(tracking_uri: str, name: str) -> dict[str, Any]:
    """One registered model: its versions (tags, aliases), aliases, and the latest gate verdict."""
    client = _client(tracking_uri)
    check_model_name(name)
    registered = client.get_registered_model(name)
    aliases = {a: int(v) for a, v in (registered.aliases or {}).items()}
    versions: list[dict[str, Any]] = []
    for mv in model_versions(client, name):
        tags = dict(mv.tags or {})
        versions.append(
            {
                "version": int(mv.version),
                "run_id": mv.run_id,
                "status": mv.status,
                "created": mv.creation_timestamp,
                "aliases": sorted(a for a, v in aliases.items() if v == int(mv.version)),
                "gate": tags.get(GATE_TAG),
                "gate_verdict": tags.get("gate_verdict"),
                "tags": {k: v for k, v in tags.items() if k != "gate_report"},
            }
        )
    judged = [v for v in versions if v["gate_verdict"] is not None]
    latest = None
    if judged:
        last = judged[-1]
        latest = {
            "version": last["version"],
            "verdict": last["gate_verdict"],
            "reason": last["tags"].get("gate_reason", ""),
        }
    return {
        "name": name,
        "description": registered.description or "",
        "aliases": aliases,
        "versions": versions,
        "latest_gate_verdict": latest,
    }
