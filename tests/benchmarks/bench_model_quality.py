"""Model quality of the ad models on the demo simulator, against the lifecycle issue's targets.

    python -m tests.benchmarks.bench_model_quality [--quick]

Builds the demo platform (5,000 users, 312 streamers, 28 days, seed 7; --quick: 800 users,
14 days), trains ad_ctr and ad_cvr as the train-model flow does, and reports holdout AUC
against the oracle AUC of the simulator's true probabilities, ECE, normalised entropy,
predicted/observed ratio and the paired-bootstrap CI of the log-loss gain over the base rate.
Quality does not depend on the backend, so this runs on SQLite only.
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
from pathlib import Path

from tasks.db import make_engine
from tasks.models.catalog import get_spec
from tasks.models.evaluation import baseline_predictions, bootstrap_delta, evaluate, oracle_report, predict
from tasks.models.training import build_training_set, fit_candidate
from tasks.settings import get_settings
from tasks.warehouse import upgrade_schema
from tests.benchmarks import common
from tests.models.warehouse import START, build_warehouse

TARGETS = {"ratio": 0.97, "ece": 0.01, "normalized_entropy": 1.0}


def _row(name: str, engine, as_of: dt.datetime) -> list[object]:  # type: ignore[no-untyped-def]
    spec = get_spec(name)
    trained = fit_candidate(spec, build_training_set(engine, spec, as_of))
    holdout = trained.holdout
    y = holdout["label"].to_numpy()
    pred = predict(spec, trained.pipeline, holdout)
    base = baseline_predictions(spec, trained.train, holdout)
    ev = evaluate(spec, y, pred, holdout[[]]).metrics
    base_ev = evaluate(spec, y, base, holdout[[]]).metrics
    oracle = oracle_report(engine, spec, holdout, pred=pred)
    lo, _point, hi = bootstrap_delta(spec, "log_loss", y, pred, base, n_boot=500, confidence=0.95, seed=7)
    ratio = oracle.get("auc_ratio", float("nan"))
    return [
        name,
        f"{len(trained.train):,} / {len(trained.valid):,} / {len(holdout):,}",
        f"{ev['auc']:.3f}",
        f"{oracle.get('oracle_auc', float('nan')):.3f}",
        f"{ratio:.3f} ({'met' if ratio >= TARGETS['ratio'] else 'not met'})",
        f"{ev['ece']:.4f} ({'met' if ev['ece'] <= TARGETS['ece'] else 'not met'})",
        f"{ev['normalized_entropy']:.3f} ({'met' if ev['normalized_entropy'] < 1 else 'not met'})",
        f"{ev['pred_obs_ratio']:.2f}",
        f"{ev['log_loss']:.4f} vs {base_ev['log_loss']:.4f}",
        f"[{lo:+.4f}, {hi:+.4f}] ({'significant' if hi < 0 else 'not significant'})",
    ]


def main(argv: list[str]) -> None:
    """Build the platform, train both ad models, write the results section."""
    quick = "--quick" in argv
    users, streamers, days = (800, 60, 14) if quick else (5000, 312, 28)
    with tempfile.TemporaryDirectory(prefix="ly-quality-") as tmp:
        home = Path(tmp)
        settings = get_settings(
            {"LIVEYIELD_HOME": str(home), "LIVEYIELD_DB_URL": f"sqlite:///{home / 'w.db'}"}
        )
        engine = make_engine(settings.db_url)
        upgrade_schema(engine)
        build_warehouse(settings, engine, users=users, streamers=streamers, days=days, seed=7)
        as_of = dt.datetime.combine(START + dt.timedelta(days=days), dt.time(), dt.UTC)
        rows = [_row(name, engine, as_of) for name in ("ad_ctr", "ad_cvr")]
        engine.dispose()
    header = [
        "model", "train / valid / holdout", "AUC", "oracle AUC", "AUC ÷ oracle (≥ 0.97)", "ECE (≤ 0.01)",
        "NE (< 1)", "pred/obs", "log loss vs base rate", "95 % CI of the log-loss delta",
    ]  # fmt: skip
    text = "\n".join(
        [
            "## Model quality: ad_ctr and ad_cvr on the demo simulator",
            "",
            f"{users:,} users, {streamers} streamers, {days} days, seed 7; as_of = end of the simulated "
            f"period; label windows of 21 days (ad_ctr) and 28 days (ad_cvr), 70/15/15 split by event "
            f"time. One run (training is "
            f"deterministic for a seed).",
            "",
            common.table(header, rows),
            "",
            "The oracle AUC scores the holdout with the simulator's true click/convert probabilities: "
            "the ceiling any model of the observed data can approach. The click model's main driver "
            "is a user's latent interest in the ad's category, which the features only see through "
            "28 days of watch shares per category, hence the gap to the 0.97 target. ad_cvr learns "
            "from the few clicks only (about one in thirty impressions).",
        ]
    )
    common.write_section("model_quality", text)
    print(text)


if __name__ == "__main__":
    main(sys.argv)
