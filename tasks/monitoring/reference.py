"""A model's monitoring reference: profiles taken at training time, stored with the training run.

Two pairs of profiles (``tasks.monitoring.profile``), never rows:

* ``training``: the model's inputs on the training frame, and its predictions on the holdout;
* ``serving``: the inputs and the trained model's predictions on the frame a scoring run would
  have scored at the training ``as_of`` (the spec's scoring-frame builder). Monitoring compares
  like with like, so it uses this pair when present: a model whose examples differ from its
  scored rows (ad_ctr learns from impressions and scores users at a reference impression) would
  otherwise show drift on the day it was trained. The pair is left out, with the reason, when
  that frame cannot be built (stale features at the training as_of).

Entity inputs are profiled over distinct entities, not rows (``tasks.monitoring.profile``,
"Entities, not rows"): ``input_keys`` gives each input that describes one entity its key column,
from the feature view of a ``view:feature`` input and from the spec's ``input_entities`` for an
input its family computes. Each pair records the keys it applied (those whose column its frame
has), and monitoring reads the current frame by that pair's keys, so the two sides follow one rule.

Stored as one small JSON artifact, ``monitoring/reference.json``, of the training run. Format 2
added the pairs' ``keys``; a format-1 reference (every input profiled per row) still loads, with
no keys, and is compared per row as it was profiled, until the model is retrained.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.monitoring.profile import (
    ColumnProfile,
    FrameProfile,
    column_from_dict,
    profile_column,
    profile_frame,
)

if TYPE_CHECKING:
    from tasks.models.spec import ModelSpec

REFERENCE_ARTIFACT = "monitoring/reference.json"
FORMAT = 2  # 2: each pair's entity keys; 1 (still read): every input per row
READABLE = (1, FORMAT)
PREDICTION = "prediction"


@dataclass(frozen=True)
class ReferencePair:
    """The inputs' profile and the predictions' profile of one frame, and the entity key column each
    entity input was profiled over (inputs not named were profiled per row)."""

    inputs: FrameProfile
    predictions: ColumnProfile
    keys: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "inputs": self.inputs.to_dict(),
            "predictions": self.predictions.to_dict(),
            "keys": dict(self.keys),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferencePair:
        """Rebuild a pair written by ``to_dict`` (a format-1 pair has no keys: per row)."""
        return cls(
            FrameProfile.from_dict(data["inputs"]),
            column_from_dict(data["predictions"]),
            dict(data.get("keys", {})),
        )


@dataclass(frozen=True)
class Reference:
    """What monitoring compares a model's scoring runs with."""

    model: str
    as_of: str
    columns: tuple[str, ...]
    categorical: tuple[str, ...]
    training: ReferencePair
    serving: ReferencePair | None
    serving_note: str  # why there is no serving pair ("" when there is)

    @property
    def compared(self) -> tuple[str, ReferencePair]:
        """The pair monitoring compares with, and its name: serving when present, else training."""
        return ("serving", self.serving) if self.serving is not None else ("training", self.training)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (no NaN or infinity)."""
        return {
            "format": FORMAT,
            "model": self.model,
            "as_of": self.as_of,
            "columns": list(self.columns),
            "categorical": list(self.categorical),
            "training": self.training.to_dict(),
            "serving": self.serving.to_dict() if self.serving is not None else None,
            "serving_note": self.serving_note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        """Rebuild a reference written by ``to_dict``."""
        if data.get("format") not in READABLE:
            raise ValueError(f"unknown reference format {data.get('format')!r} (readable: {READABLE})")
        serving = data.get("serving")
        return cls(
            model=data["model"],
            as_of=data["as_of"],
            columns=tuple(data["columns"]),
            categorical=tuple(data["categorical"]),
            training=ReferencePair.from_dict(data["training"]),
            serving=ReferencePair.from_dict(serving) if serving is not None else None,
            serving_note=data.get("serving_note", ""),
        )


def input_keys(spec: ModelSpec) -> dict[str, str]:
    """The entity key column of each input that describes one entity: a ``view:feature`` input's
    view's entity key, a context input's ``spec.input_entities`` entity's key; others are absent."""
    from tasks.featurestore.definitions import ENTITIES, parse_ref
    from tasks.featurestore.views import FEATURE_VIEWS

    keys = {ref.replace(":", "__"): parse_ref(ref, FEATURE_VIEWS)[0].key for ref in spec.feature_refs}
    keys.update({column: ENTITIES[entity].key for column, entity in spec.input_entities.items()})
    return keys


def profile_pair(
    frame: pd.DataFrame,
    predictions: pd.Series,
    columns: list[str],
    categorical: tuple[str, ...],
    keys: Mapping[str, str] | None = None,
) -> ReferencePair:
    """The profiles of a frame's model inputs (entity inputs over distinct entities: ``keys``, those
    whose key column the frame has) and of the predictions made on it (per row)."""
    forced = [c for c in categorical if c in columns]
    applied = {c: k for c, k in (keys or {}).items() if c in columns and k in frame.columns}
    inputs = profile_frame(frame, columns, categorical=forced, keys=applied)
    predicted = profile_column(predictions.reset_index(drop=True), name=PREDICTION)
    return ReferencePair(inputs, predicted, applied)


def log_reference(client: MlflowClient, run_id: str, reference: Reference) -> None:
    """Store the reference as the run's ``monitoring/reference.json``."""
    client.log_text(run_id, json.dumps(reference.to_dict(), allow_nan=False), REFERENCE_ARTIFACT)


def load_reference(tracking_uri: str, run_id: str) -> Reference | None:
    """The reference a training run stored, or None when it stored none (trained before monitoring)."""
    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="ly-reference-") as tmp:
        try:
            path = client.download_artifacts(run_id, REFERENCE_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return None
        with open(path, encoding="utf-8") as handle:
            return Reference.from_dict(json.load(handle))
