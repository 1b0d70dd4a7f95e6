"""user_segments against the simulator's true segments at 5,000 and 50,000 users, two seeds.

    python -m tests.benchmarks.bench_segments_scale [--quick] [--home DIR] [--sizes 5000:7,50000:8]

Each platform is simulated for 28 days from the demo's start (streamers = users / 16), the raw
tables user_segments reads are ingested and its views materialised (``build_model_warehouse``);
``--home DIR`` keeps each warehouse under DIR/u<users>_s<seed> and reuses it on a rerun. The
catalog's own path then builds the training set as of the period's end and fits the spec
(``fit_candidate``); its holdout users (the latest snapshots) are judged against oracle_users
(evaluation only) by the adjusted Rand index, beside:

* the value tiers (the spec's baseline) and the previous design (log watch time, tipping and
  shopping spend, k by silhouette alone), fitted on the same rows;
* two ceilings: a gradient-boosted classifier trained on the training users' true segments with
  the model's own inputs (the most any segmentation of those inputs could agree with the truth,
  short of more data per user), and k-means on the holdout users' true latent traits (the
  simulator's activity, spend propensity, shopping appetite and churn hazard; best k in 3..8),
  which says whether the simulator's segments are clusters at all.

Fit time at 200,000 users: the estimator fitted on the largest platform's training rows resampled
(with replacement) to 200,000 rows, timed (median of three). Clustering quality does not depend on
the backend, so this runs on SQLite only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import adjusted_rand_score
from sqlalchemy import select
from threadpoolctl import threadpool_limits

from tasks.db import make_engine
from tasks.models.catalog import user_segments as segments
from tasks.models.evaluation import baseline_predictions, evaluate, oracle_report, predict
from tasks.models.training import build_training_set, fit_candidate
from tasks.schema import oracle_users
from tasks.settings import get_settings
from tasks.simulate import SimConfig
from tasks.simulate.population import make_users
from tasks.warehouse import upgrade_schema
from tests.benchmarks import common
from tests.models.warehouse import START, build_model_warehouse

SPEC = segments.user_segments
DAYS = 28
SIZES: tuple[tuple[int, int], ...] = ((5000, 7), (5000, 8), (50000, 7), (50000, 8))
QUICK_SIZES: tuple[tuple[int, int], ...] = ((1500, 7),)
FIT_ROWS = 200_000
TARGET_ARI, TARGET_STABILITY = 0.5, 0.9
# The design before this benchmark: three axes, k by silhouette alone (stable_min 0).
PREVIOUS_REF = "user_watch:watch_minutes_28d"
PREVIOUS: tuple[segments.Dimension, ...] = (
    segments.Dimension("watch", ("user_watch__watch_minutes_28d",)),
    segments.Dimension("tipping", ("user_gifts__gifts_sum_28d",)),
    segments.Dimension("shopping", ("user_commerce__spend_28d",)),
)


def _warehouse(folder: Path, users: int, seed: int) -> tuple[Any, SimConfig]:
    """The platform's engine (built unless folder already holds it) and its simulator config."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = get_settings(
        {"LIVEYIELD_HOME": str(folder), "LIVEYIELD_DB_URL": f"sqlite:///{folder / 'w.db'}"}
    )
    engine = make_engine(settings.db_url)
    streamers = max(20, users // 16)
    marker = folder / "built"
    if not marker.exists():
        upgrade_schema(engine)
        build_model_warehouse(settings, engine, SPEC, users=users, days=DAYS, streamers=streamers, seed=seed)
        marker.write_text("built\n")
    config = SimConfig(users=users, streamers=streamers, days=DAYS, seed=seed, start=START)
    return engine, dataclasses.replace(config, pseudonym_key=b"test-key")


def _truth(engine: Any, keys: pd.Series) -> np.ndarray:
    """The simulator's segment of each key (oracle_users; evaluation only), -1 when unknown."""
    with engine.connect() as conn:
        rows = conn.execute(select(oracle_users.c.user_key, oracle_users.c.segment)).all()
    truth = {str(k): int(s) for k, s in rows}
    return keys.astype(str).map(truth).fillna(-1).to_numpy("int64")


def _latent_bound(config: SimConfig, keys: pd.Series, truth: np.ndarray) -> tuple[float, int]:
    """Best ARI (and its k) of k-means on the users' standardised true latent traits, k in 3..8."""
    users = make_users(config)
    index = {str(k): i for i, k in enumerate(users.key)}
    idx = np.array([index[str(k)] for k in keys])
    traits = np.column_stack(
        [
            users.activity[idx],
            np.log(users.spend[idx]),
            users.shopping[idx],
            np.log(users.churn_hazard[idx]),
        ]
    )
    z = (traits - traits.mean(axis=0)) / traits.std(axis=0)
    with threadpool_limits(limits=1):
        scores = {
            k: adjusted_rand_score(truth, KMeans(k, n_init=4, random_state=7).fit_predict(z))
            for k in range(3, 9)
        }
    best = max(scores, key=lambda k: scores[k])
    return float(scores[best]), best


def _supervised_ceiling(
    train: pd.DataFrame, holdout: pd.DataFrame, y_train: np.ndarray, y_hold: np.ndarray
) -> float:
    """ARI on the holdout of a classifier trained on the training users' true segments (same inputs)."""
    columns = SPEC.input_columns

    def matrix(frame: pd.DataFrame) -> np.ndarray:
        return frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy("float64", na_value=np.nan)

    known = y_train >= 0
    model = HistGradientBoostingClassifier(max_iter=200, random_state=7)
    with threadpool_limits(limits=2):
        model.fit(matrix(train)[known], y_train[known])
        return float(adjusted_rand_score(y_hold, model.predict(matrix(holdout))))


def _fit_seconds(frame: pd.DataFrame, rows: int, repeats: int = 3) -> list[float]:
    """Wall seconds of the spec's estimator fitted on ``rows`` rows resampled from frame."""
    sample = frame.iloc[np.random.default_rng(0).integers(0, len(frame), rows)].reset_index(drop=True)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        segments.make_segment_model({**SPEC.params, "seed": SPEC.seed}).fit(sample[SPEC.input_columns])
        seconds.append(time.perf_counter() - started)
    return seconds


def run_one(home: Path, users: int, seed: int) -> dict[str, Any]:
    """Build (or reuse) one platform, fit the spec as the catalog does, judge it against the truth."""
    started = time.perf_counter()
    engine, config = _warehouse(home / f"u{users}_s{seed}", users, seed)
    build_s = time.perf_counter() - started
    try:
        as_of = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(), dt.UTC)
        # The previous design's watch minutes ride along (same view); the spec fits on its own columns.
        wide = dataclasses.replace(SPEC, feature_refs=(*SPEC.feature_refs, PREVIOUS_REF))
        trained = fit_candidate(SPEC, build_training_set(engine, wide, as_of))
        holdout = trained.holdout.reset_index(drop=True)
        pred = predict(SPEC, trained.pipeline, holdout)
        base = baseline_predictions(SPEC, trained.train, holdout)
        ours = evaluate(SPEC, holdout["label"].to_numpy(), pred, holdout).metrics
        tiers = evaluate(SPEC, holdout["label"].to_numpy(), base, holdout).metrics
        oracle = oracle_report(engine, SPEC, holdout, pred=pred)
        y_hold = _truth(engine, holdout["user_key"])
        y_train = _truth(engine, trained.train["user_key"])
    finally:
        engine.dispose()
    model = trained.pipeline
    previous = segments.SegmentModel(
        PREVIOUS, stable_min=0.0, **{k: v for k, v in SPEC.params.items()}, seed=SPEC.seed
    )
    previous.fit(trained.train)
    known = y_hold >= 0
    latent, latent_k = _latent_bound(config, holdout["user_key"][known], y_hold[known])
    result = {
        "users": users,
        "seed": seed,
        "train": len(trained.train),
        "holdout": len(holdout),
        "k": int(model.k_),
        "stability": float(model.stability_),
        "silhouette": float(ours["silhouette"]),
        "tiers_silhouette": float(tiers["silhouette"]),
        "ari": float(oracle["oracle_ari"]),
        "tiers_ari": float(oracle["baseline_oracle_ari"]),
        "previous_ari": float(adjusted_rand_score(y_hold[known], previous.predict(holdout)[known])),
        "previous_k": int(previous.k_),
        "previous_stability": float(previous.stability_),
        "ceiling_ari": _supervised_ceiling(trained.train, holdout[known], y_train, y_hold[known]),
        "latent_ari": latent,
        "latent_k": latent_k,
        "fit_s": float(trained.fit_seconds),
        "build_s": build_s,
        "by_k": {k: (model.silhouette_by_k_[k], model.stability_by_k_[k]) for k in model.silhouette_by_k_},
        "train_frame": trained.train[SPEC.input_columns],
    }
    common.log(
        f"{users} users seed {seed}: ARI {result['ari']:.3f} (tiers {result['tiers_ari']:.3f}), k {model.k_}"
    )
    return result


def report(results: list[dict[str, Any]], fit_200k: list[float] | None) -> str:
    """The results section (Markdown)."""
    rows = [
        [
            f"{r['users']:,}",
            r["seed"],
            f"{r['train']:,} / {r['holdout']:,}",
            f"{r['k']} ({', '.join(f'{k}: {s:.2f}/{b:.2f}' for k, (s, b) in r['by_k'].items())})",
            f"{r['stability']:.3f} ({'met' if r['stability'] >= TARGET_STABILITY else 'not met'})",
            f"{r['silhouette']:.3f} vs {r['tiers_silhouette']:.3f}",
            f"**{r['ari']:.3f}** ({'met' if r['ari'] >= TARGET_ARI else 'not met'})",
            f"{r['tiers_ari']:.3f}",
            f"{r['previous_ari']:.3f} (k {r['previous_k']}, stability {r['previous_stability']:.2f})",
            f"{r['ceiling_ari']:.3f}",
            f"{r['latent_ari']:.3f} (k {r['latent_k']})",
            f"{r['fit_s']:.1f}",
        ]
        for r in results
    ]
    header = [
        "users", "seed", "train / holdout users", "k (silhouette/stability by k)", "stability (≥ 0.9)",
        "holdout silhouette vs tiers", "ARI vs truth (≥ 0.5)", "value tiers ARI", "previous design ARI",
        "ceiling: classifier on the truth", "latent traits, k-means", "fit s",
    ]  # fmt: skip
    latent = [r["latent_ari"] for r in results]
    ceiling = [r["ceiling_ari"] for r in results]
    fit_line = (
        f"Fit time at {FIT_ROWS:,} users (the largest platform's training rows resampled to {FIT_ROWS:,}): "
        f"median {statistics.median(fit_200k):.1f} s of {', '.join(f'{s:.1f}' for s in fit_200k)} "
        f"({'within' if statistics.median(fit_200k) <= 300 else 'OVER'} the 5-minute bound)."
        if fit_200k
        else "Fit time at 200,000 users: not measured in this run."
    )
    return "\n".join(
        [
            "## Segments against the simulator's truth at scale (bench_segments_scale)",
            "",
            f"Each platform simulated for {DAYS} days from {START.isoformat()} (streamers = users / 16), "
            "the catalog's training set as of the period's end and `fit_candidate` with the spec's "
            "parameters; the holdout (the users of the latest snapshots) judged against oracle_users by "
            "the adjusted Rand index (ARI). The value tiers are the spec's baseline; the previous design is "
            "k-means on log watch time, tipping and shopping spend with k by silhouette alone, fitted on the "
            "same rows. Ceilings: a gradient-boosted classifier trained on the training users' true segments "
            "with the model's own inputs, and k-means (best k in 3..8) on the holdout users' true latent "
            "traits. One run per platform (deterministic for the seed).",
            "",
            common.table(header, rows),
            "",
            fit_line,
            "",
            f"Why the {TARGET_ARI} target is out of reach on this simulator: its segments are not clusters "
            "but first-match rules on four independent, unimodal latent traits (spend propensity ≥ 3 → "
            "whale, shopping appetite ≥ 0.45 → shopper, churn hazard ≥ 0.015 → at risk, activity ≥ 0.6 → "
            "power viewer, else casual viewer; about two thirds of users are casual). k-means on the true "
            f"traits themselves reaches an ARI of {min(latent):.2f}–{max(latent):.2f}, and a classifier "
            "trained on the truth with the model's inputs reaches "
            f"{min(ceiling):.2f}–{max(ceiling):.2f}: 28 days of Poisson-noisy sessions, gifts and orders "
            "do not tell a spend propensity of 2.5 from one of 3.5. None of the axes, scalings or ks "
            "tried came near either figure (the alternatives are listed where USER_DIMENSIONS is "
            "declared). The interest mix is drawn apart from those traits (Dirichlet interests), so it "
            "describes segments (tags) rather than shaping them.",
        ]
    )


def main(argv: list[str]) -> None:
    """Run the sizes and write results/segments_scale.md."""
    sizes = QUICK_SIZES if "--quick" in argv else SIZES
    if "--sizes" in argv:
        spec = argv[argv.index("--sizes") + 1]
        sizes = tuple((int(u), int(s)) for u, s in (p.split(":") for p in spec.split(",")))

    def measure(home: Path) -> str:
        results = [run_one(home, users, seed) for users, seed in sizes]
        largest = max(results, key=lambda r: r["users"])
        fit_200k = None if "--quick" in argv else _fit_seconds(largest["train_frame"], FIT_ROWS)
        return report(results, fit_200k)

    if "--home" in argv:
        home = Path(argv[argv.index("--home") + 1]).resolve()
        text = measure(home)
    else:
        with tempfile.TemporaryDirectory(prefix="ly-segments-scale-") as tmp:
            text = measure(Path(tmp))
    common.write_section("segments_scale", text)
    print(text)


if __name__ == "__main__":
    main(sys.argv)
