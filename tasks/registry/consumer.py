"""Load approved models from the registry, verified against the checksum recorded at registration.

Loading a model runs its registrant's code (pickle), so a model is loaded only by approved alias
(@champion) or by a pinned version that carries ``gate=passed``, and only after its artifacts
were downloaded to a private temporary directory and their SHA-256 matched ``model_sha256``. The
model is then loaded from that verified copy, so nothing can swap a file between check and load.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.registry.hashing import artifact_sha256
from tasks.registry.register import RegistryError, check_model_name, model_versions
from tasks.registry.tags import CHAMPION, GATE_PASSED, GATE_TAG, SHA_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


class UnapprovedModel(RegistryError):
    """The requested version is not approved (no @champion, or no gate=passed tag)."""


class TamperedModel(RegistryError):
    """The downloaded artifact does not match the checksum recorded at registration."""


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


def approved_version(client: MlflowClient, name: str, version: int | None = None) -> ModelVersion:
    """The @champion version, or the pinned one if it was approved; refuse anything else."""
    from mlflow.exceptions import MlflowException

    check_model_name(name)
    try:
        if version is None:
            mv = client.get_model_version_by_alias(name, CHAMPION)
        else:
            mv = client.get_model_version(name, str(int(version)))
    except MlflowException as exc:
        what = "@champion" if version is None else f"version {version}"
        raise UnapprovedModel(f"{name}: {what} not found in the registry: {exc.message}") from exc
    tags = dict(mv.tags or {})
    if tags.get(GATE_TAG) != GATE_PASSED:
        raise UnapprovedModel(
            f"{name} v{mv.version}: not approved "
            f"(tag {GATE_TAG}={tags.get(GATE_TAG)!r}, need {GATE_PASSED!r})"
        )
    if not tags.get(SHA_TAG):
        raise TamperedModel(f"{name} v{mv.version}: no {SHA_TAG} was recorded at registration; refusing")
    return mv


def _verified_download(client: MlflowClient, mv: ModelVersion, workdir: Path) -> Path:
    """Download the version's artifacts under workdir and check them before anyone loads them."""
    import mlflow

    uri = client.get_model_version_download_uri(mv.name, mv.version)
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(workdir), tracking_uri=client.tracking_uri
        )
    )
    expected = (mv.tags or {})[SHA_TAG]
    try:
        actual = artifact_sha256(local)
    except (OSError, ValueError) as exc:
        raise TamperedModel(f"{mv.name} v{mv.version}: artifact cannot be verified: {exc}") from exc
    if actual != expected:
        raise TamperedModel(
            f"{mv.name} v{mv.version}: artifact checksum {actual[:12]}… does not match the "
            f"{expected[:12]}… recorded at registration; refusing to load it"
        )
    return local


def _metadata(mv: ModelVersion) -> dict[str, Any]:
    return {
        "name": mv.name,
        "version": int(mv.version),
        "run_id": mv.run_id,
        "model_id": getattr(mv, "model_id", None),
        "source": mv.source,
        "aliases": list(getattr(mv, "aliases", []) or []),
        "creation_timestamp": mv.creation_timestamp,
        "sha256": (mv.tags or {}).get(SHA_TAG),
    }


def load_approved(tracking_uri: str, name: str, version: int | None = None) -> ApprovedModel:
    """Load @champion (or a pinned approved version) after verifying its checksum.

    Raises UnapprovedModel for an unapproved version and TamperedModel for a checksum mismatch;
    in both cases nothing of the artifact is unpickled.
    """
    import mlflow.sklearn

    client = _client(tracking_uri)
    mv = approved_version(client, name, version)
    with tempfile.TemporaryDirectory(prefix="liveyield-load-") as tmp:
        local = _verified_download(client, mv, Path(tmp))
        model = mlflow.sklearn.load_model(str(local))
    tags = dict(mv.tags or {})
    return ApprovedModel(model, mv.name, int(mv.version), tags[SHA_TAG], tags, _metadata(mv))


def pull(tracking_uri: str, name: str, dest: Path, version: int | None = None) -> Path:
    """Copy a verified approved model to ``dest/model`` with ``dest/metadata.json``; returns dest."""
    client = _client(tracking_uri)
    mv = approved_version(client, name, version)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".liveyield-pull-", dir=dest) as tmp:
        local = _verified_download(client, mv, Path(tmp))
        target = dest / "model"
        if target.exists():
            shutil.rmtree(target)
        local.rename(target)  # same filesystem: the verified files move, never re-download
    metadata = {**_metadata(mv), "tags": dict(mv.tags or {})}
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
