"""The model registry: register candidates, and load only approved, checksum-verified models.

Producers (the retrain flow)::

    info = register_candidate(client, "churn", run_id, tags={
        "training_fingerprint": fp, "holdout_fingerprint": hfp, "feature_versions": fv,
        "validation_run_ids": ids, "code_version": sha, "flow_run_id": flow_run_id})

Consumers (anything that predicts)::

    from tasks.registry import load_approved
    approved = load_approved("sqlite:///.liveyield/mlflow.db", "churn")   # @champion
    scores = approved.model.predict_proba(frame[columns])[:, 1]
    pinned = load_approved(uri, "churn", version=3)       # must carry gate=passed
    pull(uri, "churn", Path("/srv/models/churn"))          # verified copy + metadata.json

Both refuse an unapproved version (``UnapprovedModel``) and an artifact whose SHA-256 differs from
the one recorded at registration (``TamperedModel``), before any of it is unpickled.
``list_models(uri)`` and ``show(uri, name)`` describe what the registry holds.
"""

from tasks.registry.consumer import (
    ApprovedModel,
    TamperedModel,
    UnapprovedModel,
    approved_version,
    list_models,
    load_approved,
    pull,
    show,
)
from tasks.registry.hashing import artifact_sha256, content_sha256
from tasks.registry.register import ModelVersionInfo, RegistryError, model_versions, register_candidate
from tasks.registry.tags import CHALLENGER, CHAMPION

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "ApprovedModel",
    "ModelVersionInfo",
    "RegistryError",
    "TamperedModel",
    "UnapprovedModel",
    "approved_version",
    "artifact_sha256",
    "content_sha256",
    "list_models",
    "load_approved",
    "model_versions",
    "pull",
    "register_candidate",
    "show",
]
