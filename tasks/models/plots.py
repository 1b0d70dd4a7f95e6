"""Diagnostic plots of a trained binary classifier, written as PNG files (matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; safe in workers and threads

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve
from sklearn.pipeline import Pipeline

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
    gains = booster.get_booster().get_score(importance_type="gain") if hasattr(booster, "get_booster") else {}
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
