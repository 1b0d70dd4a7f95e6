"""Training sets (labels joined point-in-time to features), time splits and deterministic training."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, and_, select

from tasks.dates import partition_day, utc
from tasks.featurestore import get_historical_features
from tasks.featurestore.definitions import DAY_S, parse_ref
from tasks.featurestore.views import FEATURE_VIEWS as VIEWS
from tasks.models.estimator import as_estimator, fit_summary
from tasks.models.sampling import SampleRecord, corrected, sample_training, sampling_seed
from tasks.models.spec import LabelWindow, ModelSpec
from tasks.schema import partition_status
from tasks.settings import max_train_rows

SPLIT_COLUMN = "split"  # a label builder's own split of its rows: train, valid, holdout or cross
SPLIT_ROLES = ("train", "valid", "holdout")
CROSS_ROLE = "cross"  # rows judged by the mirror model of a cross-fitted split (see fit_candidate)
CROSS_FITTED = "cross_fitted"  # holdout column: True where the mirror model predicts the row
log = logging.getLogger(__name__)


class NoTrainingData(ValueError):
    """The label window holds no labelled examples (or too few to split by time)."""


@dataclass(frozen=True)
class TrainingSet:
    """Labels with their point-in-time features, and the lineage needed to trust them."""

    spec_name: str
    as_of: dt.datetime
    window: LabelWindow
    frame: pd.DataFrame  # labels + `<view>__<feature>` columns + context, in event-time order
    fingerprint: str  # sha256 over the frame in example_id order
    feature_versions: dict[str, str]  # view -> version hash
    validation_run_ids: dict[str, str]  # "<table>/<partition>" -> partition_status.last_run_id
    data_validated: bool


@dataclass
class TrainedModel:
    """A fitted pipeline, the frames it was fitted, early-stopped and held out on, and its lineage."""

    spec_name: str
    pipeline: Any  # what spec.make_estimator made, fitted (wrapped in the correction of sampled negatives)
    train: pd.DataFrame  # the whole training split (the rows fitted on may be a sample of it)
    valid: pd.DataFrame
    holdout: pd.DataFrame
    params: dict[str, Any]  # spec params + seed, then best_iteration, split sizes and sampling_* (the record)
    training_fingerprint: str
    data_fingerprint: str
    fit_seconds: float
    lineage: dict[str, Any] = field(default_factory=dict)
    # Cross-fitting: the model fitted apart (the other way round, or one validation period earlier;
    # see _mirror_parts) that predicts the holdout rows marked CROSS_FITTED; None without it.
    mirror: Any = None
    # What the spec's sampling rule did to the training split (tasks/models/sampling.py).
    sampling: SampleRecord | None = None


def epoch_seconds(moment: dt.datetime) -> int:
    """Epoch seconds of a timezone-aware datetime (a naive one is refused, never guessed)."""
    if moment.tzinfo is None:
        raise ValueError(f"as_of must be timezone-aware, got {moment.isoformat()}")
    return int(moment.timestamp())


def frame_fingerprint(frame: pd.DataFrame, key: str = "example_id") -> str:
    """sha256 over column names, dtypes and row hashes, rows in key order."""
    ordered = frame.sort_values(key, kind="stable").reset_index(drop=True) if key in frame else frame
    digest = hashlib.sha256()
    digest.update(json.dumps([[c, str(t)] for c, t in ordered.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(ordered, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _lineage(engine: Engine, spec: ModelSpec, window: LabelWindow) -> tuple[dict[str, str], bool]:
    """last_run_id of the label-source partitions in the window, and whether all were validated."""
    first, last = partition_day(window.start_ts), partition_day(window.end_ts - 1)
    ps = partition_status
    query = select(ps.c.table_name, ps.c.partition_date, ps.c.status, ps.c.last_run_id).where(
        and_(ps.c.table_name.in_(spec.label_sources), ps.c.partition_date.between(first, last))
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    used = {f"{r.table_name}/{r.partition_date}": r.last_run_id for r in rows if r.status == "validated"}
    primary = spec.label_sources[0]
    validated = all(r.status == "validated" for r in rows) and any(r.table_name == primary for r in rows)
    return dict(sorted(used.items())), validated


def build_training_set(engine: Engine, spec: ModelSpec, as_of: dt.datetime) -> TrainingSet:
    """Labels for [as_of − training_days, as_of) with features as known at each event (no leakage)."""
    end = epoch_seconds(as_of)
    window = LabelWindow(end - spec.training_days * DAY_S, end, spec.horizon_days * DAY_S)
    with engine.connect() as conn:
        labels = spec.build_labels(conn, window)
    if labels.empty:
        raise NoTrainingData(
            f"{spec.name}: no labelled examples in [{utc(window.start_ts)}, "
            f"{as_of}) from validated partitions of {', '.join(spec.label_sources)}"
        )
    # The same retrieval scoring uses, so training and scoring vectors agree: each label row
    # reads only feature rows known at its event_ts (created_ts <= event_ts). A backfill is
    # known at each row's feature_ts (a row's window ends there), so a backfilled history
    # trains; late rows are known only from the rebuild that read them, so they never reach a
    # label that precedes their arrival (tasks/featurestore/materialize.py).
    frame = get_historical_features(engine, labels, spec.feature_refs) if spec.feature_refs else labels
    frame = frame.sort_values(["event_ts", "example_id"], kind="stable").reset_index(drop=True)
    views = {parse_ref(ref, VIEWS)[0] for ref in spec.feature_refs} | {VIEWS[n] for n in spec.history_views}
    run_ids, validated = _lineage(engine, spec, window)
    return TrainingSet(
        spec_name=spec.name,
        as_of=as_of,
        window=window,
        frame=frame,
        fingerprint=frame_fingerprint(frame),
        feature_versions={v.name: v.version for v in sorted(views, key=lambda v: v.name)},
        validation_run_ids=run_ids,
        data_validated=validated,
    )


def time_split(
    frame: pd.DataFrame, split: tuple[float, float, float]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train < validation < holdout in event time, cut at event_ts quantiles (ties stay together).

    With a ``target_ts`` column (when an example's outcome is complete, e.g. a forecast's target
    time) rows whose outcome reaches past the next split's first event are purged, so a training
    label never overlaps the period a later split is judged on.
    """
    if len(split) != 3 or min(split) <= 0 or not np.isclose(sum(split), 1.0):
        raise ValueError(f"split must be three positive fractions summing to 1, got {split}")
    ts = frame["event_ts"].to_numpy("int64")
    first_cut, second_cut = np.quantile(ts, [split[0], split[0] + split[1]], method="lower")
    train_mask, valid_mask = ts < first_cut, (ts >= first_cut) & (ts < second_cut)
    if "target_ts" in frame.columns:
        target = frame["target_ts"].to_numpy("int64")
        train_mask &= target < first_cut
        valid_mask &= target < second_cut
    parts = (frame[train_mask], frame[valid_mask], frame[ts >= second_cut])
    if any(p.empty for p in parts):
        raise NoTrainingData(
            f"cannot split {len(frame)} examples by time into {split}: "
            f"sizes {[len(p) for p in parts]} (too few distinct event times)"
        )
    return tuple(p.reset_index(drop=True) for p in parts)  # type: ignore[return-value]


def split_examples(
    frame: pd.DataFrame, split: tuple[float, float, float]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train, validation and holdout: the label builder's own split where it made one, else time_split.

    A builder that knows more than event time (e.g. that snapshots of one user must not be both
    fitted and judged, tasks/models/families/snapshots.entity_split) marks each row in a
    ``split`` column; the column is dropped from the parts, and rows marked ``cross`` are left
    to cross_rows.
    """
    if SPLIT_COLUMN not in frame.columns:
        return time_split(frame, split)
    role = frame[SPLIT_COLUMN].to_numpy()
    parts = tuple(frame[role == r].drop(columns=SPLIT_COLUMN).reset_index(drop=True) for r in SPLIT_ROLES)
    if any(p.empty for p in parts):
        raise NoTrainingData(
            f"cannot split {len(frame)} examples by their {SPLIT_COLUMN} column: "
            f"sizes {[len(p) for p in parts]} for {list(SPLIT_ROLES)}"
        )
    return parts  # type: ignore[return-value]


def cross_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows a cross-fitted split leaves to the mirror model (empty without cross-fitting)."""
    if SPLIT_COLUMN not in frame.columns:
        return frame.iloc[:0]
    cross = frame[frame[SPLIT_COLUMN].to_numpy() == CROSS_ROLE]
    return cross.drop(columns=SPLIT_COLUMN).reset_index(drop=True)


def forward_fold(train: pd.DataFrame, split: tuple[float, float, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The earlier origin of a forward cross-fit: the training split cut as the split cuts the frame.

    The cut lies at the ``split[0] / (split[0] + split[1])`` quantile of the training rows' event
    time, so the earlier model's training and validation periods keep the spec's proportions and
    its validation period is as long as the spec's. Rows whose ``target_ts`` reaches past the cut
    are purged from its training part, as in time_split. Either part may come back empty.
    """
    ts = train["event_ts"].to_numpy("int64")
    if len(ts) == 0:
        return train, train
    cut = np.quantile(ts, split[0] / (split[0] + split[1]), method="lower")
    early = ts < cut
    if "target_ts" in train.columns:
        early &= train["target_ts"].to_numpy("int64") < cut
    return train[early].reset_index(drop=True), train[ts >= cut].reset_index(drop=True)


def _mirror_parts(
    spec: ModelSpec, frame: pd.DataFrame, train: pd.DataFrame, valid: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None:
    """(fit, early-stopping, judged) rows of the mirror model, or None without cross-fitting.

    Entity cross-fitting (a builder's ``cross`` rows): the recipe the other way round, fitted on
    the validation rows and early-stopped on the training rows. Forward cross-fitting
    (spec.forward_cross_fit, time split only): the recipe one validation period earlier
    (forward_fold), judging the validation rows, all of which lie after every row it was fitted
    or early-stopped on. Either way no judged row was seen by the model that predicts it.
    """
    cross = cross_rows(frame)
    if not cross.empty:
        return valid, train, cross
    if not spec.forward_cross_fit or SPLIT_COLUMN in frame.columns:
        return None
    early_train, early_valid = forward_fold(train, spec.split)
    for name, part in (("earlier training", early_train), ("earlier validation", early_valid)):
        if part.empty or (spec.kind == "binary" and part["label"].nunique() < 2):
            raise NoTrainingData(f"{spec.name}: the {name} split of a forward cross-fit is too small to fit")
    return early_train, early_valid, valid


def training_fingerprint(data_fingerprint: str, params: dict[str, Any], spec_name: str) -> str:
    """sha256 of the data fingerprint, the params and the model name: same inputs, same fingerprint."""
    blob = json.dumps(
        {"data": data_fingerprint, "params": params, "spec": spec_name}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def fit_candidate(spec: ModelSpec, training_set: TrainingSet, *, max_rows: int | None = None) -> TrainedModel:
    """Split (split_examples), sample the rows to fit on (the spec's rule, beyond ``max_rows``,
    default the LIVEYIELD_MAX_TRAIN_ROWS setting) and fit the spec's pipeline, deterministically
    for the spec's seed and the training's as_of."""
    if training_set.spec_name != spec.name:
        raise ValueError(f"training set was built for {training_set.spec_name}, not {spec.name}")
    train, valid, holdout = split_examples(training_set.frame, spec.split)
    mirror_parts = _mirror_parts(spec, training_set.frame, train, valid)
    cap = max_train_rows() if max_rows is None else max_rows
    as_of_ts = epoch_seconds(training_set.as_of)
    fit_rows, sampled = sample_training(spec, train, cap, sampling_seed(spec.seed, as_of_ts))
    for name, part in (("train", fit_rows), ("validation", valid)):
        if spec.kind == "binary" and part["label"].nunique() < 2:
            raise NoTrainingData(f"{spec.name}: the {name} split has a single class; cannot fit")
    params: dict[str, Any] = {**spec.params, "seed": spec.seed}
    # A sample is other data than the whole split: it is part of the fingerprint, only when taken.
    keyed = {**params, **sampled.params()} if sampled.applied else params
    fingerprint = training_fingerprint(training_set.fingerprint, keyed, spec.name)
    columns = spec.input_columns
    started = time.perf_counter()
    pipeline = spec.make_estimator(params)
    estimator = as_estimator(pipeline, spec.kind)  # fits ``pipeline`` in place
    estimator.fit(fit_rows[columns], fit_rows["label"], eval_set=[(valid[columns], valid["label"])])
    mirror, n_cross, mirror_sampled = None, 0, None
    if mirror_parts is not None:  # cross-fitting: the same recipe, fitted apart, judges more rows
        mirror_rows, stop_rows, judged = mirror_parts
        mirror_rows, mirror_sampled = sample_training(
            spec, mirror_rows, cap, sampling_seed(spec.seed, as_of_ts, 1)
        )
        mirror = spec.make_estimator(params)
        as_estimator(mirror, spec.kind).fit(
            mirror_rows[columns], mirror_rows["label"], eval_set=[(stop_rows[columns], stop_rows["label"])]
        )
        mirror = corrected(mirror, mirror_sampled)
        holdout = pd.concat(
            [holdout.assign(**{CROSS_FITTED: False}), judged.assign(**{CROSS_FITTED: True})],
            ignore_index=True,
        )
        n_cross = len(judged)
    fit_seconds = time.perf_counter() - started
    summary = fit_summary(estimator)
    fitted = {
        **params,
        "best_iteration": summary.pop("best_iteration"),
        "n_train": len(train),
        "n_valid": len(valid),
        "n_holdout": len(holdout),
        "n_cross_fitted": n_cross,
        **summary,  # what the fit itself chose (e.g. the number of segments), when reported
        **sampled.params(),
    }
    if mirror_sampled is not None and mirror_sampled.applied:
        fitted.update(mirror_sampled.params("sampling_mirror"))
    if sampled.applied:
        log.warning("%s: %s", spec.name, sampled.summary)
    lineage = {
        "as_of": training_set.as_of.isoformat(),
        "feature_versions": training_set.feature_versions,
        "validation_run_ids": training_set.validation_run_ids,
        "data_validated": training_set.data_validated,
    }
    return TrainedModel(
        spec_name=spec.name,
        pipeline=corrected(pipeline, sampled),
        train=train,
        valid=valid,
        holdout=holdout,
        params=fitted,
        training_fingerprint=fingerprint,
        data_fingerprint=training_set.fingerprint,
        fit_seconds=fit_seconds,
        lineage=lineage,
        mirror=mirror,
        sampling=sampled,
    )
