"""Monitoring benchmark: feature drift of a model with 50 inputs over 1,000,000 scored rows.

    python -m tests.benchmarks.bench_monitoring [--quick]

``tasks.monitoring.compare_frame`` (PSI, Jensen–Shannon and normalised Wasserstein per feature,
null shares, verdicts) against a plain numpy computation of the same three statistics from the
same reference profile on the same rows (searchsorted + bincount over the reference bins,
np.quantile for the sketch), with no null handling beyond dropping NaN and no results objects.
A second case has 40 numeric and 10 categorical inputs (ours only). Each run is its own process;
the data are generated in it (seeded, untimed). Peak memory: the process's ``ru_maxrss`` (data
included) and tracemalloc's peak over a second, untimed pass (what the comparison allocates on
top of the data). ``--quick``: 100,000 rows, one run.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from tests.benchmarks import common
from tests.benchmarks.common import Params, log, med, mib, table

MODULE = "tests.benchmarks.bench_monitoring"
FEATURES = 50
REFERENCE_ROWS = 200_000
CATEGORIES = [f"c{i:02d}" for i in range(20)]
TARGET_RATIO = 2.0
TARGET_S = 10.0


def make_data(rows: int, categorical: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference (training) and current (scored) frames; every fifth numeric input is scaled by 1.6."""
    rng = np.random.default_rng(seed)

    def frame(n: int, shifted: bool) -> pd.DataFrame:
        columns: dict[str, Any] = {}
        for i in range(FEATURES - categorical):
            values = rng.gamma(2.0 + i % 5, 1.0 + i / 10, n)
            if shifted and i % 5 == 0:
                values = values * 1.6
            values[rng.random(n) < 0.01] = np.nan  # 1 % missing: the null path runs too
            columns[f"num_{i:02d}"] = values
        for j in range(categorical):
            p = np.linspace(1.0, 2.0 if shifted and j % 2 else 1.0, len(CATEGORIES))
            columns[f"cat_{j:02d}"] = pd.Series(rng.choice(CATEGORIES, n, p=p / p.sum()), dtype="str")
        return pd.DataFrame(columns)

    return frame(REFERENCE_ROWS, shifted=False), frame(rows, shifted=True)


def numpy_statistics(profile: Any, current: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    """PSI, Jensen–Shannon (natural log) and normalised Wasserstein per numeric column, plain numpy."""
    out = {}
    eps = 1e-4
    for name, ref in profile.columns.items():
        x = current[name].to_numpy()
        x = x[~np.isnan(x)]
        edges = np.asarray(ref.edges)
        counts = np.bincount(np.searchsorted(edges, x, side="left"), minlength=len(edges) + 1)
        c = counts / len(x)
        r = np.asarray(ref.shares)
        r_e, c_e = np.where(r == 0, eps, r), np.where(c == 0, eps, c)
        psi = float(np.sum((r_e - c_e) * np.log(r_e / c_e)))
        m = (r + c) / 2
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 · log(0) terms are masked out
            kl_r = np.sum(np.where(r > 0, r * np.log(np.where(r > 0, r, 1) / m), 0.0))
            kl_c = np.sum(np.where(c > 0, c * np.log(np.where(c > 0, c, 1) / m), 0.0))
        js = float(np.sqrt((kl_r + kl_c) / 2))
        q = np.quantile(x, (np.arange(len(ref.quantiles)) + 0.5) / len(ref.quantiles))
        w = float(np.mean(np.abs(np.asarray(ref.quantiles) - q)) / max(ref.std, 0.001))
        out[name] = (psi, js, w)
    return out


def _measure(run: Callable[[], Any]) -> tuple[float, float, Any]:
    """(seconds, tracemalloc peak MiB of a second pass, result of the timed pass)."""
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    tracemalloc.start()
    run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20, result


def case_ours(p: Params) -> dict[str, Any]:
    """tasks.monitoring: profile the reference (training side), then compare the current frame."""
    from tasks.monitoring import compare_frame, profile_frame

    reference, current = make_data(int(p["rows"]), int(p["categorical"]))
    data_mib = common.rss_mib()
    start = time.perf_counter()
    profile = profile_frame(reference)
    profile_s = time.perf_counter() - start
    seconds, extra, report = _measure(lambda: compare_frame(profile, current))
    return {
        "seconds": seconds,
        "profile_s": profile_s,
        "extra_mib": extra,
        "data_rss_mib": data_mib,
        "drifted": len(report.drifted()),
        "status": report.status,
        "rows": len(current),
    }


def case_numpy(p: Params) -> dict[str, Any]:
    """The same three statistics in plain numpy, from the same reference profile."""
    from tasks.monitoring import compare_frame, profile_frame

    reference, current = make_data(int(p["rows"]), 0)
    data_mib = common.rss_mib()
    profile = profile_frame(reference)
    seconds, extra, stats = _measure(lambda: numpy_statistics(profile, current))
    # The same numbers as ours (checked here, outside the timings).
    report = compare_frame(profile, current)
    ours = {(r.feature, r.statistic): r.value for r in report.results}
    worst = 0.0
    for name, (psi, js, w) in stats.items():
        for statistic, value in (("psi", psi), ("jensen_shannon", js), ("wasserstein_norm", w)):
            mine = ours[(name, statistic)]
            assert mine is not None
            worst = max(worst, abs(mine - value) / max(abs(value), 1e-12))
    return {"seconds": seconds, "extra_mib": extra, "data_rss_mib": data_mib, "max_rel_diff": worst}


CASES = {"ours": case_ours, "numpy": case_numpy}


def main(argv: list[str]) -> None:
    """Run both cases (median of 3 runs each) and write results/monitoring.md."""
    quick = "--quick" in argv
    rows = 100_000 if quick else 1_000_000
    runs = 1 if quick else 3
    started = time.perf_counter()
    numeric = {"rows": rows, "categorical": 0}
    ours = common.repeat(MODULE, "ours", numeric, runs, log=log)
    plain = common.repeat(MODULE, "numpy", numeric, runs, log=log)
    mixed = common.repeat(MODULE, "ours", {"rows": rows, "categorical": 10}, runs, log=log)
    ratio = med(ours, "seconds") / med(plain, "seconds")

    def cells(label: str, results: list[dict[str, Any]]) -> list[str]:
        return [
            label,
            f"{med(results, 'seconds'):.2f}",
            mib(med(results, "peak_rss_mib")),
            mib(med(results, "data_rss_mib")),
            f"{med(results, 'extra_mib'):.0f}",
        ]

    header = ["method", "s (median)", "peak RSS MiB", "RSS with the data MiB", "tracemalloc peak MiB"]
    body = [
        cells("tasks.monitoring.compare_frame, 50 numeric", ours),
        cells("plain numpy, same statistics, 50 numeric", plain),
        cells("tasks.monitoring.compare_frame, 40 numeric + 10 categorical", mixed),
    ]
    seconds = med(ours, "seconds")
    text = "\n".join(
        [
            "## Monitoring (bench_monitoring)",
            "",
            f"Feature drift of a model with {FEATURES} inputs: a reference profile of "
            f"{REFERENCE_ROWS:,} training rows against {rows:,} scored rows (1 % missing values, every "
            "fifth numeric input scaled by 1.6). `compare_frame` computes per feature PSI, Jensen–Shannon "
            "distance and normalised Wasserstein distance over the reference's bins and quantile sketch, "
            "null shares and the verdicts; the plain numpy run computes the same three statistics from "
            "the same profile on the same rows (searchsorted + bincount, np.quantile). Categorical inputs: "
            f"strings, {len(CATEGORIES)} categories (frequencies, PSI, JS, L-infinity, chi-square). "
            f"Median of {runs} runs, each in its own process; tracemalloc peak = what the comparison "
            "allocates on top of the data (second, untimed pass).",
            "",
            table(header, body),
            "",
            f"Profiling the {REFERENCE_ROWS:,} reference rows (training side): "
            f"{med(ours, 'profile_s'):.2f} s. Features drifted: {ours[0]['drifted']} of {FEATURES} "
            f"(verdict {ours[0]['status']}). Largest relative difference between our statistics and the "
            f"numpy run's: {max(r['max_rel_diff'] for r in plain):.1e}.",
            "",
            "Against the targets:",
            "",
            f"- time / plain numpy = {ratio:.2f}× (target ≤ {TARGET_RATIO:g}×: "
            f"{'met' if ratio <= TARGET_RATIO else 'NOT met'})",
            f"- {seconds:.2f} s for {FEATURES} inputs × {rows:,} rows (target < {TARGET_S:g} s: "
            f"{'met' if seconds < TARGET_S else 'NOT met'})",
            "",
            f"Section wall time {(time.perf_counter() - started) / 60:.1f} min.",
            "",
        ]
    )
    common.write_section("monitoring", text)
    print(text)


if __name__ == "__main__":
    if not common.case_main(CASES, sys.argv):
        main(sys.argv)
