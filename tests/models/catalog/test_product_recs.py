"""product_recs: spec, collaborative filtering, behaviours, and train → gate → score through the flows."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from mlflow.tracking import MlflowClient
from sklearn.base import clone
from sqlalchemy import Engine, select

from flows.models import score_model
from flows.models import train_model as train_flow
from tasks.db import make_engine
from tasks.featurestore import FEATURE_VIEWS as VIEWS
from tasks.featurestore import materialize_views
from tasks.featurestore.definitions import DAY_S
from tasks.gates import GateReport, evaluate_gate, ledger
from tasks.gates.metrics import higher_is_better
from tasks.ingest import ingest_table
from tasks.models import catalog
from tasks.models.catalog import product_recs as pr
from tasks.models.evaluation import baseline_frame, bootstrap_delta, evaluate
from tasks.models.families.collaborative import (
    ItemCooccurrence,
    MatrixFactorisation,
    interaction_matrix,
    top_n,
    truncated_svd,
)
from tasks.models.metrics import METRICS
from tasks.models.scoring_frame import StaleFeatures
from tasks.models.spec import PromotionPolicy, ValueThreshold
from tasks.schema import metadata, raw_orders, raw_product_views, raw_products
from tasks.scoring import read_current_scores
from tasks.settings import Settings, get_settings
from tasks.simulate import SimConfig
from tasks.simulate.run import run_simulation
from tests.models.warehouse import START, fresh_warehouse

DAYS = 10
AS_OF = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
C = 1_770_000_000 - 1_770_000_000 % DAY_S  # a midnight cut-off for the hand-made cases


# --- the spec -----------------------------------------------------------------------------------


def test_spec_is_declared_with_its_protocol_and_thresholds() -> None:
    spec = catalog.get_spec("product_recs")
    assert spec is pr.product_recs and spec.kind == "ranking"
    for ref in spec.feature_refs:
        view, _, feature = ref.partition(":")
        assert feature in {f.name for f in VIEWS[view].features}, ref
    assert set(spec.metrics) == {"ndcg_10", "recall_20", "hit_rate_10", "catalog_coverage_10"}
    assert spec.primary_metric == "ndcg_10" and all(m in METRICS for m in spec.metrics)
    assert all(higher_is_better(m) for m in spec.metrics)
    assert str(spec.baseline) == "column:popularity" and "popularity" in spec.context_features
    assert "query_id" in spec.input_columns and "user_key" not in spec.input_columns
    policy = spec.policy
    # Relative bars that hold at any catalogue size: NDCG@10 at least 1.2x popularity's.
    assert not policy.value_thresholds
    assert [(t.metric, t.against, t.ratio) for t in policy.relative_thresholds] == [
        ("ndcg_10", "baseline", 1.2)
    ]
    assert {t.metric for t in policy.change_thresholds} >= {"ndcg_10"}
    assert [(r.metric, r.against) for r in policy.significance] == [("ndcg_10", "baseline")]
    assert policy.beat_baseline == ("ndcg_10", "recall_20") and policy.require_validated_data
    assert spec.build_scoring_frame is not None and spec.format_scores is not None and spec.plots is not None


# --- collaborative filtering on hand-made matrices -------------------------------------------------


def _matrix(rows: list[list[float]]) -> sp.csr_matrix:
    return sp.csr_matrix(np.asarray(rows, dtype="float64"))


def test_cooccurrence_recommends_what_was_bought_together() -> None:
    # items: 0 A, 1 B, 2 C, 3 D. A and B are bought together twice, B and C once, D alone.
    m = _matrix([[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]])
    cooc = ItemCooccurrence(neighbours=2).fit(m)
    sim = cooc.similarity.toarray()  # type: ignore[union-attr]
    assert np.allclose(sim.diagonal(), 0.0)  # an item is not its own neighbour
    assert sim[0, 1] == pytest.approx(2 / np.sqrt(3 * 3))  # cosine of the A and B columns
    assert sim[0, 2] == 0.0 and sim[3].sum() == 0.0  # never together, and D shares no buyer
    scores = cooc.score(m[[4]])  # the user who bought only A
    assert int(np.argmax(scores[0])) == 1 and scores[0, 3] == 0.0
    _, cols, rank = top_n(scores, 3)
    assert cols[0] == 1 and rank.tolist() == list(range(1, len(rank) + 1)) and 3 not in cols


def test_svd_factors_recover_the_two_taste_groups() -> None:
    # Users 0-2 buy items 0-2, users 3-5 buy items 3-5; user 2 has not yet bought item 2.
    block = np.zeros((6, 6))
    block[:3, :3] = 1.0
    block[3:, 3:] = 1.0
    block[2, 2] = 0.0
    mf = MatrixFactorisation(factors=2, seed=1).fit(sp.csr_matrix(block))
    scores = mf.score(np.array([2]))[0]
    assert scores[2] > max(scores[3:])  # the missing item of its own group beats the other group


def test_truncated_svd_is_exact_on_a_low_rank_matrix_and_reproducible() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((80, 5)) @ rng.random((5, 60))
    u, s, vt = truncated_svd(sp.csr_matrix(a), 5, seed=3)
    assert np.allclose(s, np.linalg.svd(a, compute_uv=False)[:5], rtol=1e-8)
    assert np.allclose((u * s) @ vt, a, atol=1e-8)
    again = truncated_svd(sp.csr_matrix(a), 5, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip((u, s, vt), again, strict=True))


def test_top_n_orders_by_score_then_column_and_drops_non_positive() -> None:
    scores = np.array([[0.5, 0.9, 0.5, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0]])
    rows, cols, rank = top_n(scores, 3)
    assert rows.tolist() == [0, 0, 0] and cols.tolist() == [1, 0, 2] and rank.tolist() == [1, 2, 3]


def test_interaction_matrix_sums_repeats_and_damps_them() -> None:
    m = interaction_matrix(np.array([0, 0, 1]), np.array([1, 1, 0]), np.array([1.0, 1.0, 0.25]), (2, 2))
    assert m.toarray() == pytest.approx(np.array([[0.0, np.log1p(2.0)], [np.log1p(0.25), 0.0]]))


# --- behaviours on hand-made commerce data ---------------------------------------------------------


Event = tuple[str, str, int]


def _commerce(
    orders: list[Event], views: list[Event] | None = None, listed: list[tuple[str, int, str]] | None = None
) -> pr.CommerceData:
    """CommerceData from (user, product, ts) orders and views and (product, listed_ts, streamer) rows."""
    return pr.commerce_data(
        pd.DataFrame(
            [(u, p, t, 10.0) for u, p, t in orders],
            columns=["user_key", "product_id", "event_ts", "unit_price"],
        ),
        pd.DataFrame(views or [], columns=["user_key", "product_id", "event_ts"]),
        pd.DataFrame(
            [(p, t, s, "fashion", 20.0) for p, t, s in listed or []],
            columns=["product_id", "listed_ts", "streamer_id", "category", "price"],
        ),
        pd.DataFrame(columns=["user_key", "streamer_id", "day_ts", "seconds", "category"]),
    )


def _shop() -> list[Event]:
    """Two weeks of orders: a and b share tastes; p9 is launched after the cut-off and sells a lot."""
    before = [
        ("a", "p1", C - 5 * DAY_S), ("a", "p2", C - 5 * DAY_S + 60), ("b", "p1", C - 4 * DAY_S),
        ("b", "p2", C - 4 * DAY_S + 60), ("b", "p3", C - 3 * DAY_S), ("c", "p4", C - 2 * DAY_S),
        ("c", "p3", C - 2 * DAY_S + 60), ("d", "p1", C - DAY_S),
    ]  # fmt: skip
    after = [("a", "p3", C + 3_600), ("a", "p9", C + 7_200), ("d", "p2", C + 3_600)]
    after += [(u, "p9", C + 2 * DAY_S + i) for i, u in enumerate("abcdefgh")]
    return before + after


def test_candidates_never_include_products_first_seen_after_the_cutoff() -> None:
    data = _commerce(
        _shop(), views=[("e", "p8", C + 60)], listed=[("p7", C + 10, "s1"), ("p6", C - 10, "s1")]
    )
    rows = pr.candidates_at(data, C, ["a", "b", "c", "d"])
    assert not rows.empty
    assert set(rows["product_id"]) <= {"p1", "p2", "p3", "p4", "p6"}  # p7 listed, p8 viewed, p9 sold later
    later = pr.candidates_at(data, C + 3 * DAY_S, ["a", "b"])
    assert "p9" in set(later["product_id"])  # known once it has been sold (and is the most popular)


def test_candidates_and_features_ignore_everything_after_the_cutoff() -> None:
    past_only = [o for o in _shop() if o[2] < C]
    full = pr.candidates_at(_commerce(_shop()), C, ["a", "b", "d"])
    truncated = pr.candidates_at(_commerce(past_only), C, ["a", "b", "d"])
    columns = ["user_key", "product_id", *pr.CANDIDATE_FEATURES]
    pd.testing.assert_frame_equal(full[columns], truncated[columns], check_dtype=False)
    # CF at work: d bought p1 only; p2 was bought with p1 twice, so item-kNN proposes it.
    d = full[full["user_key"] == "d"].set_index("product_id")
    assert d.loc["p2", "cooc_rank"] == 1 and d.loc["p1", "history_rank"] == 1


def test_labels_count_every_purchase_of_the_window_also_those_candidates_miss() -> None:
    frame = pr.build_examples(_commerce(_shop()), [C], DAY_S)
    a = frame[frame["user_key"] == "a"]
    assert a["n_relevant"].iloc[0] == 2  # p3 and p9 bought in [C, C + 1 day); p9 cannot be a candidate
    assert a.set_index("product_id").loc["p3", "label"] == 1 and a["label"].sum() == 1
    assert set(frame["user_key"]) == {"a", "d"}  # one query per user who bought in the window
    assert frame["query_id"].nunique() == 2 and frame["example_id"].is_unique
    assert (frame["target_ts"] < C + DAY_S).all() and (frame["event_ts"] == C).all()


def test_format_scores_publishes_the_top_k_per_user_in_rank_order() -> None:
    frame = pd.DataFrame(
        {"query_id": np.repeat([0, 1], 25), "user_key": np.repeat(["u0", "u1"], 25),
         "product_id": [f"p{i:02d}" for i in range(25)] * 2}
    )  # fmt: skip
    pred = pd.DataFrame({"prediction": np.r_[np.linspace(0.1, 0.9, 25), np.linspace(0.9, 0.1, 25)]})
    out = pr.format_scores(pr.product_recs, frame, pred)
    assert len(out) == 2 * pr.TOP_K and not out.duplicated(["entity_key", "item"]).any()
    u0 = out[out["entity_key"] == "u0"]
    assert u0["rank"].tolist() == list(range(1, 21)) and u0["item"].iloc[0] == "p24"
    assert u0["score"].is_monotonic_decreasing


def _gate(frame: pd.DataFrame, prediction: np.ndarray, policy: PromotionPolicy) -> GateReport:
    """The gate's first-run verdict for a prediction on an evaluation frame (as the lifecycle runs it)."""
    spec = pr.product_recs
    y = frame["label"].to_numpy("float64")
    pred = pd.DataFrame({"prediction": prediction})
    base = baseline_frame(spec, spec.baseline, frame, frame)
    deltas: dict[tuple[str, str], tuple[float, float, float]] = {
        (r.metric, r.against): bootstrap_delta(
            spec, r.metric, y, pred, base, rows=frame, n_boot=r.n_boot, seed=1
        )
        for r in policy.significance
    }
    return evaluate_gate(
        policy,
        candidate=evaluate(spec, y, pred, frame),
        champion=None,
        baseline=evaluate(spec, y, base, frame),
        deltas=deltas,
        data_validated=True,
    )


def _ranking_frame(n_queries: int = 300, seed: int = 0) -> pd.DataFrame:
    """Queries of 30 candidates with one bought item, where popularity is an informative baseline."""
    rng = np.random.default_rng(seed)
    q = np.repeat(np.arange(n_queries), 30)
    popularity = rng.poisson(5, len(q)).astype("float64")
    taste = rng.normal(size=len(q))
    utility = 0.3 * popularity + 1.5 * taste + rng.gumbel(size=len(q))
    label = np.zeros(len(q))
    label[pd.Series(utility).groupby(q).idxmax().to_numpy()] = 1.0
    return pd.DataFrame(
        {"query_id": q, "label": label, "popularity": popularity, "taste": taste, "n_relevant": 1,
         "item_id": rng.integers(0, 200, len(q)).astype(str), "catalog_size": 200, "user_type": "warm"}
    )  # fmt: skip


def test_a_recommender_no_better_than_popularity_is_not_promoted() -> None:
    frame = _ranking_frame()
    policy = pr.product_recs.policy
    copycat = _gate(frame, frame["popularity"].to_numpy("float64"), policy)
    assert not copycat.passed
    failed = {(c.name, c.metric) for c in copycat.checks if c.passed is False}
    assert {("beat_baseline", "ndcg_10"), ("significance_vs_baseline", "ndcg_10")} <= failed
    noisy = frame["popularity"].to_numpy("float64") + np.random.default_rng(2).normal(0, 3, len(frame))
    assert not _gate(frame, noisy, policy).passed  # worse than popularity: never promoted
    # The same gate promotes a recommender that knows the users' taste.
    good = _gate(frame, (0.3 * frame["popularity"] + 1.5 * frame["taste"]).to_numpy(), policy)
    assert good.passed, good.reason


def test_ranker_learns_within_query_order_and_scores_in_the_unit_interval() -> None:
    frame = _ranking_frame(400, seed=3)
    columns = ["popularity", "taste", "query_id"]
    train, valid = frame[frame["query_id"] < 300], frame[frame["query_id"] >= 300]
    ranker = pr.ProductRanker({"seed": 1, "n_estimators": 60}).fit(
        train[columns], train["label"], eval_set=[(valid[columns], valid["label"])]
    )
    scores = ranker.predict_frame(valid[columns])["prediction"].to_numpy()
    assert ((scores > 0) & (scores < 1)).all() and ranker.best_iteration is not None
    shuffled = valid[columns].assign(query_id=valid["query_id"] + 1000)
    assert np.array_equal(ranker.predict(shuffled), scores)  # the query id groups; it is no input
    at_k = pr.ranking_at_k(valid.reset_index(drop=True), scores)
    assert at_k["ndcg_10"] > pr.ranking_at_k(valid.reset_index(drop=True), "popularity")["ndcg_10"]


def test_ranker_follows_the_scikit_learn_estimator_conventions() -> None:
    params = {"seed": 1, "n_estimators": 30}
    ranker = pr.ProductRanker(params)
    assert ranker.get_params() == {"params": params, "group_column": "query_id"}
    assert ranker.params is params and not hasattr(ranker, "model_")  # stored unchanged, nothing fitted
    frame = _ranking_frame(200, seed=4)
    columns = ["popularity", "taste", "query_id"]
    fitted = ranker.fit(frame[columns], frame["label"])
    twin = clone(fitted)
    assert twin.get_params() == fitted.get_params() and not hasattr(twin, "model_")
    assert np.array_equal(twin.fit(frame[columns], frame["label"]).predict(frame[columns]),
                          fitted.predict(frame[columns]))  # fmt: skip


# --- end to end on a simulated platform, both backends ------------------------------------------


@dataclass
class Platform:
    """A simulated, validated warehouse (the raw tables product_recs reads, its views) and settings."""

    settings: Settings
    engine: Engine


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimConfig]:
    """One simulated platform (300 users, 30 streamers, 10 days) landed once, ingested per backend."""
    folder = tmp_path_factory.mktemp("product-recs-landing")
    config = SimConfig(users=300, streamers=30, days=DAYS, seed=3, start=START)
    config = dataclasses.replace(config, pseudonym_key=b"test-key")
    scratch = make_engine(f"sqlite:///{folder / 'truth.db'}")  # truth tables go here, not to the platform
    metadata.create_all(scratch)
    run_simulation(get_settings({"LIVEYIELD_HOME": str(folder / "home")}), scratch, config)
    scratch.dispose()
    return folder / "home" / "landing", config


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, landed: tuple[Path, SimConfig]
) -> Iterator[Platform]:
    """The landed platform's label sources ingested into a fresh warehouse, the model's views built."""
    landing, config = landed
    with (
        fresh_warehouse(request.param, tmp_path_factory.mktemp(f"product-recs-{request.param}")) as backend,
        pytest.MonkeyPatch.context() as patch,
    ):
        for key, value in backend.env.items():
            patch.setenv(key, value)
        settings, engine = get_settings(), backend.engine
        for table in pr.LABEL_SOURCES:  # ingest consumes landed files: each backend gets a copy
            shutil.copytree(landing / table, Path(settings.landing_dir) / table)
            ingest_table(engine, Path(settings.landing_dir), table, max_ts=config.end_epoch + DAY_S)
        views = {r.partition(":")[0] for r in (*pr.FEATURE_REFS, *pr.data.FEATURE_REFS)}
        materialize_views(
            engine, [VIEWS[v] for v in sorted(views)], created_ts=0, start=START, end=AS_OF.date()
        )
        yield Platform(settings, engine)


# The flow's mechanics are under test here, not this small platform's model quality (at demo
# scale the catalog policy promotes; see the module docstring of tasks/models/catalog/product_recs/).
LENIENT = PromotionPolicy(value_thresholds=(ValueThreshold("recall_20", lower=0.0),))


@pytest.mark.usefixtures("prefect_harness")
def test_train_gate_promote_and_score_through_the_flows(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = dataclasses.replace(pr.product_recs, policy=LENIENT)
    monkeypatch.setitem(catalog.MODELS, "product_recs", spec)
    result = train_flow("product_recs", as_of=AS_OF, build=False)
    assert result.gate_passed and result.promoted, result.gate_reason
    assert len(ledger(platform.engine, "product_recs")) == 1
    client = MlflowClient(platform.settings.mlflow_tracking_uri)
    run = client.get_run(result.run_id)
    for key in ("ndcg_10", "recall_20", "hit_rate_10", "catalog_coverage_10", "baseline__ndcg_10",
                "ndcg_10__user_type_warm"):  # fmt: skip
        assert key in run.data.metrics, key
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert "plots/ranking_at_k.png" in plots

    scored = score_model("product_recs", as_of=AS_OF)
    current = read_current_scores(platform.engine, "product_recs")
    assert len(current) == scored.rows > 0 and set(current["model_version"]) == {1}
    per_user = current.groupby("entity_key")
    assert per_user.size().max() <= pr.TOP_K and not current.duplicated(["entity_key", "item"]).any()
    assert per_user["rank"].apply(lambda r: sorted(r) == list(range(1, len(r) + 1))).all()
    assert current["score"].between(0, 1).all()
    # Every recommended product was known before as_of (listed, viewed or bought).
    as_of = int(AS_OF.timestamp())
    with platform.engine.connect() as conn:
        known = {
            r[0]
            for t in (raw_products, raw_orders, raw_product_views)
            for r in conn.execute(select(t.c.product_id).where(t.c.event_ts < as_of).group_by(t.c.product_id))
        }
    assert set(current["item"]) <= known
    # Scoring refuses commerce data that stopped arriving (no validated day in the last two).
    build = spec.build_scoring_frame
    assert build is not None
    with pytest.raises(StaleFeatures, match="newest feature_ts"):
        build(platform.engine, spec, AS_OF + dt.timedelta(days=3))
