"""Every catalog model on the demo platform: each gate metric against every baseline, and the oracle.

    python -m tests.benchmarks.bench_catalog [--home PATH]

Without ``--home`` it runs ``liveyield demo`` (5,000 users, 28 days) in a temporary home first;
with it, it reads the MLflow runs of an existing home where the pipeline already ran. For each
model the latest training run is read: the model's value of every metric of its spec, each
baseline's value on the same holdout, the gate verdict, and the oracle report where the
simulator has a truth for the model. Writes results/catalog.md.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.benchmarks import common


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.4g}"


def _table(client: MlflowClient) -> str:
    from tasks.models.catalog import MODELS
    from tasks.models.evaluation import baseline_names

    lines = [
        "| model | kind | metric | model | baselines | gate |",
        "|---|---|---|---|---|---|",
    ]
    oracle_lines = ["| model | oracle report |", "|---|---|"]
    for name, spec in sorted(MODELS.items()):
        experiment = client.get_experiment_by_name(name)
        runs = [] if experiment is None else client.search_runs([experiment.experiment_id], max_results=1)
        if not runs:
            lines.append(f"| {name} | {spec.kind} | – | not trained | – | – |")
            continue
        metrics = runs[0].data.metrics
        verdict = _verdict(client, name)
        labels = list(baseline_names(spec))
        for metric in spec.metrics:
            others = [metrics.get("baseline__" + metric)]
            others += [metrics.get(f"baseline_{i}__{metric}") for i in range(1, len(labels))]
            against = ", ".join(
                f"{str(label).removeprefix('column:')} {_fmt(v)}"
                for label, v in zip(labels, others, strict=True)
            )
            lines.append(
                f"| {name} | {spec.kind} | {metric} | {_fmt(metrics.get(metric))} | {against} | {verdict} |"
            )
            verdict = ""  # once per model
        oracle = {k.removeprefix("oracle__"): v for k, v in metrics.items() if k.startswith("oracle__")}
        if oracle:
            shown = ", ".join(
                f"{k} {_fmt(v)}" for k, v in sorted(oracle.items()) if k not in ("n", "coverage")
            )
            oracle_lines.append(f"| {name} | {shown} |")
    return "\n".join(lines) + "\n\nThe simulator's truth (evaluation only):\n\n" + "\n".join(oracle_lines)


def _verdict(client: MlflowClient, name: str) -> str:
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        return "not registered"
    latest = max(versions, key=lambda v: int(v.version))
    return f"v{latest.version}: {latest.tags.get('gate_verdict', '?')}"


def main(argv: list[str]) -> int:
    """Run (or read) the demo pipeline and write the catalog section."""
    home = Path(argv[argv.index("--home") + 1]) if "--home" in argv else None
    with tempfile.TemporaryDirectory(prefix="ly-catalog-") as tmp:
        if home is None:
            home = Path(tmp) / "home"
            env = {**os.environ, "LIVEYIELD_HOME": str(home)}
            env.pop("LIVEYIELD_DB_URL", None)
            env.pop("MLFLOW_TRACKING_URI", None)
            common.log("running liveyield demo (5,000 users, 28 days)")
            subprocess.run([sys.executable, "-m", "flows.cli", "demo"], cwd=tmp, env=env, check=True)
        os.environ["LIVEYIELD_HOME"] = str(home)
        from tasks.settings import get_settings

        client = MlflowClient(get_settings().mlflow_tracking_uri)
        body = _table(client)
    path = common.write_section(
        "catalog",
        "## Every catalog model on the demo platform\n\n"
        "5,000 users, 312 streamers, 28 days, seed 7, as of 2026-02-02 00:00 UTC: the demo. Each "
        "model's holdout value of every metric in its spec, beside each baseline's value on the same "
        "holdout (baselines named as in the spec: base_rate, or the label-frame column holding the "
        "naive forecast, popularity, last-7-days value…), and the gate verdict of the latest version.\n\n"
        + body,
    )
    common.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
