"""Training-set sampling: a spec's declared rule, applied to a training split beyond the row cap.

A training split longer than the cap (``LIVEYIELD_MAX_TRAIN_ROWS``, tasks/settings.py, or a lower
``Sampling.max_rows`` of the spec) is cut to fit it by the spec's ``Sampling`` rule
(tasks/models/spec.py) before the model is fitted; a split within the cap, or a spec that declares
no rule, is fitted whole. Only the rows a model is *fitted* on are sampled: the validation split
(early stopping) and the holdout (metrics, the gate's champion comparison and its bootstrap by
entity) keep every row, so a sampled candidate and an unsampled champion are judged on the same
holdout, and the base-rate baseline still reads the whole training split.

The cut is deterministic: a generator seeded from the spec's seed and the training's as_of picks
the rows, so the same data, spec and as_of give the same sample and the same model.

Negative down-sampling changes the label mix the model learns: with a share w of the negatives
kept, the odds it learns are the population's odds divided by w. ``NegativeRateCorrected`` wraps
the fitted model and multiplies them back, p = p_s / (p_s + (1 − p_s) / w); it is what training
evaluates, MLflow logs and scoring and the gate load, so every consumer sees probabilities of the
population, and its calibration (ECE, predicted/observed ratio) is judged on them. The model is
early-stopped on the unsampled validation split, where a constant shift of the log-odds changes
the loss but hardly the iteration it is lowest at. What was done is recorded with the run
(``SampleRecord.params`` as run parameters, ``SampleRecord.summary`` as the ``sampling`` tag and
in the training result), also when nothing was cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from tasks.models.estimator import EvalSet, as_estimator, fit_summary
from tasks.models.spec import ModelSpec

NO_RULE = "none"


class SamplingError(ValueError):
    """The declared rule cannot bring the training split within the cap (e.g. more positives than the cap)."""


@dataclass(frozen=True)
class SampleRecord:
    """What sampling did to one training split (recorded with the run, also when it cut nothing).

    ``cap`` is None for a spec without a rule (the cap does not apply to it); ``negative_rate`` is
    the share w of negatives kept (1.0 when none were dropped), for the negatives rule only.
    """

    rule: str
    cap: int | None
    rows_before: int
    rows_after: int
    negative_rate: float | None = None

    @property
    def applied(self) -> bool:
        """Whether rows were left out of the fit."""
        return self.rows_after < self.rows_before

    @property
    def corrects(self) -> bool:
        """Whether the model's probabilities need the down-sampling correction."""
        return self.negative_rate is not None and self.negative_rate < 1.0

    def params(self, prefix: str = "sampling") -> dict[str, Any]:
        """The run parameters: rule, cap, rows before and after, and w for the negatives rule."""
        out: dict[str, Any] = {
            f"{prefix}_rule": self.rule,
            f"{prefix}_cap": self.cap,
            f"{prefix}_rows_before": self.rows_before,
            f"{prefix}_rows_after": self.rows_after,
        }
        if self.negative_rate is not None:
            out[f"{prefix}_negative_rate"] = self.negative_rate
        return out

    @property
    def summary(self) -> str:
        """One line for the run's tag, the training result and the log."""
        if self.cap is None:
            return f"not sampled: no rule declared; {self.rows_before:,} training rows fitted whole"
        rows, cap = f"{self.rows_before:,}", f"{self.cap:,}"
        if not self.applied:
            return f"not sampled: {rows} training rows within the cap of {cap} ({self.rule})"
        line = f"sampled by {self.rule}: {rows} → {self.rows_after:,} training rows (cap {cap})"
        if self.corrects:
            line += f"; negatives kept at w = {self.negative_rate:.6g}, probabilities corrected by it"
        return line


def effective_cap(spec: ModelSpec, cap: int) -> int | None:
    """The cap that applies to a spec: the platform's, or the spec's own when lower; None without a rule."""
    if spec.sampling is None:
        return None
    own = spec.sampling.max_rows
    return cap if own is None else min(cap, own)


def sampling_seed(seed: int, as_of_ts: int, stream: int = 0) -> np.random.Generator:
    """The generator a sample is drawn with: the spec's seed, the training's as_of and a stream
    number (0 the model, 1 its cross-fitted mirror), so each fit's sample is reproducible."""
    return np.random.default_rng([seed, as_of_ts, stream])


def sample_training(
    spec: ModelSpec, train: pd.DataFrame, cap: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, SampleRecord]:
    """The rows to fit on (in their original order) and what was done (see the module notes)."""
    limit = effective_cap(spec, cap)
    n = len(train)
    rule = str(spec.sampling) if spec.sampling is not None else NO_RULE
    negatives = spec.sampling is not None and spec.sampling.kind == "negatives"
    if limit is None or n <= limit:
        record = SampleRecord(rule, limit, n, n, 1.0 if negatives else None)
        return train, record
    assert spec.sampling is not None
    w: float | None = None
    if spec.sampling.kind == "negatives":
        keep, w = _negatives(spec, train, limit, rng)
    elif spec.sampling.kind == "uniform":
        keep = np.sort(rng.choice(n, size=limit, replace=False))
    else:
        keep = _entities(spec, train, spec.sampling.column or "", limit, rng)
    sampled = train.iloc[keep].reset_index(drop=True)
    return sampled, SampleRecord(rule, limit, n, len(sampled), w)


def _negatives(
    spec: ModelSpec, train: pd.DataFrame, limit: int, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Every positive and ``limit − positives`` negatives drawn without replacement; and w."""
    positive = train["label"].to_numpy("float64") > 0
    n_pos, negatives = int(positive.sum()), np.flatnonzero(~positive)
    kept = limit - n_pos
    if kept < 1:
        raise SamplingError(
            f"{spec.name}: {n_pos:,} positives alone reach the training-row cap of {limit:,}; "
            "negative down-sampling cannot fit it (raise the cap)"
        )
    chosen = rng.choice(negatives, size=kept, replace=False)
    keep = np.sort(np.concatenate([np.flatnonzero(positive), chosen]))
    return keep, kept / len(negatives)


def _entities(
    spec: ModelSpec, train: pd.DataFrame, column: str, limit: int, rng: np.random.Generator
) -> np.ndarray:
    """Rows of whole entities, taken in a seeded order while their total stays within the cap."""
    if column not in train.columns:
        raise SamplingError(f"{spec.name}: the sampling column {column!r} is not in the training frame")
    codes, keys = pd.factorize(
        train[column].astype(str), sort=True
    )  # text order: frame order does not matter
    sizes = np.bincount(codes, minlength=len(keys))
    order = rng.permutation(len(keys))
    taken = order[np.cumsum(sizes[order]) <= limit]
    if len(taken) == 0:
        raise SamplingError(
            f"{spec.name}: the first {column} drawn has {sizes[order[0]]:,} rows, more than the "
            f"training-row cap of {limit:,}"
        )
    chosen = np.zeros(len(keys), dtype=bool)
    chosen[taken] = True
    return np.flatnonzero(chosen[codes])


def corrected_probability(p_sampled: Any, negative_rate: float) -> np.ndarray:
    """The population probability of a model fitted with a share w of its negatives kept:
    p = p_s / (p_s + (1 − p_s) / w), i.e. the log-odds lowered by log(1 / w)."""
    if not 0.0 < negative_rate <= 1.0:
        raise ValueError(f"the negative rate must lie in (0, 1], got {negative_rate}")
    p = np.asarray(p_sampled, dtype="float64")
    return p / (p + (1.0 - p) / negative_rate)


class NegativeRateCorrected(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A binary model fitted on down-sampled negatives, answering with population probabilities.

    ``model`` is the fitted model (a scikit-learn pipeline or an estimator of the contract,
    tasks/models/estimator.py) and ``negative_rate`` the share w of negatives it was fitted with.
    ``predict_frame`` (the contract) and ``predict_proba`` (what a consumer of the registry calls)
    give the corrected probability; ``fit`` fits the wrapped model in place. ``best_iteration`` and
    ``fitted_params()`` are the wrapped model's.
    """

    def __init__(self, model: Any = None, negative_rate: float = 1.0) -> None:
        self.model = model
        self.negative_rate = negative_rate

    def fit(self, X: pd.DataFrame, y: Any, eval_set: EvalSet | None = None) -> NegativeRateCorrected:
        """Fit the wrapped model (on rows already sampled at ``negative_rate``)."""
        as_estimator(self.model, "binary").fit(X, y, eval_set=eval_set)
        return self

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """The wrapped model's prediction frame with ``prediction`` corrected."""
        out = as_estimator(self.model, "binary").predict_frame(X).reset_index(drop=True)
        out["prediction"] = corrected_probability(out["prediction"], self.negative_rate)
        return out

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Corrected class probabilities, negative class first (scikit-learn's layout)."""
        p = self.predict_frame(X)["prediction"].to_numpy("float64")
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The class of the higher corrected probability."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype("int64")

    @property
    def classes_(self) -> np.ndarray:
        """The wrapped model's classes (0 and 1)."""
        return np.asarray(getattr(self.model, "classes_", np.array([0, 1])))

    @property
    def best_iteration(self) -> int | None:
        """The wrapped model's early-stopped iteration, when it reports one."""
        best = fit_summary(as_estimator(self.model, "binary"))["best_iteration"]
        return None if best is None else int(best)

    def fitted_params(self) -> dict[str, Any]:
        """What the wrapped model's fit chose (its own fitted_params, when it reports them)."""
        return {
            k: v for k, v in fit_summary(as_estimator(self.model, "binary")).items() if k != "best_iteration"
        }


def corrected(model: Any, record: SampleRecord) -> Any:
    """The fitted model as training hands it on: wrapped in the correction where negatives were cut."""
    if record.corrects:
        assert record.negative_rate is not None
        return NegativeRateCorrected(model, record.negative_rate)
    return model


def fitted_model(model: Any) -> Any:
    """The model inside a correction wrapper (what its plots inspect), else the model itself."""
    return model.model if isinstance(model, NegativeRateCorrected) else model
