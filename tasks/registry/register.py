"""Register a trained candidate: one model version per distinct artifact, with lineage tags."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tasks.registry.hashing import artifact_sha256, content_sha256
from tasks.registry.tags import CHALLENGER, CONTENT_SHA_TAG, FINGERPRINT_TAG, SHA_TAG
from tasks.registry.writes import alias_version, idempotent_write

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

READY = "READY"  # the LoggedModel status once all its artifacts were uploaded

LOGGED_MODEL_TAG = "logged_model_id"
RESERVED_TAGS = frozenset(
    {SHA_TAG, CONTENT_SHA_TAG, LOGGED_MODEL_TAG, "gate", "gate_verdict", "gate_reason", "gate_report"}
)


class RegistryError(RuntimeError):
    """The registry cannot do what was asked (no logged model, bad name, bad tags…)."""


class IncompleteModel(RegistryError):
    """The logged model's upload did not finish, or files its MLmodel names are missing or empty."""


@dataclass(frozen=True)
class ModelVersionInfo:
    """A registered model version and how it was identified."""

    name: str
    version: int
    run_id: str | None
    model_id: str | None  # the MLflow 3 LoggedModel id (m-…), None for a runs:/ artifact
    source: str
    sha256: str
    content_sha256: str
    tags: dict[str, str] = field(default_factory=dict)
    created: bool = True  # False when an identical existing version was returned (R5)


def check_model_name(name: str) -> str:
    """A registered-model name safe to embed in an MLflow search filter."""
    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise RegistryError(f"invalid registered model name {name!r}: use letters, digits, _ - .")
    return name


def register_candidate(
    client: MlflowClient, model_name: str, run_id: str, *, tags: dict[str, str], artifact_name: str = "model"
) -> ModelVersionInfo:
    """Register the model logged by ``run_id`` (as ``artifact_name``) and point @challenger at it.

    Records ``model_sha256`` (every file of the artifact) and the caller's lineage tags on the
    version. If a version with the same ``training_fingerprint`` and the same artifact (exact or
    content checksum) exists, that version is returned (``created=False``) and no alias moves.
    """
    import mlflow

    check_model_name(model_name)
    bad = {k: v for k, v in tags.items() if not isinstance(v, str) or k in RESERVED_TAGS}
    if bad:
        raise RegistryError(f"{model_name}: tags must be strings and not reserved names: {sorted(bad)}")
    _ensure_registered_model(client, model_name)
    _source, model_id, location = _locate_model(client, run_id, artifact_name)
    with tempfile.TemporaryDirectory(prefix="liveyield-register-") as tmp:
        # Hash exactly what consumers will download: the version's storage location.
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=location, dst_path=tmp, tracking_uri=client.tracking_uri
            )
        )
        check_complete(local, f"{model_name}: run {run_id}'s model {artifact_name!r}")
        try:
            sha, content = artifact_sha256(local), content_sha256(local)
        except (OSError, ValueError) as exc:
            raise IncompleteModel(f"{model_name}: run {run_id}'s model cannot be checksummed: {exc}") from exc
    fingerprint = tags.get(FINGERPRINT_TAG)
    if fingerprint is not None:
        existing = _same_model(client, model_name, fingerprint, sha, content)
        if existing:
            found = min(existing, key=lambda mv: int(mv.version))
            log.info(
                "%s: v%s already holds this model (same fingerprint and artifact)", model_name, found.version
            )
            return _info(found, sha, content, created=False)
    all_tags = {**tags, SHA_TAG: sha, CONTENT_SHA_TAG: content}
    if model_id is not None:
        all_tags[LOGGED_MODEL_TAG] = model_id
    # The storage location, not models:/m-…: MLflow's SQL registry resolves a models:/ source
    # through the *global* tracking URI (its own TODO), which is not this client's store.
    created = client.create_model_version(
        model_name, source=location, run_id=run_id, tags=all_tags, model_id=model_id
    )
    if fingerprint is not None:
        # Two identical registrations racing both create a version; both then keep the lowest.
        twins = _same_model(client, model_name, fingerprint, sha, content)
        first = min(twins, key=lambda mv: int(mv.version)) if twins else created
        if int(first.version) < int(created.version):
            client.delete_model_version(model_name, created.version)
            return _info(first, sha, content, created=False)
    # @challenger names the newest candidate: a registration racing a newer one leaves it there.
    idempotent_write(
        lambda: client.set_registered_model_alias(model_name, CHALLENGER, created.version),
        lambda: (alias_version(client, model_name, CHALLENGER) or 0) >= int(created.version),
    )
    return _info(created, sha, content, created=True)


def _info(mv: ModelVersion, sha: str, content: str, *, created: bool) -> ModelVersionInfo:
    tags = dict(mv.tags or {})
    return ModelVersionInfo(
        name=mv.name,
        version=int(mv.version),
        run_id=mv.run_id,
        model_id=getattr(mv, "model_id", None) or tags.get(LOGGED_MODEL_TAG),
        source=str(mv.source),
        sha256=tags.get(SHA_TAG, sha),
        content_sha256=tags.get(CONTENT_SHA_TAG, content),
        tags=tags,
        created=created,
    )


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _locate_model(client: MlflowClient, run_id: str, artifact_name: str) -> tuple[str, str | None, str]:
    """(source, model_id, storage location) of the run's model: a LoggedModel, else runs:/<run>/<name>."""
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs is not None else []
    candidates: list[tuple[int, str, str, str]] = []
    for output in outputs:
        logged = client.get_logged_model(output.model_id)
        if logged.name == artifact_name:
            candidates.append((output.step, logged.model_id, logged.artifact_location, _status(logged)))
    if not candidates:  # older clients do not record outputs: search the run's experiment
        for logged in _search_logged(client, run.info.experiment_id, artifact_name):
            if logged.source_run_id == run_id:
                candidates.append((0, logged.model_id, logged.artifact_location, _status(logged)))
    if candidates:
        _, model_id, location, status = max(candidates)
        if status != READY:  # PENDING: the upload never finished; FAILED: log_model gave up
            raise IncompleteModel(
                f"run {run_id}: logged model {model_id} is {status}, not {READY}: its artifacts "
                "are incomplete; not registering it"
            )
        return f"models:/{model_id}", model_id, location
    names = {a.path for a in client.list_artifacts(run_id, artifact_name)}
    if f"{artifact_name}/MLmodel" in names:
        # Not RunsArtifactRepository.get_underlying_uri: it resolves runs:/ via the global URI.
        location = f"{run.info.artifact_uri.rstrip('/')}/{artifact_name}"
        return location, None, location
    raise RegistryError(f"run {run_id} has no logged model named {artifact_name!r}")


def check_complete(root: Path, what: str) -> None:
    """Refuse a model directory whose MLmodel is missing, unreadable, or names absent or empty files.

    Every relative path a flavor names (the pickled model, the environment files, the input
    example) must be a non-empty file under root: a partial upload is never registered.
    """
    mlmodel = root / "MLmodel"
    try:
        document = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise IncompleteModel(f"{what}: no readable MLmodel: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("flavors"), dict):
        raise IncompleteModel(f"{what}: MLmodel declares no flavors")
    named = set(_named_files(document.get("flavors")))
    example = document.get("saved_input_example_info")
    if isinstance(example, dict):
        named |= {str(v) for k, v in example.items() if k in ("artifact_path", "serving_input_path") and v}
    missing = sorted(n for n in named if not _nonempty_file(root / n))
    if missing:
        raise IncompleteModel(f"{what}: files named in MLmodel are missing or empty: {', '.join(missing)}")


_FILE_KEYS = frozenset({"pickled_model", "model_path", "data", "conda", "virtualenv", "model_data"})


def _named_files(node: object) -> list[str]:
    """Relative file paths a flavor section names under the keys that hold model files."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _FILE_KEYS and isinstance(value, str) and value:
                found.append(value)
            else:
                found.extend(_named_files(value))
    return found


def _nonempty_file(path: Path) -> bool:
    """A non-empty file, or a folder holding at least one non-empty file."""
    if path.is_dir():
        return any(p.is_file() and p.stat().st_size > 0 for p in path.rglob("*"))
    return path.is_file() and path.stat().st_size > 0


def _status(logged: Any) -> str:
    status = logged.status
    return str(getattr(status, "value", status))


def _search_logged(client: MlflowClient, experiment_id: str, name: str) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_logged_models(
            experiment_ids=[experiment_id],
            filter_string=f"name = '{check_model_name(name)}'",
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def model_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of a registered model (all pages), oldest first."""
    check_model_name(name)
    versions: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(f"name = '{name}'", max_results=1000, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            break
    return sorted(versions, key=lambda mv: int(mv.version))


def _same_model(
    client: MlflowClient, name: str, fingerprint: str, sha: str, content: str
) -> list[ModelVersion]:
    return [
        mv
        for mv in model_versions(client, name)
        if (mv.tags or {}).get(FINGERPRINT_TAG) == fingerprint
        and ((mv.tags or {}).get(SHA_TAG) == sha or (mv.tags or {}).get(CONTENT_SHA_TAG) == content)
    ]
