"""product_recs against popularity at several platform sizes and seeds (model quality at scale).

    python -m tests.benchmarks.bench_recs_scale [--quick] [--sizes 5000:7,5000:8,50000:7]

Simulates each platform (the demo's calendar: 28 days from 2026-01-05, streamers = users / 16)
in memory and runs the catalog's product_recs code unchanged on it: the label builder's
examples (daily cut-offs over the spec's 21 training days, one query per user who buys the next
day, candidates and features from interactions before each cut-off), the spec's time split
(70/15/15 by cut-off, purged), the spec's re-ranker and parameters with early stopping on the
validation days, and the holdout days judged against the popularity baseline (orders over the
28 days before the cut-off) with the platform's paired bootstrap over queries (500 resamples).

The simulator's frames are encoded directly (``commerce_data``) instead of through ingestion
and the feature store, which the end-to-end tests and the demo cover; the product_popularity
columns the spec joins from the store are computed here from the same orders and views, as of
each cut-off. The same spec and policy at every size: nothing is tuned per size or seed.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from tasks.featurestore.definitions import DAY_S
from tasks.models.catalog import product_recs as pr
from tasks.models.evaluation import bootstrap_delta, evaluate
from tasks.models.training import time_split
from tasks.simulate import SimConfig, simulate_platform
from tests.benchmarks import common

START = dt.date(2026, 1, 5)
DAYS = 28
SIZES = ((5_000, 7), (5_000, 8), (50_000, 7))
QUICK = ((5_000, 7), (5_000, 8))
POPULARITY = ("buyers_28d", "orders_7d", "views_7d")  # the spec's product_popularity columns
# The same protocol on the model before streamer affinity, co-watch and the prior (item-kNN, SVD,
# own products, the 3 most-watched shelves and popularity; 200 bootstrap resamples):
# (users, seed, NDCG@10, popularity, CI low, CI high, candidate recall).
BEFORE = (
    (5_000, 7, 0.0798, 0.0300, +0.0225, +0.0791, 0.533),
    (5_000, 8, 0.0769, 0.0603, -0.0136, +0.0477, 0.471),
    (50_000, 7, 0.0477, 0.0365, +0.0054, +0.0165, 0.214),
)
WHY = (
    "What the change addresses (measured on 5,000 users, seed 8, last 6 days): 69 % of next-day "
    "purchases come from streamers the buyer had not watched in the 28 days before, so the user's own"
    " products and most-watched shelves cannot reach them; and with the affinity features added, a "
    "re-ranker learnt from scratch early-stopped after 5–20 trees on a few hundred buyers a day and "
    "ranked worse (NDCG@10 0.063) than the expected share alone (0.099). Streamer affinity (category "
    "interest × the streamer's share of its category, on the coming weekday and the last week) "
    "reaches those shelves, and the ranker now starts from the expected purchase share (own watch "
    "share and affinity mixed by the platform's repeat share, × the product's share of its shelf's "
    "orders). At 50,000 users the candidate recall is still 0.27 (about 150 streamers per category "
    "share the affinity), which keeps the ratio at 1.40×."
)
_TABLES = ("raw_orders", "raw_product_views", "raw_products", "raw_watch_sessions")


class _Frames:
    """A sink keeping the raw tables product_recs reads."""

    def __init__(self) -> None:
        self.parts: dict[str, list[pd.DataFrame]] = {t: [] for t in _TABLES}

    def write(self, table: str, frame: pd.DataFrame) -> None:
        if table in self.parts:
            self.parts[table].append(frame)


def platform(users: int, seed: int) -> tuple[pr.CommerceData, int]:
    """The simulated platform's commerce data and the end of its period."""
    config = SimConfig(users=users, streamers=max(20, users // 16), days=DAYS, seed=seed, start=START)
    sink = _Frames()
    simulate_platform(config, sink)
    raw = {name: pd.concat(parts, ignore_index=True) for name, parts in sink.parts.items()}
    sessions = raw["raw_watch_sessions"]
    sessions = sessions.assign(day_ts=sessions["event_ts"] // DAY_S * DAY_S, seconds=sessions["duration_s"])
    keys = ["user_key", "streamer_id", "day_ts", "category"]
    watch = sessions.groupby(keys)["seconds"].sum().reset_index()
    data = pr.commerce_data(
        raw["raw_orders"],
        raw["raw_product_views"],
        raw["raw_products"].rename(columns={"event_ts": "listed_ts"}),
        watch,
    )
    return data, config.end_epoch


def with_popularity(data: pr.CommerceData, frame: pd.DataFrame) -> pd.DataFrame:
    """The product_popularity columns (buyers 28 d, orders 7 d, views 7 d) as of each row's cut-off."""
    item = pr.data.codes_of(data.items, frame["product_id"].astype(str))
    cutoff = frame["event_ts"].to_numpy()
    columns = {name: np.zeros(len(frame)) for name in POPULARITY}
    orders, views = data.orders, data.views
    for c in np.unique(cutoff):
        rows = cutoff == c
        month = orders[(orders["event_ts"] >= c - 28 * DAY_S) & (orders["event_ts"] < c)]
        week = orders[(orders["event_ts"] >= c - 7 * DAY_S) & (orders["event_ts"] < c)]
        seen = views[(views["event_ts"] >= c - 7 * DAY_S) & (views["event_ts"] < c)]
        counts = (
            month.drop_duplicates(["user", "item"]).groupby("item").size(),
            week.groupby("item").size(),
            seen.groupby("item").size(),
        )
        for name, count in zip(POPULARITY, counts, strict=True):
            columns[name][rows] = count.reindex(item[rows]).fillna(0).to_numpy()
    return frame.assign(**columns)


def run_one(users: int, seed: int) -> dict[str, Any]:
    """Simulate, build, split, fit and evaluate one platform."""
    spec = pr.product_recs
    started = time.perf_counter()
    data, end = platform(users, seed)
    simulate_s = time.perf_counter() - started
    cutoffs = list(range(end - spec.training_days * DAY_S, end - DAY_S + 1, DAY_S))
    started = time.perf_counter()
    examples = with_popularity(data, pr.build_examples(data, cutoffs, DAY_S))
    build_s = time.perf_counter() - started
    train, valid, holdout = time_split(examples, spec.split)
    columns = [*pr.CONTEXT, *POPULARITY]
    started = time.perf_counter()
    ranker = pr.make_estimator({**spec.params, "seed": spec.seed}).fit(
        train[columns], train["label"], eval_set=[(valid[columns], valid["label"])]
    )
    fit_s = time.perf_counter() - started
    y = holdout["label"].to_numpy("float64")
    model = ranker.predict_frame(holdout[columns]).reset_index(drop=True)
    popularity = pd.DataFrame({"prediction": holdout["popularity"].to_numpy("float64")})
    per_query = holdout.groupby("query_id").agg(n=("n_relevant", "first"), found=("label", "sum"))
    metrics = evaluate(spec, y, model, holdout).metrics
    base = evaluate(spec, y, popularity, holdout).metrics
    result: dict[str, Any] = {
        "users": users,
        "seed": seed,
        "queries": [f[pr.GROUP].nunique() for f in (train, valid, holdout)],
        "rows_per_query": len(holdout) / max(holdout[pr.GROUP].nunique(), 1),
        "candidate_recall": float((per_query["found"] / per_query["n"]).mean()),
        "model": metrics,
        "popularity": base,
        "delta": bootstrap_delta(spec, "ndcg_10", y, model, popularity, rows=holdout, n_boot=500, seed=7),
        "simulate_s": simulate_s,
        "build_s": build_s,
        "fit_s": fit_s,
        "best_iteration": ranker.best_iteration,
    }
    common.log(f"{users} users seed {seed}: ndcg_10 {metrics['ndcg_10']:.4f} vs {base['ndcg_10']:.4f}")
    return result


def verdict(result: dict[str, Any]) -> str:
    """The issue's target: NDCG@10 at least 1.5 × popularity with a delta whose CI excludes 0."""
    ratio = result["model"]["ndcg_10"] / max(result["popularity"]["ndcg_10"], 1e-12)
    met = ratio >= 1.5 and result["delta"][0] > 0
    return f"{ratio:.2f}× ({'target met' if met else 'below the 1.5× target'})"


def report(results: list[dict[str, Any]], quick: bool) -> str:
    """The Markdown section."""
    rows = []
    for r in results:
        low, point, high = r["delta"]
        rows.append(
            [
                f"{r['users']:,}",
                r["seed"],
                " / ".join(f"{q:,}" for q in r["queries"]),
                f"{r['candidate_recall']:.3f}",
                f"{r['model']['ndcg_10']:.4f}",
                f"{r['popularity']['ndcg_10']:.4f}",
                f"{point:+.4f} [{low:+.4f}, {high:+.4f}]",
                verdict(r),
                f"{r['model']['recall_20']:.3f} / {r['popularity']['recall_20']:.3f}",
                f"{r['build_s']:.0f} / {r['fit_s']:.0f} (best iteration {r['best_iteration']})",
            ]
        )
    header = [
        "users",
        "seed",
        "queries train / valid / holdout",
        "candidate recall",
        "NDCG@10",
        "popularity",
        "delta [95 % CI]",
        "ratio",
        "Recall@20 model / popularity",
        "examples / fit s",
    ]
    return "\n".join(
        [
            "## product_recs at scale (simulated platforms, against popularity)"
            + (" (--quick)" if quick else ""),
            "",
            f"Each platform simulated in memory ({DAYS} days from {START.isoformat()}, "
            "streamers = users / 16), "
            "the catalog's label builder, time split, re-ranker and parameters unchanged; holdout = the "
            "last 15 % of cut-offs, judged against popularity (orders over the 28 days before the cut-off) "
            "by the paired bootstrap over queries (500 resamples). Candidate recall: the share of a "
            "query's next-day purchases among its candidates.",
            "",
            common.table(header, rows),
            "",
            WHY,
            "",
            "Before streamer affinity, co-watch and the expected-share prior (same protocol, 200 resamples):",
            "",
            common.table(
                ["users", "seed", "candidate recall", "NDCG@10", "popularity", "delta CI", "ratio"],
                [
                    [
                        f"{u:,}",
                        s,
                        f"{rec:.3f}",
                        f"{m:.4f}",
                        f"{p:.4f}",
                        f"[{lo:+.4f}, {hi:+.4f}]",
                        f"{m / p:.2f}×",
                    ]
                    for u, s, m, p, lo, hi, rec in BEFORE
                ],
            ),
        ]
    )


def main(argv: list[str]) -> None:
    """Run the sizes (``--sizes users:seed,...``) and write the section."""
    sizes: tuple[tuple[int, int], ...] = QUICK if "--quick" in argv else SIZES
    if "--sizes" in argv:
        spec = argv[argv.index("--sizes") + 1]
        sizes = tuple((int(u), int(s)) for u, s in (item.split(":") for item in spec.split(",")))
    results = [run_one(users, seed) for users, seed in sizes]
    text = report(results, "--quick" in argv)
    common.write_section("recs_scale", text)
    print(text)


if __name__ == "__main__":
    main(sys.argv)
