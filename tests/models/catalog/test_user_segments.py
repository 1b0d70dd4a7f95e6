"""user_segments: spec, clustering metrics, the segment estimator, tags, labels and the flows end to end."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score, davies_bouldin_score, silhouette_score
from sqlalchemy import Engine, select

from tasks.featurestore import materialize_views
from tasks.featurestore.definitions import DAY_S, parse_ref
from tasks.featurestore.views import CATEGORY_VOCABULARY
from tasks.featurestore.views import FEATURE_VIEWS as VIEWS
from tasks.gates import evaluate_gate
from tasks.ingest import ingest_table
from tasks.models.catalog import MODELS, get_spec
from tasks.models.catalog import user_segments as segments
from tasks.models.evaluation import Evaluation
from tasks.models.metrics import METRICS, NO_BOOTSTRAP, higher_is_better
from tasks.models.metrics.clustering import davies_bouldin, silhouette, stability
from tasks.models.spec import LabelWindow
from tasks.schema import oracle_users
from tasks.settings import Settings, get_settings
from tasks.simulate import SimConfig
from tasks.simulate.run import run_simulation
from tests.conftest import BACKENDS
from tests.models.warehouse import CREATED_TS, START, fresh_warehouse

SPEC = segments.user_segments
SHARES = [f"user_category_mix__{c}_share_28d" for c in CATEGORY_VOCABULARY]


# --- spec ----------------------------------------------------------------------------------


def test_spec_is_declared_with_features_thresholds_and_a_baseline() -> None:
    assert get_spec("user_segments") is SPEC and MODELS["user_segments"].kind == "clustering"
    for ref in SPEC.feature_refs:
        parse_ref(ref, VIEWS)  # raises for an undeclared view or feature
    assert not SPEC.policy.is_empty and not SPEC.context_features
    floors = {t.metric: t.lower for t in SPEC.policy.value_thresholds}
    assert floors["stability"] is not None and 0 < floors["stability"] < 1
    assert set(SPEC.policy.beat_baseline) == {"silhouette", "davies_bouldin"}
    assert str(SPEC.baseline) == f"column:{segments.BASELINE_COLUMN}"
    assert SPEC.primary_metric in SPEC.metrics
    for metric in SPEC.metrics:
        assert metric in METRICS and metric in NO_BOOTSTRAP
        higher_is_better(metric)  # every metric has a declared direction
    assert 2 <= SPEC.params["k_min"] <= SPEC.params["k_max"]
    assert SPEC.oracle is not None and SPEC.format_scores is not None and SPEC.plots is not None


def _evaluation(**metrics: float) -> Evaluation:
    return Evaluation(metrics=dict(metrics), by_slice={}, n=100)


@pytest.mark.parametrize(
    ("candidate", "passed"),
    [
        ({"silhouette": 0.5, "davies_bouldin": 0.8, "stability": 0.95}, True),
        ({"silhouette": 0.3, "davies_bouldin": 0.8, "stability": 0.95}, False),  # no better than baseline
        ({"silhouette": 0.5, "davies_bouldin": 1.6, "stability": 0.95}, False),  # DB worse than baseline
        ({"silhouette": 0.5, "davies_bouldin": 0.8, "stability": 0.5}, False),  # unstable
    ],
)
def test_gate_needs_stability_and_beating_the_value_tier_baseline(
    candidate: dict[str, float], passed: bool
) -> None:
    baseline = _evaluation(silhouette=0.3, davies_bouldin=1.5, stability=float("nan"))
    report = evaluate_gate(
        SPEC.policy,
        candidate=_evaluation(**candidate),
        champion=None,
        baseline=baseline,
        deltas={},
        data_validated=True,
    )
    assert report.passed is passed


# --- metrics -------------------------------------------------------------------------------


def _blobs(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 1.0], [0.0, 4.0, -1.0]])
    return centres[labels] + rng.normal(size=(n, 3)), labels


def _cols(x: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    cols = {f"emb_{i}": x[:, i] for i in range(x.shape[1])}
    cols["prediction"] = labels.astype("float64")
    return cols


def test_silhouette_and_davies_bouldin_match_sklearn_and_weights_are_copies() -> None:
    x, labels = _blobs()
    ones = np.ones((1, len(labels)))
    assert silhouette(_cols(x, labels), ones)[0] == pytest.approx(silhouette_score(x, labels))
    assert davies_bouldin(_cols(x, labels), ones)[0] == pytest.approx(davies_bouldin_score(x, labels))
    counts = np.random.default_rng(1).integers(0, 3, len(labels)).astype("float64")
    copies = np.repeat(np.arange(len(labels)), counts.astype(int))
    w = np.vstack([counts, np.ones(len(labels))])  # two replicates at once
    got = silhouette(_cols(x, labels), w)
    assert got[0] == pytest.approx(silhouette_score(x[copies], labels[copies]))
    assert got[1] == pytest.approx(silhouette_score(x, labels))
    db = davies_bouldin(_cols(x, labels), w)
    assert db[0] == pytest.approx(davies_bouldin_score(x[copies], labels[copies]))


def test_clustering_metrics_are_nan_when_undefined() -> None:
    x, labels = _blobs(50)
    ones = np.ones((1, 50))
    one_segment = _cols(x, np.zeros(50))
    assert np.isnan(silhouette(one_segment, ones)[0]) and np.isnan(davies_bouldin(one_segment, ones)[0])
    no_space = {"prediction": labels.astype("float64")}
    assert np.isnan(silhouette(no_space, ones)[0]) and np.isnan(davies_bouldin(no_space, ones)[0])
    assert np.isnan(stability(no_space, ones)[0])  # a baseline has no fit-time stability
    assert stability({**no_space, "stability": np.full(50, 0.9)}, ones)[0] == pytest.approx(0.9)


def test_metrics_without_embedding_use_the_behaviour_space_of_the_feature_columns() -> None:
    frame = _users(300, seed=2)
    labels = segments.value_tiers(segments.row_value(frame, segments.VALUE_COLUMNS))
    cols = {c: frame[c].to_numpy() for c in frame.columns}
    cols["prediction"] = labels.astype("float64")
    space = segments.standardise(segments.space_matrix(frame, segments.USER_DIMENSIONS))
    ones = np.ones((1, len(frame)))
    assert silhouette(cols, ones)[0] == pytest.approx(silhouette_score(space, labels))


# --- the estimator -------------------------------------------------------------------------


def _users_and_types(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic model inputs of four behaviour types (and each row's type): nullable counts,
    missing rows as NaN, interests drawn apart from the type."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(4, n, p=[0.45, 0.25, 0.18, 0.12])
    sessions = np.round(np.exp(np.array([1.0, 4.0, 3.5, 4.0])[kind] + rng.normal(0, 0.3, n)))
    gifts = np.where(kind == 2, np.exp(rng.normal(4.0, 0.4, n)), 0.0)
    spend = np.where(kind == 3, np.exp(rng.normal(4.5, 0.4, n)), 0.0)
    shares = rng.dirichlet(np.full(len(SHARES), 0.3), n)
    frame = pd.DataFrame(
        {
            "user_watch__sessions_28d": pd.array(sessions.astype("int64"), dtype="Int64"),
            "user_gifts__gifts_sum_28d": pd.Series(gifts).where(gifts > 0),  # no row: NaN
            "user_commerce__spend_28d": pd.Series(spend).where(spend > 0),
            **{c: shares[:, i] for i, c in enumerate(SHARES)},
            "user_profile__days_since_signup": pd.array(rng.integers(30, 400, n), dtype="Int64"),
        }
    )
    return frame[SPEC.input_columns], kind


def _users(n: int, seed: int = 0) -> pd.DataFrame:
    """Synthetic model inputs: four behaviour types (see _users_and_types)."""
    return _users_and_types(n, seed)[0]


def _fit(frame: pd.DataFrame, **overrides: int) -> segments.SegmentModel:
    params = {**SPEC.params, "seed": SPEC.seed, **overrides}
    return segments.make_segment_model(params).fit(frame)


@pytest.fixture(scope="module")
def fitted() -> tuple[pd.DataFrame, segments.SegmentModel]:
    """800 synthetic users and the spec's estimator fitted on them."""
    frame = _users(800)
    return frame, _fit(frame)


def test_segment_ids_are_stable_across_a_rerun_with_the_same_seed(
    fitted: tuple[pd.DataFrame, segments.SegmentModel],
) -> None:
    frame, first = fitted
    second = _fit(frame)
    np.testing.assert_array_equal(first.predict(frame), second.predict(frame))
    np.testing.assert_array_equal(first.centroids_, second.centroids_)
    assert first.stability_ == second.stability_
    sizes = np.bincount(first.predict(frame))
    assert (np.diff(sizes) <= 0).all()  # ids ordered by size: segment 0 is the largest


def test_k_lies_in_the_spec_range_and_separated_types_are_found(
    fitted: tuple[pd.DataFrame, segments.SegmentModel],
) -> None:
    frame, model = fitted
    ks = set(range(SPEC.params["k_min"], SPEC.params["k_max"] + 1))
    assert SPEC.params["k_min"] <= model.k_ <= SPEC.params["k_max"]
    assert set(model.silhouette_by_k_) == ks and set(model.stability_by_k_) == ks
    assert model.k_ == 4 and model.stability_ > 0.9  # four well-separated behaviour types
    assert model.stability_ == model.stability_by_k_[4]
    # The types are recovered on users the fit never saw, interests (not an axis) notwithstanding.
    unseen, types = _users_and_types(600, seed=11)
    assert adjusted_rand_score(types, model.predict(unseen)) > 0.95
    narrow = _fit(frame.iloc[:200], k_min=2, k_max=3, n_boot=0)
    assert narrow.k_ in (2, 3)


def test_predict_frame_gives_segment_affinity_and_stability(
    fitted: tuple[pd.DataFrame, segments.SegmentModel],
) -> None:
    frame, model = fitted
    out = model.predict_frame(frame)
    assert list(out.columns) == ["prediction", "affinity", "stability"]
    assert set(out["prediction"]) <= set(range(model.k_))
    assert out["affinity"].between(0, 1).all() and (out["stability"] == model.stability_).all()
    names = model.profiles_["name"]
    assert names.is_unique and model.profiles_["size"].sum() == len(frame)


@pytest.mark.parametrize(
    ("silhouette", "stability", "chosen"),
    [
        ({3: 0.40, 4: 0.50, 5: 0.52}, {3: 0.97, 4: 0.95, 5: 0.79}, 4),  # the best is unstable
        ({3: 0.40, 4: 0.50, 5: 0.52}, {3: 0.97, 4: 0.95, 5: 0.93}, 5),  # all stable: silhouette
        ({3: 0.40, 4: 0.50, 5: 0.50}, {3: 0.97, 4: 0.95, 5: 0.95}, 4),  # a tie: the smaller k
        ({3: 0.40, 4: 0.50, 5: 0.52}, {3: 0.70, 4: 0.85, 5: 0.60}, 4),  # none stable: the most stable
        ({3: 0.40, 4: 0.50}, {3: float("nan"), 4: float("nan")}, 4),  # unmeasured: silhouette alone
    ],
)
def test_k_is_the_best_silhouette_among_the_stable_ks(
    silhouette: dict[int, float], stability: dict[int, float], chosen: int
) -> None:
    assert segments.choose_k(silhouette, stability, stable_min=0.9) == chosen


def test_activity_is_a_daily_rate_over_the_days_on_the_platform() -> None:
    frame = pd.DataFrame(
        {
            "user_watch__sessions_28d": pd.array([7, 28, 14, None], dtype="Int64"),
            "user_gifts__gifts_sum_28d": [0.0, 0.0, 0.0, 0.0],
            "user_commerce__spend_28d": [0.0, 0.0, 0.0, 0.0],
            # joined 6 days ago (7 days on the platform); long ago; unknown signup; no sessions row
            "user_profile__days_since_signup": pd.array([6, 300, None, 2], dtype="Int64"),
        }
    )
    activity = segments.space_matrix(frame, segments.USER_DIMENSIONS)[:, 0]
    np.testing.assert_allclose(activity, np.log1p([1.0, 1.0, 0.5, 0.0]))


@pytest.mark.parametrize(
    ("shares", "tags"),
    [
        ({"gaming": 0.7, "music": 0.3}, ["gaming", "music"]),
        ({"music": 0.25, "sports": 0.25, "travel": 0.3, "beauty": 0.2}, ["travel", "music", "sports"]),
        ({"gaming": 0.15, "music": 0.15, "sports": 0.1}, []),  # nothing dominant
        ({}, []),  # watched nothing
    ],
)
def test_tags_are_the_users_dominant_categories(shares: dict[str, float], tags: list[str]) -> None:
    frame = pd.DataFrame([{c: shares.get(c, np.nan if not shares else 0.0) for c in CATEGORY_VOCABULARY}])
    assert segments.dominant_categories(frame) == [tags]


def test_scores_hold_users_and_segment_profiles_with_tags() -> None:
    frame = _users(300).assign(user_key=[f"k{i:04d}" for i in range(300)])
    model = _fit(frame[SPEC.input_columns], n_boot=0)
    predictions = model.predict_frame(frame[SPEC.input_columns]).reset_index(drop=True)
    rows = segments.format_segment_scores(SPEC, frame, predictions)
    assert not rows.duplicated(["entity_key", "item"]).any()
    users = rows[rows["item"] == ""].set_index("entity_key")
    assert len(users) == 300 and users["score"].between(0, 1).all() and users["label"].notna().all()
    assert (users["rank"].to_numpy() == predictions["prediction"].to_numpy()).all()
    share_frame = frame.set_index("user_key")[SHARES]
    share_frame.columns = list(CATEGORY_VOCABULARY)
    for key in ("k0000", "k0123", "k0299"):
        expected = segments.dominant_categories(share_frame.loc[[key]])[0]
        assert json.loads(str(users.loc[key, "detail"])) == {"tags": expected}
    profiles = rows[rows["item"] == "profile"]
    assert sorted(profiles["rank"]) == sorted(set(users["rank"]))
    assert profiles["score"].sum() == pytest.approx(1.0)
    detail = json.loads(profiles.iloc[0]["detail"])
    assert {"size", "share", "mean_spend_28d", "top_categories", "centroid_z"} <= set(detail)


def test_value_tiers_split_payers_into_tertiles() -> None:
    tiers = segments.value_tiers(np.array([0, 0, 0, 1, 2, 3, 10, 20, 30.0]))
    assert tiers.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3]
    assert segments.value_tiers(np.zeros(4)).tolist() == [0, 0, 0, 0]


def test_profile_names_follow_the_centroid() -> None:
    dims = segments.USER_DIMENSIONS
    z = np.array([[0.1, -0.5, -0.4], [-1.7, -0.6, -0.4], [0.6, 1.2, -0.4], [1.0, 2.1, 2.3]])
    names = segments.profile_names(z, np.array([0.0, 0.0, 1.0, 5.0]), dims, segments.FALLBACK_ROLE)
    assert names == [
        "non-paying casual viewer",
        "non-paying occasional viewer",
        "mid-spend tipper",
        "high-spend shopper & tipper",
    ]


# --- on a warehouse: labels, and train -> gate -> promote -> score through the flows --------

DAYS = 10
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)


@dataclasses.dataclass
class Platform:
    """A small simulated warehouse with the user_segments views, and the environment to run flows on it."""

    engine: Engine
    env: dict[str, str]


def _build(settings: Settings, engine: Engine) -> None:
    """build_warehouse for this model only: ingest just the raw tables its labels and views read.

    Ingesting the other eleven raw tables would double the build, the bulk of this module's time.
    """
    config = dataclasses.replace(
        SimConfig(users=250, streamers=15, days=DAYS, seed=5, start=START), pseudonym_key=b"test-key"
    )
    run_simulation(settings, engine, config)
    views = [VIEWS[name] for name in sorted({ref.split(":")[0] for ref in SPEC.feature_refs})]
    tables = sorted({*SPEC.label_sources, *(s for v in views for s in v.sources)})
    for table in tables:
        ingest_table(engine, Path(settings.landing_dir), table, max_ts=config.end_epoch + DAY_S)
    first, last = START - dt.timedelta(days=2), START + dt.timedelta(days=DAYS - 1)
    materialize_views(engine, views, created_ts=CREATED_TS, start=first, end=last)


@pytest.fixture(scope="module", params=BACKENDS)
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_available: bool
) -> Iterator[Platform]:
    """One warehouse per backend for this module: 250 users, 15 streamers, 10 days, seed 5."""
    with fresh_warehouse(request.param, tmp_path_factory.mktemp(f"segments-{request.param}")) as backend:
        _build(backend.settings, backend.engine)
        yield Platform(backend.engine, backend.env)


def test_label_frame_has_one_row_per_user_at_its_snapshot(platform: Platform) -> None:
    end = int(AS_OF.timestamp())
    window = LabelWindow(end - SPEC.training_days * DAY_S, end, 0)
    with platform.engine.connect() as conn:
        frame = SPEC.build_labels(conn, window)
    snapshots = {end - k * DAY_S for k in range(1, segments.SNAPSHOTS + 1)}
    assert len(frame) > 100 and frame["user_key"].is_unique and frame["example_id"].is_unique
    assert set(frame["event_ts"]) <= snapshots and (frame["label"] == 0).all()
    assert set(frame[segments.BASELINE_COLUMN]) <= {0, 1, 2, 3}
    assert (frame["value_28d"] >= 0).all()
    assert (frame["value_28d"] > 0).sum() == (frame[segments.BASELINE_COLUMN] > 0).sum()
    again = segments.snapshot_of(frame["user_key"], sorted(snapshots))
    np.testing.assert_array_equal(again, frame["event_ts"].to_numpy())  # a user's snapshot is stable


@pytest.mark.usefixtures("prefect_harness")
def test_train_gate_promote_and_score_through_the_flows(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.models import score_model, train_model
    from tasks.lifecycle import mlflow_client
    from tasks.scoring import read_current_scores

    for name, value in platform.env.items():
        monkeypatch.setenv(name, value)
    first = train_model("user_segments", as_of=AS_OF, build=False)
    assert first.version == 1 and first.created, first
    assert first.gate_passed and first.promoted, first.gate_reason
    metrics = mlflow_client(get_settings()).get_run(first.run_id).data.metrics
    assert metrics["silhouette"] > metrics["baseline__silhouette"]
    assert metrics["stability"] >= 0.75 and "oracle__oracle_ari" in metrics
    artifacts = {a.path for a in mlflow_client(get_settings()).list_artifacts(first.run_id, "plots")}
    assert {"plots/segment_profiles.json", "plots/segment_profiles.png"} <= artifacts

    scored = score_model("user_segments", as_of=AS_OF)
    current = read_current_scores(platform.engine, "user_segments")
    assert len(current) == scored.rows
    users = current[current["item"] == ""]
    profiles = current[current["item"] == "profile"]
    with platform.engine.connect() as conn:
        signed_up = conn.execute(select(oracle_users.c.user_key)).scalars().all()
    assert set(users["entity_key"]) <= set(signed_up) and len(users) > 100
    assert users["score"].between(0, 1).all() and users["label"].notna().all()
    assert all(isinstance(json.loads(d)["tags"], list) for d in users["detail"])
    assert set(profiles["entity_key"]) == {f"segment:{r}" for r in set(users["rank"])}
    assert profiles["score"].sum() == pytest.approx(1.0)
