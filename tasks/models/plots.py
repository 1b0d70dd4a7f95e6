"""Diagnostic plots of a trained binary classifier, written as PNG files (matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; safe in workers and threads

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve
from sklearn.pipeline import Pipeline
from xgboost import XGBModel

TOP_FEATURES = 25


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_roc(y: np.ndarray, pred: np.ndarray, baseline: np.ndarray, path: Path) -> Path:
    """ROC curve of the model and the baseline."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in (("model", pred), ("baseline", baseline)):
        if len(np.unique(y)) == 2:
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend()
    return _save(fig, path)


def plot_precision_recall(y: np.ndarray, pred: np.ndarray, path: Path) -> Path:
    """Precision-recall curve, with the base rate as the no-skill line."""
    fig, ax = plt.subplots(figsize=(5, 5))
    if len(np.unique(y)) == 2:
        precision, recall, _ = precision_recall_curve(y, pred)
        ax.plot(recall, precision, label="model")
    ax.axhline(float(np.mean(y)) if len(y) else 0.0, linestyle=":", color="grey", label="base rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.legend()
    return _save(fig, path)


def plot_calibration(y: np.ndarray, pred: np.ndarray, path: Path, bins: int = 15) -> Path:
    """Reliability curve: observed rate against mean prediction per quantile bin."""
    fig, ax = plt.subplots(figsize=(5, 5))
    if len(y):
        edges = np.unique(np.quantile(pred, np.linspace(0, 1, bins + 1)))
        which = np.clip(np.searchsorted(edges, pred, side="right") - 1, 0, max(len(edges) - 2, 0))
        mean_p = [pred[which == b].mean() for b in np.unique(which)]
        mean_y = [y[which == b].mean() for b in np.unique(which)]
        ax.plot(mean_p, mean_y, marker="o", label="model")
        top = max(max(mean_p), max(mean_y))
        ax.plot([0, top], [0, top], linestyle=":", color="grey", label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Calibration")
    ax.legend()
    return _save(fig, path)


def plot_feature_importance(pipeline: Pipeline, path: Path) -> Path:
    """Gain importance of the booster's top features (after encoding)."""
    booster = pipeline.steps[-1][1]
    gains = booster.get_booster().get_score(importance_type="gain") if isinstance(booster, XGBModel) else {}
    top = sorted(gains.items(), key=lambda kv: kv[1], reverse=True)[:TOP_FEATURES]
    fig, ax = plt.subplots(figsize=(7, max(3, 0.3 * len(top))))
    ax.barh([k for k, _ in reversed(top)], [v for _, v in reversed(top)])
    ax.set(xlabel="gain", title="Feature importance")
    return _save(fig, path)


def write_plots(
    pipeline: Pipeline, y: np.ndarray, pred: np.ndarray, baseline: np.ndarray, folder: Path
) -> list[Path]:
    """All diagnostic plots of one run into a folder; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y, dtype="float64")
    return [
        plot_roc(y, pred, baseline, folder / "roc.png"),
        plot_precision_recall(y, pred, folder / "precision_recall.png"),
        plot_calibration(y, pred, folder / "calibration.png"),
        plot_feature_importance(pipeline, folder / "feature_importance.png"),
    ]


# --- forecasts ------------------------------------------------------------------------------

FORECAST_PANELS = 4  # series shown in the backtest plot
FORECAST_ORIGINS = 3  # forecast origins drawn per series


def _baseline_columns(frame: pd.DataFrame) -> list[str]:
    return sorted(c for c in frame.columns if c.startswith("baseline") and c.endswith("_prediction"))


def plot_forecast_backtest(frame: pd.DataFrame, path: Path) -> Path:
    """Backtest: actuals and a few origins' forecast paths with their P10-P90 band, per series."""
    series = sorted(frame["series"].astype(str).unique())[:FORECAST_PANELS] if "series" in frame else []
    fig, axes = plt.subplots(max(len(series), 1), 1, figsize=(9, 2.6 * max(len(series), 1)), squeeze=False)
    for ax, name in zip(axes[:, 0], series, strict=False):
        rows = frame[frame["series"].astype(str) == name]
        when = "target_start_ts" if "target_start_ts" in rows else "target_ts"
        actual = rows.drop_duplicates(when).sort_values(when)
        ax.plot(pd.to_datetime(actual[when], unit="s"), actual["label"], color="black", lw=1, label="actual")
        origins = np.unique(rows["event_ts"])
        picks = origins[np.linspace(0, len(origins) - 1, min(FORECAST_ORIGINS, len(origins))).astype(int)]
        for i, origin in enumerate(picks):
            path_rows = rows[rows["event_ts"] == origin].sort_values(when)
            t = pd.to_datetime(path_rows[when], unit="s")
            ax.plot(t, path_rows["prediction"], color=f"C{i}", label="forecast" if i == 0 else None)
            if {"pred__lower", "pred__upper"} <= set(path_rows.columns):
                ax.fill_between(
                    t, path_rows["pred__lower"], path_rows["pred__upper"], color=f"C{i}", alpha=0.2
                )
            if "baseline_prediction" in path_rows:
                ax.plot(t, path_rows["baseline_prediction"], color=f"C{i}", ls=":",
                        label="seasonal naive" if i == 0 else None)  # fmt: skip
        ax.set(title=name)
        ax.legend(fontsize=7, loc="upper left")
    fig.autofmt_xdate()
    return _save(fig, path)


def plot_error_by_horizon(frame: pd.DataFrame, path: Path) -> Path:
    """Mean absolute error per horizon of the model and every baseline, and the interval coverage."""
    fig, (ax, cov) = plt.subplots(1, 2, figsize=(10, 4))
    if "horizon" in frame and len(frame):
        y = frame["label"].to_numpy("float64")
        scale = frame["scale"].to_numpy("float64") if "scale" in frame else np.ones(len(frame))
        by = frame["horizon"].to_numpy()
        hs = np.unique(by)
        for column in ["prediction", *_baseline_columns(frame)]:
            err = np.abs(y - frame[column].to_numpy("float64")) / scale
            name = "model" if column == "prediction" else column.removesuffix("_prediction")
            ax.plot(hs, [err[by == h].mean() for h in hs], marker=".", label=name)
        if {"pred__lower", "pred__upper"} <= set(frame.columns):
            lo, hi = frame["pred__lower"].to_numpy("float64"), frame["pred__upper"].to_numpy("float64")
            cov.plot(hs, [((y <= hi) & (y >= lo))[by == h].mean() for h in hs], marker=".", label="P10-P90")
            cov.plot(hs, [(y <= hi)[by == h].mean() for h in hs], marker=".", label="below P90")
            cov.axhline(0.8, ls=":", color="C0")
            cov.axhline(0.9, ls=":", color="C1")
        cov.set_ylim(0, 1.02)
    ax.set(xlabel="horizon (steps ahead)", ylabel="MAE / scale", title="Error by horizon")
    cov.set(xlabel="horizon (steps ahead)", ylabel="share of actuals", title="Interval coverage by horizon")
    ax.legend(fontsize=8)
    cov.legend(fontsize=8)
    return _save(fig, path)


def forecast_plots(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """The plots a forecaster looks at first, from a stored evaluation frame (ModelSpec.plots)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        plot_forecast_backtest(frame, folder / "forecast_backtest.png"),
        plot_error_by_horizon(frame, folder / "error_by_horizon.png"),
    ]


# --- outcome classifiers and revenue regressors (ModelSpec.plots hooks) ------------------------

LIFT_BINS = 10  # deciles


def plot_lift(y: np.ndarray, pred: np.ndarray, path: Path, bins: int = LIFT_BINS) -> Path:
    """Lift by predicted-score decile (top decile first) and cumulative gain, against random."""
    fig, (lift_ax, gain_ax) = plt.subplots(1, 2, figsize=(10, 4))
    y, pred = np.asarray(y, dtype="float64"), np.asarray(pred, dtype="float64")
    if len(y) and y.sum() > 0:
        order = np.argsort(-pred, kind="stable")
        groups = np.array_split(y[order], min(bins, len(y)))
        rate = float(y.mean())
        lift_ax.bar(np.arange(1, len(groups) + 1), [g.mean() / rate for g in groups])
        share = np.arange(1, len(y) + 1) / len(y)
        gain_ax.plot(np.r_[0.0, share], np.r_[0.0, np.cumsum(y[order]) / y.sum()], label="model")
    lift_ax.axhline(1.0, linestyle=":", color="grey", label="random")
    gain_ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="random")
    lift_ax.set(xlabel="score decile (1 = highest)", ylabel="positive rate / base rate", title="Lift")
    gain_ax.set(xlabel="share of population (by score)", ylabel="share of positives", title="Cumulative gain")
    lift_ax.legend()
    gain_ax.legend()
    return _save(fig, path)


def outcome_classifier_plots(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """Lift (with cumulative gain) and calibration from a stored evaluation frame (ModelSpec.plots).

    What a targeting user reads first: how much richer the top of the list is, and whether a
    score of 0.2 means one in five. AUC and PR-AUC are logged as metrics.
    """
    folder.mkdir(parents=True, exist_ok=True)
    y = frame["label"].to_numpy("float64")
    pred = frame["prediction"].to_numpy("float64")
    return [plot_lift(y, pred, folder / "lift.png"), plot_calibration(y, pred, folder / "calibration.png")]


def plot_predicted_vs_actual(
    y: np.ndarray, pred: np.ndarray, path: Path, baseline: np.ndarray | None = None
) -> Path:
    """Predicted against actual amounts on log1p axes (zeros stay visible), with the diagonal."""
    fig, ax = plt.subplots(figsize=(5, 5))
    y, pred = np.asarray(y, dtype="float64"), np.asarray(pred, dtype="float64")
    if baseline is not None:
        ax.scatter(np.log1p(np.clip(y, 0, None)), np.log1p(np.clip(baseline, 0, None)), s=6, alpha=0.3,
                   color="grey", label="baseline")  # fmt: skip
    ax.scatter(np.log1p(np.clip(y, 0, None)), np.log1p(np.clip(pred, 0, None)), s=6, alpha=0.5, label="model")
    top = float(np.log1p(max(np.max(y, initial=0.0), np.max(pred, initial=0.0), 1.0)))
    ax.plot([0, top], [0, top], linestyle=":", color="black", label="perfect")
    ax.set(xlabel="log(1 + actual)", ylabel="log(1 + predicted)", title="Predicted vs actual")
    ax.legend()
    return _save(fig, path)


def plot_revenue_lorenz(y: np.ndarray, pred: np.ndarray, path: Path) -> Path:
    """Share of the actual amount captured by the top entities, ordered by prediction and by actual."""
    fig, ax = plt.subplots(figsize=(5, 5))
    y, pred = np.clip(np.asarray(y, dtype="float64"), 0, None), np.asarray(pred, dtype="float64")
    if len(y) and y.sum() > 0:
        share = np.r_[0.0, np.arange(1, len(y) + 1) / len(y)]
        for name, order in (("model", np.argsort(-pred, kind="stable")), ("perfect", np.argsort(-y))):
            ax.plot(share, np.r_[0.0, np.cumsum(y[order]) / y.sum()], label=name)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="random")
    ax.set(xlabel="share of entities (by score)", ylabel="share of actual amount", title="Concentration")
    ax.legend()
    return _save(fig, path)


def revenue_plots(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """Predicted vs actual (log scale) and concentration curve from a stored evaluation frame."""
    folder.mkdir(parents=True, exist_ok=True)
    y = frame["label"].to_numpy("float64")
    pred = frame["prediction"].to_numpy("float64")
    base = frame["baseline_prediction"].to_numpy("float64") if "baseline_prediction" in frame else None
    return [
        plot_predicted_vs_actual(y, pred, folder / "predicted_vs_actual.png", base),
        plot_revenue_lorenz(y, pred, folder / "concentration.png"),
    ]


def plot_segment_profiles(profiles: pd.DataFrame, path: Path) -> Path:
    """Segment profiles: size and mean spend per segment, and each centroid's z-score per dimension.

    ``profiles`` is a segment profile table (columns segment, name, size, mean_spend and one
    ``z_<dimension>`` column per axis of the behaviour space).
    """
    z_columns = [c for c in profiles.columns if c.startswith("z_")]
    labels = [f"{s}: {n}" for s, n in zip(profiles["segment"], profiles["name"], strict=True)]
    height = max(3.0, 0.45 * len(profiles) + 1.5)
    fig, (sizes, spend, heat) = plt.subplots(
        1, 3, figsize=(13, height), gridspec_kw={"width_ratios": [1, 1, max(1, len(z_columns)) * 0.5]}
    )
    rows = np.arange(len(profiles))
    sizes.barh(rows, profiles["size"].to_numpy(dtype="float64"))
    sizes.set(yticks=rows, yticklabels=labels, xlabel="users", title="Segment size")
    sizes.invert_yaxis()
    spend.barh(rows, profiles["mean_spend"].to_numpy(dtype="float64"), color="tab:green")
    spend.set(yticks=rows, yticklabels=[], xlabel="mean spend", title="Mean spend")
    spend.invert_yaxis()
    values = profiles[z_columns].to_numpy(dtype="float64") if z_columns else np.zeros((len(profiles), 1))
    bound = max(float(np.abs(values).max()) if values.size else 1.0, 1e-9)
    image = heat.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    heat.set(
        xticks=np.arange(len(z_columns)),
        xticklabels=[c[2:] for c in z_columns],
        yticks=rows,
        yticklabels=[],
        title="Centroid (z-score)",
    )
    for (i, j), v in np.ndenumerate(values):
        heat.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=heat, fraction=0.05)
    return _save(fig, path)


# --- rankers (ModelSpec.plots hooks) ----------------------------------------------------------

HIT_RATE_KS = (1, 2, 3, 5, 10, 15, 20)


def _target_ranks(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Rank (from 1) of each query's first relevant row when rows are sorted by a score column.

    Ties keep row order, as in the ranking metrics; a query without a relevant row gets +inf.
    """
    codes, _ = pd.factorize(frame["query_id"])
    score = frame[column].to_numpy("float64")
    order = np.lexsort((np.arange(len(frame)), -score, codes))
    sorted_codes = codes[order]
    starts = np.r_[0, np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1]
    rank = np.arange(len(frame)) - np.repeat(starts, np.diff(np.r_[starts, len(frame)])) + 1
    best = np.full(int(codes.max()) + 1 if len(codes) else 0, np.inf)
    relevant = frame["label"].to_numpy("float64")[order] > 0
    np.minimum.at(best, sorted_codes[relevant], rank[relevant])
    return best


def plot_hit_rate_at_k(
    frame: pd.DataFrame,
    path: Path,
    names: dict[str, str],
    slice_column: str | None = None,
    ks: tuple[int, ...] = HIT_RATE_KS,
) -> Path:
    """HR@K by K of the model and each baseline (``names``: score column -> legend), one panel per slice.

    ``frame`` is a stored evaluation frame of a ranking model (query_id, label, the score columns).
    """
    groups: list[tuple[str, pd.DataFrame]] = [("all queries", frame)]
    if slice_column is not None and slice_column in frame.columns:
        groups += [
            (f"{slice_column}={v}", frame[frame[slice_column] == v])
            for v in sorted(frame[slice_column].unique())
        ]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 4), squeeze=False, sharey=True)
    for ax, (title, rows) in zip(axes[0], groups, strict=True):
        n_queries = rows["query_id"].nunique() if len(rows) else 0
        for column, name in names.items():
            if column not in rows.columns or n_queries == 0:
                continue
            ranks = _target_ranks(rows, column)
            ax.plot(ks, [float(np.mean(ranks <= k)) for k in ks], marker="o", label=name)
        ax.set(xlabel="K", title=f"{title} ({n_queries} queries)", ylim=(0, 1.02), xticks=list(ks))
        ax.grid(alpha=0.3)
    axes[0][0].set(ylabel="hit rate @ K")
    axes[0][0].legend()
    return _save(fig, path)


def plot_ranking_metrics_at_k(
    frame: pd.DataFrame, path: Path, names: dict[str, str], ks: tuple[int, ...] = (1, 5, 10, 20)
) -> Path:
    """NDCG, recall and hit rate @K by K of the model and each baseline (``names``: score column -> legend).

    ``frame`` is a stored evaluation frame of a ranking model (query_id, label, optional
    n_relevant, the score columns); values come from the metric registry's own definitions.
    """
    from tasks.models.metrics import ranking

    families = {"NDCG": ranking.ndcg_at, "recall": ranking.recall_at, "hit rate": ranking.hit_rate_at}
    base = {c: frame[c].to_numpy() for c in ("label", "query_id", "n_relevant") if c in frame.columns}
    ones = np.ones((1, len(frame)))
    fig, axes = plt.subplots(1, len(families), figsize=(4.5 * len(families), 4), squeeze=False)
    for ax, (family, factory) in zip(axes[0], families.items(), strict=True):
        for column, name in names.items():
            if column not in frame.columns or frame.empty:
                continue
            cols = {**base, "prediction": frame[column].to_numpy("float64")}
            ax.plot(ks, [float(factory(k)(cols, ones)[0]) for k in ks], marker="o", label=name)
        ax.set(xlabel="K", ylabel=f"{family} @ K", title=f"{family} @ K", xticks=list(ks))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    n_queries = frame["query_id"].nunique() if "query_id" in frame.columns else 0
    fig.suptitle(f"{n_queries} queries")
    axes[0][0].legend()
    return _save(fig, path)


# --- capacity plans (capacity_plan's ModelSpec.plots hook) -----------------------------------


def plot_capacity_backtest(frame: pd.DataFrame, path: Path) -> Path:
    """Per region: realised demand against the capacity allocated for it over the backtest.

    Each target hour shows its shortest-lead plan (the one that actually runs), the
    perfect-knowledge plan and the region's limit; red marks hours the demand exceeded the
    allocation before spill-over.
    """
    when = "target_start_ts" if "target_start_ts" in frame else "target_ts"
    regions = sorted(frame["region"].astype(str).unique()) if "region" in frame else []
    rows_n = max(len(regions), 1)
    fig, axes = plt.subplots(rows_n, 1, figsize=(10, 1.9 * rows_n), squeeze=False, sharex=True)
    for ax, region in zip(axes[:, 0], regions, strict=False):
        rows = frame[frame["region"].astype(str) == region].sort_values([when, "horizon"], kind="stable")
        latest = rows.drop_duplicates(when, keep="first")  # the smallest horizon per target hour
        t = pd.to_datetime(latest[when], unit="s")
        demand = latest["label"].to_numpy("float64")
        allocated = latest["prediction"].to_numpy("float64")
        ax.plot(t, demand, color="black", lw=1, label="demand")
        ax.plot(t, allocated, color="C0", lw=1, label="allocated")
        if "perfect_capacity" in latest:
            ax.plot(t, latest["perfect_capacity"], color="C2", lw=0.8, ls=":", label="perfect plan")
        if "capacity_limit" in latest:
            ax.plot(t, latest["capacity_limit"], color="grey", lw=0.8, ls="--", label="limit")
        short = demand > allocated + 1e-6
        ax.scatter(t[short], demand[short], color="red", s=6, zorder=3, label="over allocation")
        ax.set_ylabel(region)
        ax.set_ylim(bottom=0)
    axes[0, 0].legend(fontsize=7, loc="upper left", ncol=5)
    axes[0, 0].set_title("Allocated capacity vs realised demand (shortest-lead plan per hour)")
    fig.autofmt_xdate()
    return _save(fig, path)


def capacity_plots(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """The capacity plan's backtest plots from a stored evaluation frame (ModelSpec.plots)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [plot_capacity_backtest(frame, folder / "capacity_backtest.png")]
