"""product_recs' spec: the label hook, scoring, evaluation helpers, the promotion policy and the ModelSpec.

Examples: a query is (user, cut-off) for every user who buys in [cut-off, cut-off + horizon);
its rows are the candidates, label 1 when the user bought the product in that window.
``n_relevant`` counts every product the user bought there, also those candidate generation
missed, so recall is honest. Cut-offs are daily (midnight UTC), the horizon one day: the
user's next purchases. The baseline is the candidate's popularity (orders over the 28 days
before the cut-off).

Inputs come through the feature store: the interaction histories candidates are made from
(``data.FEATURE_REFS``, one row per user and day) and the product's popularity
(``FEATURE_REFS``, joined to every candidate row as of its cut-off). Scoring checks the
freshness of every view once, by the framework's rule, and recomputes the collaborative state
from the histories before ``as_of`` instead of freezing it in the model: the re-ranker was
trained on features computed that way at every cut-off, so training and scoring stay identical.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine

from tasks.featurestore import get_online_features
from tasks.featurestore.definitions import DAY_S
from tasks.featurestore.views import FEATURE_VIEWS
from tasks.models.catalog.product_recs import data as history
from tasks.models.catalog.product_recs.candidates import (
    CANDIDATE_FEATURES,
    CONFIG,
    RecsConfig,
    candidate_rows,
    with_keys,
)
from tasks.models.catalog.product_recs.data import CommerceData, codes_of, commerce_from_store
from tasks.models.catalog.product_recs.ranker import GROUP, make_estimator
from tasks.models.metrics import ranking
from tasks.models.plots import plot_hit_rate_at_k, plot_ranking_metrics_at_k
from tasks.models.scoring_frame import check_fresh
from tasks.models.spec import (
    ChangeThreshold,
    ColumnBaseline,
    LabelWindow,
    ModelSpec,
    PromotionPolicy,
    RelativeThreshold,
    Sampling,
    ScoringTarget,
    SignificanceRule,
)

TOP_K = 20  # products published per user
METRICS = ("ndcg_10", "recall_20", "hit_rate_10", "catalog_coverage_10")
LABEL_SOURCES = ("raw_orders", "raw_product_views", "raw_products", "raw_watch_sessions")
# Joined to each candidate row (by product_id) as of its cut-off.
FEATURE_REFS: tuple[str, ...] = (
    "product_popularity:buyers_28d",
    "product_popularity:orders_7d",
    "product_popularity:views_7d",
)
CONTEXT = (*CANDIDATE_FEATURES, GROUP)
# The inputs of one side of a (user, product) row, for monitoring (ModelSpec.input_entities): the
# product's (its price, popularity, shelf and streamer) and the user's history; the others
# describe the pair.
PRODUCT_INPUTS = ("popularity", "popularity_rank", "log_price", "shelf_share", "streamer_minutes_7d",
                  "shelf_size")  # fmt: skip
USER_INPUTS = ("user_interactions", "user_orders_28d", "user_views_28d", "user_distinct_products",
               "days_since_user_commerce")  # fmt: skip
INPUT_ENTITIES: dict[str, str] = {
    **dict.fromkeys(PRODUCT_INPUTS, "product"),
    **dict.fromkeys(USER_INPUTS, "user"),
}
KS = (1, 5, 10, 20)  # cut-offs of the ranking-by-K picture
WATCH_DAYS = 28  # watch time the shelf and streamer features look back over


# --- label frames ----------------------------------------------------------------------------


def cutoffs_in(window: LabelWindow, config: RecsConfig = CONFIG) -> list[int]:
    """Midnight-UTC cut-offs c in the window whose evaluation window [c, c + horizon) ends by end_ts."""
    step = config.cutoff_step_days * DAY_S
    first = -(-window.start_ts // DAY_S) * DAY_S
    horizon = max(window.horizon_s, DAY_S)
    return list(range(first, window.end_ts - horizon + 1, step))


LABEL_COLUMNS = (
    "example_id", "event_ts", "target_ts", "label", "user_key", "product_id", GROUP,
    "n_relevant", "item_id", "catalog_size", "user_type",
)  # fmt: skip


def build_examples(
    data: CommerceData, cutoffs: Sequence[int], horizon_s: int, config: RecsConfig = CONFIG
) -> pd.DataFrame:
    """One query per (user, cut-off) with a purchase in [cut-off, cut-off + horizon); rows = candidates."""
    frames = []
    ts = data.label_orders["event_ts"].to_numpy()
    n_items = len(data.items)
    for cutoff in cutoffs:
        future = data.label_orders[(ts >= cutoff) & (ts < cutoff + horizon_s)]
        if future.empty:
            continue
        bought = np.unique(future["user"].to_numpy() * n_items + future["item"].to_numpy())
        users = np.unique(bought // n_items)
        rows = candidate_rows(data, cutoff, users, config)
        if rows.empty:
            continue
        keys = rows["user"].to_numpy("int64") * n_items + rows["item"].to_numpy("int64")
        rows["label"] = np.isin(keys, bought).astype("int64")
        n_relevant = np.bincount(np.searchsorted(users, bought // n_items), minlength=len(users))
        rows["n_relevant"] = n_relevant[np.searchsorted(users, rows["user"].to_numpy())].astype("int64")
        rows["event_ts"] = np.int64(cutoff)
        # The last second the label window covers: a later split starting at cutoff + horizon
        # does not overlap it, so time_split's purge keeps these rows.
        rows["target_ts"] = np.int64(cutoff + horizon_s - 1)
        frames.append(rows)
    if not frames:
        return pd.DataFrame(columns=[*LABEL_COLUMNS, *CANDIDATE_FEATURES])
    return _finish(with_keys(data, pd.concat(frames, ignore_index=True)))


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    """Deterministic order, query ids ascending in that order, stable example ids; codes dropped."""
    frame = frame.sort_values(["event_ts", "user_key", "product_id"], kind="stable").reset_index(drop=True)
    keys = frame["user_key"].astype(str) + "@" + frame["event_ts"].astype(str)
    frame[GROUP] = pd.factorize(keys, sort=False)[0].astype("int64")
    frame["example_id"] = keys + ":" + frame["product_id"].astype(str)
    frame["item_id"] = frame["product_id"]
    frame["catalog_size"] = frame["catalog_size"].astype("int64")
    return frame.drop(columns=["user", "item"])


def _commerce_for(
    engine: Engine, first_cutoff: int, end_ts: int, config: RecsConfig, labels: tuple[int, int] | None = None
) -> CommerceData:
    """Interactions the cut-offs in [first_cutoff, end_ts] see, from the feature store."""
    start = first_cutoff - config.history_days * DAY_S
    return commerce_from_store(
        engine,
        start,
        end_ts,
        first_cutoff - WATCH_DAYS * DAY_S,
        labels=labels,
        catalogue_end_ts=None if labels is None else labels[1],
    )


def make_label_builder(config: RecsConfig = CONFIG) -> Any:
    """The spec's build_labels for a config: daily cut-offs over the window, next-horizon purchases."""

    def build_labels(conn: Connection, window: LabelWindow) -> pd.DataFrame:
        cutoffs = cutoffs_in(window, config)
        horizon = max(window.horizon_s, DAY_S)
        if not cutoffs:
            return pd.DataFrame(columns=[*LABEL_COLUMNS, *CANDIDATE_FEATURES])
        # Inputs through the store up to the last cut-off; the purchases labelled from raw orders.
        data = _commerce_for(conn.engine, cutoffs[0], cutoffs[-1], config, (cutoffs[0], window.end_ts))
        return build_examples(data, cutoffs, horizon, config)

    return build_labels


# --- scoring -----------------------------------------------------------------------------------


def scoring_users(data: CommerceData, as_of: int, config: RecsConfig = CONFIG) -> list[str]:
    """Users with a view or an order over the popularity window before as_of (the commerce audience)."""
    start = as_of - config.popularity_days * DAY_S
    codes = [
        frame.loc[(frame["event_ts"] >= start) & (frame["event_ts"] < as_of), "user"].to_numpy()
        for frame in (data.orders, data.views)
    ]
    return [str(k) for k in data.users[np.unique(np.concatenate(codes)).astype(np.int64)]]


def make_scoring_frame_builder(config: RecsConfig = CONFIG) -> Any:
    """The spec's build_scoring_frame: candidates and features of every commerce user at as_of."""

    def build_scoring_frame(engine: Engine, spec: ModelSpec, as_of: dt.datetime) -> pd.DataFrame:
        from tasks.models.training import epoch_seconds

        ts = epoch_seconds(as_of)
        for name in dict.fromkeys((*spec.history_views, *(r.partition(":")[0] for r in spec.feature_refs))):
            check_fresh(engine, FEATURE_VIEWS[name], ts)  # the framework's freshness rule, once per view
        data = _commerce_for(engine, ts, ts, config)
        users = np.unique(codes_of(data.users, scoring_users(data, ts, config)))
        rows = candidate_rows(data, ts, users, config)
        rows["event_ts"] = np.int64(ts)
        rows["n_relevant"] = np.int64(0)
        frame = _finish(with_keys(data, rows))
        products = pd.DataFrame({"product_id": frame["product_id"].drop_duplicates().to_numpy(dtype=object)})
        product_features = get_online_features(engine, products, spec.feature_refs, ts)
        return frame.merge(product_features, on="product_id", how="left", validate="many_to_one")

    return build_scoring_frame


def format_scores(spec: ModelSpec, frame: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """The top K products per user: entity_key = user_key, item = product_id, rank 1..K, score."""
    scored = pd.DataFrame(
        {
            "query": frame[GROUP].to_numpy("int64"),
            "row": np.arange(len(frame)),
            "entity_key": frame["user_key"].astype(str).to_numpy(),
            "item": frame["product_id"].astype(str).to_numpy(),
            "score": np.asarray(predictions["prediction"], dtype="float64"),
        }
    )
    scored = scored.sort_values(["query", "score", "row"], ascending=[True, False, True], kind="stable")
    scored["rank"] = scored.groupby("query").cumcount() + 1
    top = scored[scored["rank"] <= TOP_K]
    return top[["entity_key", "item", "rank", "score"]].reset_index(drop=True)


# --- evaluation helpers: metrics at any K, pictures -------------------------------------------


def ranking_at_k(frame: pd.DataFrame, score: str | np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """NDCG@K, Recall@K and HitRate@K for each K, by the metric registry's definitions (ties: row order)."""
    values = frame[score].to_numpy("float64") if isinstance(score, str) else np.asarray(score, "float64")
    cols = {c: frame[c].to_numpy() for c in ("label", GROUP, "n_relevant") if c in frame.columns}
    cols["prediction"] = values
    ones = np.ones((1, len(frame)))
    out: dict[str, float] = {}
    for k in ks:
        for name, factory in (
            ("ndcg", ranking.ndcg_at),
            ("recall", ranking.recall_at),
            ("hit_rate", ranking.hit_rate_at),
        ):
            out[f"{name}_{k}"] = float(factory(k)(cols, ones)[0])
    return out


def ranking_plots(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """Ranking metrics by K, model vs popularity, and hit rate by K per user type (ModelSpec.plots)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {"prediction": "model", "baseline_prediction": "popularity"}
    return [
        plot_ranking_metrics_at_k(frame, folder / "ranking_at_k.png", names, KS),
        plot_hit_rate_at_k(frame, folder / "hit_rate_at_k_by_user_type.png", names, "user_type", KS),
    ]


# --- the spec ------------------------------------------------------------------------------------

# Relative bars, not absolute floors: every ranking metric shrinks as the catalogue grows (more
# streamers, more products per buyer's reach), so NDCG@10 >= 0.04 fitted the demo and nothing else
# (50,000 users: 0.051 for the model, 0.037 for popularity). The model must be significantly better
# than popularity on NDCG@10, beat it on NDCG@10 and recall@20, and reach 1.2x its NDCG@10 (judged
# on the paired interval of model - 1.2 x popularity: a holdout too small to tell is undecided).
# 1.2 is the smallest lift worth replacing a best-seller list for; measured (bench_recs_scale):
# 3.0x at 5,000 users seed 7, 1.6x seed 8, 1.4x at 50,000, 2.5x on Online Retail II.
POLICY = PromotionPolicy(
    change_thresholds=(
        ChangeThreshold("ndcg_10", slack=-0.01),
        ChangeThreshold("recall_20", slack=-0.02),
    ),
    significance=(SignificanceRule("ndcg_10", against="baseline", confidence=0.95, min_delta=0.0),),
    beat_baseline=("ndcg_10", "recall_20"),
    relative_thresholds=(RelativeThreshold("ndcg_10", ratio=1.2),),
)

product_recs = ModelSpec(
    name="product_recs",
    kind="ranking",
    description=(
        "Which products to show a user in live commerce: candidates from item-kNN co-occurrence, "
        "truncated SVD, the user's own products, the shelves of the streamers they watch, the "
        "shelves they are likely to see next (category affinity × the streamer's audience share) "
        "and popularity, re-ranked by XGBoost rank:ndcg from the expected purchase share as prior; "
        "one query per (user, day) with a purchase."
    ),
    build_labels=make_label_builder(CONFIG),
    feature_refs=FEATURE_REFS,
    history_views=tuple(dict.fromkeys(r.partition(":")[0] for r in history.FEATURE_REFS)),
    context_features=CONTEXT,
    categorical=(),
    make_estimator=make_estimator,
    # The boosting starts from the expected share of the user's purchases (streamer affinity ×
    # shelf share) and learns corrections: see ranker.ProductRanker.
    params={"n_estimators": 400, "learning_rate": 0.05, "max_depth": 4, "prior": "expected_share"},
    baseline=ColumnBaseline("popularity"),
    metrics=METRICS,
    primary_metric="ndcg_10",
    slices=("user_type",),
    policy=POLICY,
    scoring=ScoringTarget(entity="user", key="user_key", score_range=(0.0, 1.0)),
    label_sources=LABEL_SOURCES,
    horizon_days=1,
    training_days=21,
    split=(0.7, 0.15, 0.15),
    seed=7,
    build_scoring_frame=make_scoring_frame_builder(CONFIG),
    format_scores=format_scores,
    plots=ranking_plots,
    # A ranker learns within a query: beyond the cap whole queries are kept, never part of one.
    sampling=Sampling("entity", column="query_id"),
    input_entities=INPUT_ENTITIES,
)
