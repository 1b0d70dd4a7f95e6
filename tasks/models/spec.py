"""ModelSpec: everything model-specific, in one declarative object per model.

Adding a model means adding a spec (and perhaps a feature view), never a new flow. Every
threshold a model is judged by lives in its spec's PromotionPolicy and nowhere else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from sqlalchemy import Connection, Engine

from tasks.monitoring.drift import DriftPolicy

TaskKind = Literal["binary", "regression", "forecast", "ranking", "clustering", "plan"]


@dataclass(frozen=True)
class LabelWindow:
    """The event-time window labels are built for: [start_ts, end_ts) in epoch seconds.

    ``horizon_s`` is how far after an example's event_ts its label looks; examples whose
    horizon is not yet over at ``end_ts`` are left out (their label is not known yet).
    """

    start_ts: int
    end_ts: int
    horizon_s: int = 0


@dataclass(frozen=True)
class ValueThreshold:
    """An inclusive bound on a metric of the candidate (overall, or on one slice value)."""

    metric: str
    lower: float | None = None
    upper: float | None = None
    slice: str | None = None  # e.g. "region=eu"; None = overall


@dataclass(frozen=True)
class ChangeThreshold:
    """A bound on candidate − champion for a metric, with signed slack.

    For a higher-is-better metric the check is ``candidate - champion >= slack``: a
    negative slack allows that much regression, a positive one requires that much gain.
    For a lower-is-better metric the sign flips: ``champion - candidate >= slack``.
    ``slice`` None means overall; a slice column name (e.g. "region") means every value
    of that column, each checked on its own (a critical slice).
    """

    metric: str
    slack: float
    slice: str | None = None


@dataclass(frozen=True)
class SignificanceRule:
    """The candidate must beat ``against`` on ``metric`` with the lower end of the paired bootstrap
    confidence interval of the delta above ``min_delta`` (proof, not a tie within noise).

    ``against`` is "champion", "baseline" (the spec's primary baseline) or the name of one of the
    spec's extra baselines as the report shows it (``str(baseline)``, e.g. "column:rep_score"), so a
    policy can lean on the baseline that means something for its model.
    """

    metric: str
    against: str = "baseline"
    confidence: float = 0.95
    min_delta: float = 0.0
    n_boot: int = 200


@dataclass(frozen=True)
class RelativeThreshold:
    """The candidate's metric must reach ``ratio`` × a baseline's on the same holdout.

    1.2 on a higher-is-better metric asks for at least 1.2 × the baseline's value, 0.9 on a
    lower-is-better one for at most 0.9 × it. Judged like a beat-the-baseline check, on the paired
    bootstrap interval of candidate − ratio × baseline: wholly past the bar passes, wholly short of
    it fails, straddling it is undecided. A bar relative to a naive baseline keeps its meaning as
    the platform grows, where an absolute floor fits one catalogue size. ``against`` names the
    baseline as SignificanceRule does ("baseline" for the primary).
    """

    metric: str
    ratio: float
    against: str = "baseline"

    @property
    def other(self) -> str:
        """The bar as the report names it, e.g. "1.2 × column:rep_score"."""
        return f"{self.ratio:g} × {self.against}"


@dataclass(frozen=True)
class PromotionPolicy:
    """How a candidate earns @champion. No thresholds at all means no promotion, ever."""

    value_thresholds: tuple[ValueThreshold, ...] = ()
    change_thresholds: tuple[ChangeThreshold, ...] = ()
    significance: tuple[SignificanceRule, ...] = ()
    beat_baseline: tuple[str, ...] = ()  # metrics on which the candidate must beat the baseline
    relative_thresholds: tuple[RelativeThreshold, ...] = ()
    require_validated_data: bool = True
    requires_approval: bool = False

    @property
    def is_empty(self) -> bool:
        """True when nothing is configured (and so nothing may ever be promoted)."""
        return not (
            self.value_thresholds
            or self.change_thresholds
            or self.significance
            or self.beat_baseline
            or self.relative_thresholds
        )


@dataclass(frozen=True)
class ScoringTarget:
    """What batch scoring covers: which entities, and the context a score is given for."""

    entity: str  # feature-store entity name, e.g. "user"
    key: str  # its key column, e.g. "user_key"
    context: Mapping[str, Any] = field(default_factory=dict)  # fixed request context for scoring
    score_range: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class BaseRate:
    """The naive baseline that predicts the training label mean for every holdout row."""

    def __str__(self) -> str:
        """The name its metrics are logged and reported under."""
        return "base_rate"


@dataclass(frozen=True)
class ColumnBaseline:
    """The naive baseline that predicts a label-frame column the label builder computed from the past
    (seasonal naive, last 7 days, popularity…), with ``<column>_lower``/``<column>_upper`` as its
    interval when the frame has them."""

    column: str

    def __str__(self) -> str:
        """The name its metrics are logged and reported under, e.g. "column:snaive_7d"."""
        return f"column:{self.column}"


Baseline = BaseRate | ColumnBaseline


@dataclass(frozen=True)
class ModelSpec:
    """One monetization model, declared."""

    name: str  # the registered model name
    kind: TaskKind
    description: str
    build_labels: Callable[[Connection, LabelWindow], pd.DataFrame]
    # ^ returns one row per example: entity key columns, event_ts, "label", the context
    #   columns, the slice columns, and "example_id" (a stable id used for oracle joins).
    feature_refs: tuple[str, ...]  # "view:feature" references into the feature store
    context_features: tuple[str, ...]  # columns of the label frame used as model inputs
    categorical: tuple[str, ...]  # which inputs (features or context) are categorical
    make_estimator: Callable[[Mapping[str, Any]], Any]  # see tasks/models/estimator.py
    params: Mapping[str, Any]
    baseline: Baseline  # the naive predictor the candidate must beat, e.g. BaseRate()
    metrics: tuple[str, ...]
    primary_metric: str
    slices: tuple[str, ...]
    policy: PromotionPolicy
    scoring: ScoringTarget
    label_sources: tuple[str, ...]  # raw tables the labels read (must be validated)
    horizon_days: int = 0
    training_days: int = 21
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train / validation / holdout, by time
    retrain_cron: str = "0 3 * * 1"  # weekly by default
    score_cron: str = "30 4 * * *"
    seed: int = 7
    extra_baselines: tuple[Baseline, ...] = ()  # beat_baseline metrics must beat these too
    # Feature views read as whole event histories (tasks/models/families/event_logs.py) beyond
    # feature_refs: recorded with the refs' views in the training lineage.
    history_views: tuple[str, ...] = ()
    # (engine, holdout, prediction frame) -> the simulator-truth report; oracle tables are read only here.
    oracle: Callable[[Engine, pd.DataFrame, pd.DataFrame], dict[str, float]] | None = None
    # (engine, stored evaluation frame) -> that frame with evaluation-only columns added (e.g. a
    # reference plan sized on the simulator's truth that a metric compares with). Runs in training's
    # evaluation step only, before the frame is stored for the gate; may read oracle tables; never
    # adds a model input.
    evaluation_columns: Callable[[Engine, pd.DataFrame], pd.DataFrame] | None = None
    # The rows to score at as_of; default: every entity of the scoring target, features as of as_of.
    build_scoring_frame: Callable[[Engine, ModelSpec, dt.datetime], pd.DataFrame] | None = None
    # (spec, scoring frame, prediction frame) -> published rows; default: entity_key + score.
    format_scores: Callable[[ModelSpec, pd.DataFrame, pd.DataFrame], pd.DataFrame] | None = None
    # (stored evaluation frame, folder) -> image files logged under plots/; None: the kind's default.
    plots: Callable[[pd.DataFrame, Path], list[Path]] | None = None
    # Monitoring thresholds (tasks/monitoring/drift.py documents the defaults and their sources).
    drift: DriftPolicy = field(default_factory=DriftPolicy)
    # The column whose values are the independent units the gate's bootstrap resamples (an entity
    # with several snapshots in the holdout); None: rows, or whole queries of a ranking (query_id).
    resample_by: str | None = None
    # Forward cross-fitting for a time split (training.forward_fold): the validation period is also
    # judged, by the same recipe fitted one validation period earlier, which doubles the judged
    # examples where the holdout is too small for the gate's intervals (ad_cvr's clicks).
    forward_cross_fit: bool = False

    def __post_init__(self) -> None:
        """Refuse a policy rule that names a baseline the spec does not declare."""
        known = {"baseline", *(str(b) for b in (self.baseline, *self.extra_baselines))}
        named = [("significance rule", r.metric, r.against) for r in self.policy.significance]
        named += [("relative threshold", t.metric, t.against) for t in self.policy.relative_thresholds]
        for kind, metric, against in named:
            if against not in known and not (kind == "significance rule" and against == "champion"):
                raise ValueError(
                    f"{self.name}: the {kind} on {metric} names {against!r}; "
                    f"known baselines: {', '.join(sorted(known))}"
                )

    @property
    def input_columns(self) -> list[str]:
        """The model's input columns, in order: feature columns then context columns."""
        return [ref.replace(":", "__") for ref in self.feature_refs] + list(self.context_features)
