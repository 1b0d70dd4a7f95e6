"""Benchmark: validate N rows of raw_ad_impressions over 30 partitions.

Run: `python -m tests.data.bench_quality N`.
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np

from tasks.quality import coerce_frame, validate_partitions
from tests.data.quality_frames import MAX_TS, good_frame


def main(rows: int) -> None:
    """Time coerce + validate for one table and print timing and peak RSS."""
    frame = good_frame("raw_ad_impressions", rows, days=30)
    rng = np.random.default_rng(7)
    broken = rng.choice(rows, size=rows // 100, replace=False)
    frame.loc[broken, "position"] = 99  # 1% bad rows: quarantined, partitions accepted
    validate_partitions("raw_ad_impressions", frame.head(100), max_ts=MAX_TS)  # warm GX
    start = time.perf_counter()
    typed, cast_bad = coerce_frame("raw_ad_impressions", frame)
    verdicts = validate_partitions("raw_ad_impressions", typed, max_ts=MAX_TS, cast_failures=cast_bad)
    elapsed = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    accepted = sum(v.accepted for v in verdicts.values())
    bad = sum(len(v.bad_rows) for v in verdicts.values())
    print(
        f"{rows} rows, {len(verdicts)} partitions ({accepted} accepted, {bad} bad rows): "
        f"{elapsed:.2f} s, peak RSS {peak_mib:.0f} MiB"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
