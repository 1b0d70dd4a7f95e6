"""stream_recs: live candidates, point-in-time features, behaviours, and train → gate → score end to end."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.base import clone
from sqlalchemy import Engine, select

from flows.models import score_model
from flows.models import train_model as train_flow
from tasks.featurestore import materialize_views
from tasks.featurestore.definitions import DAY_S
from tasks.featurestore.views import FEATURE_VIEWS as VIEWS
from tasks.gates import GateReport, evaluate_gate, ledger
from tasks.gates.metrics import higher_is_better
from tasks.ingest import ingest_table
from tasks.models import catalog
from tasks.models.catalog import stream_recs as sr
from tasks.models.evaluation import baseline_frame, baseline_names, bootstrap_delta, evaluate
from tasks.models.metrics import METRICS
from tasks.models.spec import LabelWindow, ModelSpec
from tasks.models.training import TrainedModel, build_training_set, fit_candidate
from tasks.schema import raw_streams
from tasks.scoring import read_current_scores
from tasks.settings import Settings, get_settings
from tasks.simulate import SimConfig
from tasks.simulate.run import run_simulation
from tests.models.warehouse import START, fresh_warehouse

DAYS = 9
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
T = 1_770_000_000  # a fixed query time for the synthetic cases
H = 3_600


# --- the spec -----------------------------------------------------------------------------------


def test_spec_is_declared_with_its_protocol_and_thresholds() -> None:
    spec = catalog.get_spec("stream_recs")
    assert spec is sr.stream_recs and spec.kind == "ranking"
    assert spec.feature_refs
    for ref in spec.feature_refs:  # each must be declared
        view, _, feature = ref.partition(":")
        assert feature in {f.name for f in VIEWS[view].features}
    assert {"hit_rate_1", "hit_rate_5", "hit_rate_10", "ndcg_10"} <= set(spec.metrics)
    assert spec.primary_metric in spec.metrics
    for metric in spec.metrics:
        assert metric in METRICS
        assert higher_is_better(metric)
    assert spec.slices == ("target_type",)
    assert str(spec.baseline) == "column:pop_score" and tuple(map(str, spec.extra_baselines)) == (
        "column:rep_score",
    )
    policy = spec.policy
    assert "hit_rate_10" in policy.beat_baseline
    # Relative bars that hold at any catalogue size: NDCG@10 at least 1.2x POP's and REP's.
    assert not policy.value_thresholds
    assert {(t.metric, t.against, t.ratio) for t in policy.relative_thresholds} == {
        ("ndcg_10", "baseline", 1.2),
        ("ndcg_10", "column:rep_score", 1.2),
    }
    assert [(r.metric, r.against) for r in policy.significance] == [("ndcg_10", "baseline")]
    assert {t.metric for t in policy.change_thresholds} >= {"hit_rate_10", "ndcg_10"}
    assert policy.require_validated_data and not policy.is_empty
    assert set(spec.label_sources) == {"raw_watch_sessions", "raw_streams", "raw_follows", "raw_users"}
    assert spec.input_columns == [*sr.REF_COLUMNS, *sr.FEATURES] == list(sr.INPUTS)
    assert spec.build_scoring_frame is sr.scoring_frame and spec.format_scores is sr.format_scores


# --- candidates ---------------------------------------------------------------------------------


def _streams(rows: list[tuple[str, str, str, str, int, int]]) -> pd.DataFrame:
    columns = ["stream_id", "streamer_id", "category", "region", "event_ts", "end_ts"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"event_ts": "int64", "end_ts": "int64"})


def test_live_pairs_keep_only_streams_on_air_at_each_time() -> None:
    starts = np.array([0, 100, 100, 300])
    ends = np.array([200, 150, 400, 301])
    q, s = sr.live_pairs(starts, ends, np.array([100, 150, 300, 500]))
    found = sorted(zip(q.tolist(), s.tolist(), strict=True))
    # t=100: 0, 1 (starts at t), 2; t=150: 0, 2 (1 ended at 150); t=300: 2, 3; t=500: nothing.
    assert found == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 2), (2, 3)]


def test_scoring_candidates_are_the_streams_on_air_else_last_weeks_schedule() -> None:
    streams = _streams(
        [
            ("a-1", "a", "gaming", "eu", T - 2 * H, T),  # record cut at the data horizon: on air
            ("b-1", "b", "music", "eu", T - 3 * H, T - H),  # ended an hour ago: offline
            ("c-1", "c", "music", "eu", T + 60, T + 2 * H),  # not started yet: offline
            ("d-1", "d", "sports", "na", T - H, T + H),
        ]
    )
    live = sr.scoring_candidates(streams, T)
    assert list(live["streamer_id"]) == ["a", "d"] and set(live["status"]) == {"live"}
    week = 7 * DAY_S
    quiet = _streams(
        [
            ("a-0", "a", "gaming", "eu", T - week - H, T - week + 2 * H),  # on air this hour last week
            ("b-0", "b", "music", "eu", T - week + 30 * 60, T - week + 3 * H),  # went live within the hour
            ("c-0", "c", "music", "eu", T - week - 3 * H, T - week - H),  # had ended by then
            ("e-1", "e", "music", "eu", T - 5 * H, T - 2 * H),  # today, ended: offline
        ]
    )
    scheduled = sr.scoring_candidates(quiet, T)
    assert list(scheduled["streamer_id"]) == ["a", "b"]
    assert set(scheduled["status"]) == {"scheduled"} and scheduled["stream_id"].isna().all()
    assert (scheduled["stream_start"] == T).all()


# --- point-in-time features -----------------------------------------------------------------------


def _history(sessions: list[tuple[str, str, str, int]], streams: pd.DataFrame, **kw: Any) -> sr.History:
    """Sessions as (user, streamer, category, ts); each gets a stream id "<streamer>-1"."""
    frame = pd.DataFrame(sessions, columns=["user_key", "streamer_id", "category", "event_ts"])
    frame.insert(0, "event_id", [f"ws{i}" for i in range(len(frame))])
    frame["stream_id"] = frame["streamer_id"] + "-1"
    follows = kw.get("follows", pd.DataFrame({"user_key": [], "streamer_id": [], "event_ts": []}))
    users = kw.get("users", pd.DataFrame({"user_key": ["u"], "region": ["eu"]}))
    return sr.History(
        frame.astype({"event_ts": "int64"}), streams, follows.astype({"event_ts": "int64"}), users
    )


def _pairs(user: str, streams: pd.DataFrame, t: int) -> pd.DataFrame:
    live = streams[(streams["event_ts"] <= t) & (streams["end_ts"] > t)]
    return pd.DataFrame(
        {
            "query_id": user,
            "user_key": user,
            "event_ts": np.int64(t),
            "stream_id": live["stream_id"].to_numpy(dtype=object),
            "streamer_id": live["streamer_id"].to_numpy(dtype=object),
            "category": live["category"].to_numpy(dtype=object),
            "region": live["region"].to_numpy(dtype=object),
            "stream_start": live["event_ts"].to_numpy("int64"),
        }
    )


def test_features_use_only_history_before_the_query_time() -> None:
    streams = _streams(
        [("a-1", "a", "gaming", "eu", T - 2 * H, T + H), ("b-1", "b", "music", "na", T - H, T + H)]
    )
    sessions = [
        ("u", "a", "gaming", T - 30 * DAY_S),  # outside the 28-day lookback
        ("u", "a", "gaming", T - 3 * DAY_S),
        ("u", "b", "music", T - 2 * H),
        ("u", "a", "gaming", T - H),
        ("u", "a", "gaming", T),  # the query's own session: not history
        ("u", "b", "music", T + 60),  # the future
        ("v", "b", "music", T - 10 * 60),
    ]
    follows = pd.DataFrame({"user_key": ["u", "u"], "streamer_id": ["a", "b"], "event_ts": [T - H, T + 1]})
    frame = sr.rank_frame(_pairs("u", streams, T), _history(sessions, streams, follows=follows))
    a, b = (frame[frame["streamer_id"] == s].iloc[0] for s in ("a", "b"))
    assert (a["pair_sessions_7d"], a["pair_sessions_28d"], a["pair_recent"]) == (2, 2, 2)
    assert a["pair_hours_since"] == pytest.approx(1.0) and b["pair_hours_since"] == pytest.approx(2.0)
    assert (a["pair_follows"], b["pair_follows"]) == (1.0, 0.0)  # b's follow comes after t
    assert a["user_sessions_28d"] == 3 and a["category_share_28d"] == pytest.approx(2 / 3)
    assert (a["same_region"], b["same_region"]) == (1.0, 0.0)
    assert (b["streamer_sessions_1h"], b["streamer_sessions_24h"]) == (1, 2)
    assert b["stream_sessions"] == 2 and a["live_hours"] == pytest.approx(2.0)
    assert a["pop_score"] == 2 and b["pop_score"] == 2
    assert a["rep_score"] > b["rep_score"] > 0  # REP: the most recently watched first


def test_labels_mark_repeat_and_new_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    streams = _streams(
        [("a-1", "a", "gaming", "eu", T - 5 * H, T + H), ("b-1", "b", "music", "eu", T - 5 * H, T + H)]
    )
    history = _history(
        [("u", "a", "gaming", T - 3 * H), ("u", "a", "gaming", T - H), ("u", "b", "music", T)], streams
    )
    monkeypatch.setattr(sr, "load_history", lambda *_: history)
    labels = sr.build_labels(None, LabelWindow(T - 2 * H, T + H))  # type: ignore[arg-type]
    assert labels.groupby("query_id")["label"].sum().eq(1).all()
    kinds = labels.groupby("query_id")["target_type"].agg(["nunique", "first"])
    assert (kinds["nunique"] == 1).all()
    # ws1 (u → a, watched before) is a repeat; ws2 (u → b, never watched) is new.
    assert kinds.loc["ws1", "first"] == "repeat" and kinds.loc["ws2", "first"] == "new"
    assert labels["example_id"].is_unique and set(sr.FEATURES) <= set(labels.columns)


def test_scores_are_the_top_ten_live_streamers_per_user() -> None:
    frame = pd.DataFrame(
        {
            "user_key": ["u"] * 12 + ["v"] * 2,
            "streamer_id": [f"s{i:02d}" for i in range(12)] + ["s00", "s01"],
            "stream_id": [f"s{i:02d}-1" for i in range(12)] + ["s00-1", "s01-1"],
            "category": "gaming",
            "status": "live",
        }
    )
    prediction = pd.DataFrame({"prediction": np.r_[np.linspace(0.1, 0.9, 12), [0.2, 0.7]]})
    out = sr.format_scores(sr.stream_recs, frame, prediction)
    u = out[out["entity_key"] == "u"]
    assert list(u["rank"]) == list(range(1, 11)) and list(u["item"]) == [
        f"s{i:02d}" for i in range(11, 1, -1)
    ]
    assert list(out[out["entity_key"] == "v"]["item"]) == ["s01", "s00"]
    assert json.loads(u.iloc[0]["detail"]) == {"category": "gaming", "status": "live", "stream_id": "s11-1"}
    assert out["score"].between(0, 1).all()


# --- a small simulated platform per backend -------------------------------------------------------


@dataclass
class Platform:
    """A simulated, validated warehouse (the raw tables stream_recs reads) and its settings."""

    settings: Settings
    engine: Engine


def land_platform(settings: Settings, engine: Engine, *, days: int, end: dt.date) -> None:
    """Simulate 300 users and 250 streamers (about 30 live at a time) over ``days`` from START,
    ingest the tables stream_recs reads and build its views through ``end``."""
    config = SimConfig(users=300, streamers=250, days=days, seed=11, start=START)
    config = dataclasses.replace(config, pseudonym_key=b"test-key")
    run_simulation(settings, engine, config)
    for table in sr.LABEL_SOURCES:
        ingest_table(engine, Path(settings.landing_dir), table, max_ts=config.end_epoch + DAY_S)
    refs = [ref.partition(":")[0] for ref in sr.FEATURE_REFS]
    views = [VIEWS[name] for name in dict.fromkeys([*sr.HISTORY_VIEWS, *refs])]
    materialize_views(engine, views, created_ts=0, start=START, end=end)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """300 users, 250 streamers (about 30 live at a time), 9 days; the label sources ingested, views built."""
    with (
        fresh_warehouse(request.param, tmp_path_factory.mktemp(f"stream-recs-{request.param}")) as backend,
        pytest.MonkeyPatch.context() as patch,
    ):
        for key, value in backend.env.items():
            patch.setenv(key, value)
        settings, engine = get_settings(), backend.engine
        land_platform(settings, engine, days=DAYS, end=AS_OF.date())
        yield Platform(settings, engine)


@pytest.fixture(scope="module")
def trained(platform: Platform) -> TrainedModel:
    """stream_recs fitted once on the platform (outside the flows)."""
    spec = sr.stream_recs
    return fit_candidate(spec, build_training_set(platform.engine, spec, AS_OF))


def test_training_frame_follows_the_protocol(trained: TrainedModel) -> None:
    frame = pd.concat([trained.train, trained.valid, trained.holdout])
    per_query = frame.groupby("query_id")
    assert per_query["label"].sum().eq(1).all()  # exactly the chosen streamer
    assert per_query["streamer_id"].nunique().eq(per_query.size()).all()
    assert per_query["target_type"].nunique().eq(1).all() and set(frame["target_type"]) == {"repeat", "new"}
    assert trained.train["event_ts"].max() < trained.holdout["event_ts"].min()  # temporal split


def test_a_one_category_viewer_is_shown_that_categorys_live_streams(trained: TrainedModel) -> None:
    # u watched only gaming (streamers no longer live); now two gaming streams are live among
    # eight streams of other categories that other viewers watch more.
    live = [(f"g{i}-1", f"g{i}", "gaming", "eu", T - H, T + H) for i in range(2)]
    live += [(f"o{i}-1", f"o{i}", c, "eu", T - H, T + H) for i, c in enumerate(["music", "sports"] * 4)]
    streams = _streams(live)
    sessions = [("u", f"old{i % 3}", "gaming", T - (i + 2) * 6 * H) for i in range(12)]
    sessions += [(f"v{j}", f"o{i}", "music", T - (j + 1) * 20 * 60) for i in range(8) for j in range(2)]
    sessions += [(f"w{j}", f"g{i}", "gaming", T - (j + 1) * 30 * 60) for i in range(2) for j in range(1)]
    frame = sr.rank_frame(_pairs("u", streams, T), _history(sessions, streams))
    frame = frame.assign(**dict.fromkeys(sr.REF_COLUMNS, np.nan))  # no stored streamer history
    scored = frame.assign(score=trained.pipeline.predict(frame)).sort_values("score", ascending=False)
    assert list(scored["category"].head(2)) == ["gaming", "gaming"], scored[["streamer_id", "score"]]


def test_repeat_streamer_on_air_is_ranked_first(trained: TrainedModel) -> None:
    live = [(f"s{i}-1", f"s{i}", "music", "eu", T - H, T + H) for i in range(6)]
    streams = _streams(live)
    sessions = [("u", "s3", "music", T - 3 * H), ("u", "s3", "music", T - 26 * H)]
    sessions += [(f"v{j}", f"s{i}", "music", T - (j + 1) * 20 * 60) for i in range(6) for j in range(2)]
    frame = sr.rank_frame(_pairs("u", streams, T), _history(sessions, streams))
    frame = frame.assign(**dict.fromkeys(sr.REF_COLUMNS, np.nan))  # no stored streamer history
    scores = pd.Series(trained.pipeline.predict(frame), index=frame["streamer_id"])
    assert scores.idxmax() == "s3"


def _gate(spec: ModelSpec, holdout: pd.DataFrame, prediction: np.ndarray) -> GateReport:
    """The real policy's verdict on a first run (no champion) for predictions on the holdout."""
    y = holdout["label"].to_numpy("float64")
    candidate = pd.DataFrame({"prediction": prediction})
    baselines = {
        name: evaluate(spec, y, baseline_frame(spec, name, holdout, holdout), holdout)
        for name in baseline_names(spec)
    }
    delta = bootstrap_delta(
        spec, "ndcg_10", y, candidate, baseline_frame(spec, spec.baseline, holdout, holdout),
        rows=holdout, n_boot=50, seed=spec.seed,
    )  # fmt: skip
    return evaluate_gate(
        spec.policy,
        candidate=evaluate(spec, y, candidate, holdout),
        champion=None,
        baseline=baselines[spec.baseline],
        extra_baselines={k: v for k, v in baselines.items() if k != spec.baseline},
        deltas={("ndcg_10", "baseline"): delta},
        data_validated=True,
    )


def test_a_recommender_no_better_than_popularity_is_not_promoted(trained: TrainedModel) -> None:
    holdout = trained.holdout
    pop = holdout["streamer_sessions_7d"].to_numpy("float64")  # a model that learnt only popularity
    report = _gate(sr.stream_recs, holdout, pop / (1.0 + pop))
    assert not report.passed
    failed = {(c.name, c.metric) for c in report.failed}
    assert ("beat_baseline", "hit_rate_10") in failed
    assert any(name.startswith("significance") and metric == "ndcg_10" for name, metric in failed)


@pytest.mark.usefixtures("prefect_harness")
def test_train_gate_promote_and_score_through_the_flows(platform: Platform) -> None:
    result = train_flow("stream_recs", as_of=AS_OF, build=False)
    assert result.gate_passed and result.promoted, result.gate_reason
    assert result.metrics["hit_rate_10"] > 0.0
    assert len(ledger(platform.engine, "stream_recs")) == 1
    client = MlflowClient(platform.settings.mlflow_tracking_uri)
    run = client.get_run(result.run_id)
    for key in ("hit_rate_10", "baseline__hit_rate_10", "baseline_1__hit_rate_10",
                "ndcg_10__target_type_repeat", "ndcg_10__target_type_new"):  # fmt: skip
        assert key in run.data.metrics, key
    plots = [a.path for a in client.list_artifacts(result.run_id, "plots")]
    assert "plots/hit_rate_at_k.png" in plots

    scored = score_model("stream_recs", as_of=AS_OF)
    current = read_current_scores(platform.engine, "stream_recs")
    assert len(current) == scored.rows > 0 and set(current["model_version"]) == {result.version}
    assert not current.duplicated(["entity_key", "item"]).any()
    assert current["score"].between(0, 1).all()
    ranks = current.sort_values(["entity_key", "rank"]).groupby("entity_key")["rank"]
    assert ranks.apply(lambda r: list(r) == list(range(1, len(r) + 1))).all()
    assert ranks.size().max() == sr.TOP_K
    # An offline streamer is never recommended: every item was on air at as_of.
    now = int(AS_OF.timestamp())
    with platform.engine.connect() as conn:
        on_air = {
            r.streamer_id
            for r in conn.execute(
                select(raw_streams.c.streamer_id).where(
                    raw_streams.c.event_ts <= now, raw_streams.c.end_ts >= now
                )
            )
        }
    assert on_air and set(current["item"]) <= on_air
    assert {json.loads(d)["status"] for d in current["detail"]} == {"live"}


def test_ranker_follows_the_scikit_learn_estimator_conventions() -> None:
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(400, len(sr.INPUTS))), columns=list(sr.INPUTS))
    y = (X["pair_recent"] + rng.normal(scale=0.5, size=len(X)) > 0.5).astype(int)
    params = {"seed": 3, "n_estimators": 20}
    ranker = sr.make_ranker(params)
    assert ranker.get_params() == {"columns": sr.INPUTS, "params": params}
    assert ranker.params is params and not hasattr(ranker, "booster_")  # stored unchanged, nothing fitted
    fitted = ranker.fit(X, y)
    twin = clone(fitted)
    assert twin.get_params() == fitted.get_params() and not hasattr(twin, "booster_")
    assert np.array_equal(twin.fit(X, y).predict(X), fitted.predict(X))
