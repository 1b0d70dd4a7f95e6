"""Every catalog model on the demo platform: each gate metric against every baseline, and the oracle.

    python -m tests.benchmarks.bench_catalog [--home PATH]

Without ``--home`` it runs ``liveyield demo`` (5,000 users, 28 days from 2026-01-05) in a temporary
home first, and the same demo with a second seed in another; with it, it reads the MLflow runs of
an existing home where the pipeline already ran. For each model the latest training run is read:
the model's value of every metric of its spec, each baseline's value on the same holdout, the gate
verdict, and the oracle report where the simulator has a truth for the model. A second table gives
each model's gate verdict and primary metric under both seeds, so a verdict that hangs on one
draw of the platform shows. Writes results/catalog.md.
"""

from __future__ import annotations

import math
import os
import re
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


def _verdict(client: MlflowClient, name: str, *, undecided: bool = False) -> str:
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        return "not registered"
    latest = max(versions, key=lambda v: int(v.version))
    verdict = f"v{latest.version}: {latest.tags.get('gate_verdict', '?')}"
    found = re.search(r"(\d+) undecided", latest.tags.get("gate_reason", ""))
    return f"{verdict} ({found.group(1)} undecided)" if undecided and found else verdict


SEEDS = (7, 8)  # the demo's seed, and a second draw of the same platform
START = "2026-01-05"  # a pinned period, so that reruns compare


def _demo(folder: Path, seed: int) -> Path:
    """Run `liveyield demo --seed SEED` over the pinned period in a fresh home; return the home."""
    home = folder / f"home-{seed}"
    env = {**os.environ, "LIVEYIELD_HOME": str(home)}
    for name in ("LIVEYIELD_DB_URL", "MLFLOW_TRACKING_URI", "LIVEYIELD_PSEUDONYM_KEY"):
        env.pop(name, None)
    common.log(f"running liveyield demo (5,000 users, 28 days from {START}, seed {seed})")
    command = [sys.executable, "-m", "flows.cli", "demo", "--start", START, "--seed", str(seed)]
    subprocess.run(command, cwd=folder, env=env, check=True)
    return home


def _client(home: Path) -> MlflowClient:
    from tasks.settings import get_settings

    return MlflowClient(get_settings({"LIVEYIELD_HOME": str(home)}).mlflow_tracking_uri)


def _by_seed(clients: dict[int, MlflowClient]) -> str:
    """Gate verdict and primary metric of every model under each seed."""
    from tasks.models.catalog import MODELS

    seeds = list(clients)
    head = " | ".join(f"seed {s}: gate | seed {s}: primary" for s in seeds)
    lines = [f"| model | {head} |", "|---|" + "---|---|" * len(seeds)]
    for name, spec in sorted(MODELS.items()):
        cells = []
        for client in clients.values():
            experiment = client.get_experiment_by_name(name)
            runs = [] if experiment is None else client.search_runs([experiment.experiment_id], max_results=1)
            value = runs[0].data.metrics.get(spec.primary_metric) if runs else None
            cells += [_verdict(client, name, undecided=True), f"{spec.primary_metric} {_fmt(value)}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run (or read) the demo pipeline and write the catalog section."""
    home = Path(argv[argv.index("--home") + 1]) if "--home" in argv else None
    with tempfile.TemporaryDirectory(prefix="ly-catalog-") as tmp:
        if home is None:
            clients = {seed: _client(_demo(Path(tmp), seed)) for seed in SEEDS}
        else:
            clients = {SEEDS[0]: _client(home)}
        body = _table(clients[SEEDS[0]])
        seeds = _by_seed(clients)
    path = common.write_section(
        "catalog",
        "## Every catalog model on the demo platform\n\n"
        f"5,000 users, 312 streamers, 28 days from {START}, seed {SEEDS[0]}: the demo over a pinned "
        "period. Each model's holdout value of every metric in its spec, beside each baseline's value "
        "on the same holdout (baselines named as in the spec: base_rate, or the label-frame column "
        "holding the naive forecast, popularity, last-7-days value…), and the gate verdict of the "
        "latest version.\n\n"
        + body
        + "\n\n### Gate verdicts under a second seed\n\nThe same platform drawn with each seed: "
        "'undecided' counts value thresholds whose 95 % interval straddles the bound (they do not "
        "block promotion; the gate report says how many holdout units would decide them).\n\n" + seeds,
    )
    common.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
