"""ModelSpec: everything model-specific, in one declarative object per model.

Adding a model means adding a spec (and perhaps a feature view), never a new flow. Every
threshold a model is judged by lives in its spec's PromotionPolicy and nowhere else.

Training-set size is declared here too: a training split longer than the row cap
(``LIVEYIELD_MAX_TRAIN_ROWS``, tasks/settings.py, default 5,000,000; a spec's ``Sampling.max_rows``
may lower it) is cut by the spec's ``Sampling`` rule before fitting, and never otherwise. The rule
runs on the training split only (validation and holdout, and so the gate, see every row),
deterministically for the spec's seed and the training's as_of, and what it did is recorded with
the run (tasks/models/sampling.py). A spec without a rule (``sampling=None``) is never sampled:
its training split is fitted whole, whatever its size.
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
SamplingKind = Literal["negatives", "uniform", "entity"]


@dataclass(frozen=True)
class Sampling:
    """How a training split beyond the row cap is cut to fit it (tasks/models/sampling.py does it).

    ``negatives`` (binary models with rare positives: clicks, conversions): every positive is kept
    and a seeded share w of the negatives, w chosen so positives + kept negatives = the cap. The
    model then over-predicts by the odds factor 1/w, so its probabilities are corrected back,
    p = p_s / (p_s + (1 − p_s) / w) (the prior correction of down-sampled negatives), inside the
    model that is logged, scored and gated.
    ``uniform``: a seeded share of rows (no correction: the label mix is kept in expectation).
    ``entity``: whole entities of ``column`` (a user's snapshots, a ranking query's candidates),
    in a seeded order until the next would pass the cap, for models whose examples are grouped:
    an entity is fitted on all its rows or none of them.
    ``max_rows``: a cap for this model below the platform's (None: the platform's alone).
    """

    kind: SamplingKind
    column: str | None = None
    max_rows: int | None = None

    def __post_init__(self) -> None:
        """Refuse an entity rule without its column, a column on another rule, and a cap below 1."""
        if self.kind not in ("negatives", "uniform", "entity"):
            raise ValueError(f"unknown sampling kind {self.kind!r}: negatives, uniform or entity")
        if (self.kind == "entity") != (self.column is not None):
            raise ValueError(f"sampling {self.kind!r}: a column is named by (and only by) the entity rule")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"sampling max_rows must be 1 or more, got {self.max_rows}")

    def __str__(self) -> str:
        """The rule as runs record it, e.g. "negatives" or "entity:user_key"."""
        return f"entity:{self.column}" if self.kind == "entity" else self.kind


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
    # How a training split beyond the row cap is sampled (see Sampling and the module notes); None:
    # never sampled, the cap does not apply (say why beside the spec).
    sampling: Sampling | None = None
    # Context inputs that describe one entity (column -> entity name of the feature store, e.g.
    # "streamer_sessions_7d" -> "streamer"): monitoring profiles them over distinct entities, as it
    # does a "view:feature" input by its view's entity (tasks/monitoring/profile.py, "Entities, not
    # rows"). Inputs of a pair (user × candidate) or of the request are left out: per row.
    input_entities: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse a policy rule that names a baseline the spec does not declare, a negatives rule
        on a model that is not binary (there are no negatives to down-sample), and an entity input
        that is not a context input or names an unknown entity."""
        from tasks.featurestore.definitions import ENTITIES

        for column, entity in self.input_entities.items():
            if column not in self.context_features or entity not in ENTITIES:
                raise ValueError(
                    f"{self.name}: input_entities maps {column!r} to {entity!r}; it takes context inputs "
                    f"to entities ({', '.join(sorted(ENTITIES))})"
                )
        if self.sampling is not None and self.sampling.kind == "negatives" and self.kind != "binary":
            raise ValueError(f"{self.name}: negative down-sampling needs a binary model, not {self.kind}")
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
