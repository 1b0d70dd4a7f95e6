"""The model registry: register candidates, and load only approved, checksum-verified models.

Producers (the retrain flow)::

    info = register_candidate(client, "churn", run_id, tags={
        "training_fingerprint": fp, "holdout_fingerprint": hfp, "feature_versions": fv,
        "validation_run_ids": ids, "code_version": sha, "flow_run_id": flow_run_id})

Consumers (anything that predicts)::

    from tasks.registry import load_approved
    approved = load_approved(uri, "churn", warehouse=engine)   # the warehouse's champion
    scores = approved.model.predict_proba(frame[columns])[:, 1]
    pinned = load_approved(uri, "churn", version=3, warehouse=engine)  # on the champion history
    pull(uri, "churn", Path("/srv/models/churn"))          # verified copy + metadata.json

Approval and the expected checksum come from the warehouse's champion ledger (``ledger``), never
from MLflow tags. Both refuse an unapproved version (``UnapprovedModel``), an artifact whose
SHA-256 differs from the one recorded at promotion (``TamperedModel``) and a version with no
record (``MissingRecord``), before any of it is unpickled. Registration refuses a logged model
whose artifacts are incomplete (``IncompleteModel``).
``list_models(uri)`` and ``show(uri, name)`` describe what the registry holds.
"""

from tasks.registry.consumer import (
    ApprovedModel,
    MissingRecord,
    TamperedModel,
    UnapprovedModel,
    approved_version,
    list_models,
    load_approved,
    pull,
    show,
)
from tasks.registry.hashing import artifact_sha256, content_sha256
from tasks.registry.ledger import IntegrityRecord, approved_record
from tasks.registry.register import (
    IncompleteModel,
    ModelVersionInfo,
    RegistryError,
    model_versions,
    register_candidate,
)
from tasks.registry.tags import CHALLENGER, CHAMPION

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "ApprovedModel",
    "IncompleteModel",
    "IntegrityRecord",
    "MissingRecord",
    "ModelVersionInfo",
    "RegistryError",
    "TamperedModel",
    "UnapprovedModel",
    "approved_record",
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
