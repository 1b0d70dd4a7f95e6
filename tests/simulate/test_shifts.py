"""Planted shifts: each moves the data it says from its day on, and is recorded as oracle truth."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.simulate import SimConfig
from tasks.simulate.config import make_shift
from tests.simulate.test_simulate import MemorySink, _run

DAY_S = 86_400
BASE = SimConfig(users=1500, streamers=60, days=10, seed=17)
FROM = BASE.start + dt.timedelta(days=5)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def baseline() -> MemorySink:
    return _run(BASE)[0]


def _shifted(kind: str, **knobs: float | str) -> MemorySink:
    shift = make_shift(kind, FROM, **knobs)  # type: ignore[arg-type]
    return _run(dataclasses.replace(BASE, shifts=(shift,)))[0]


def _split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of the UTC days before and after the shift's first day (users live by their local
    day, so the first day's UTC edges mix both)."""
    first = BASE.start_epoch + 5 * DAY_S
    return frame[frame["event_ts"] < first - DAY_S], frame[frame["event_ts"] >= first + DAY_S]


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return a.reset_index(drop=True).equals(b.reset_index(drop=True))


def test_traffic_shift_doubles_one_regions_sessions_from_its_day(baseline: MemorySink) -> None:
    shifted = _shifted("traffic", target="eu")
    before, after = _split(shifted.table("raw_watch_sessions"))
    base_before, base_after = _split(baseline.table("raw_watch_sessions"))
    assert _same_rows(before, base_before)  # nothing changes before the shift
    ratio = after["region"].value_counts() / base_after["region"].value_counts()
    assert 1.7 < ratio["eu"] < 2.3
    others = ratio.drop("eu")
    assert others.between(0.85, 1.15).all(), others

    # The region's growth from before to after the shift: twice the unshifted platform's growth.
    def growth(frame_before: pd.DataFrame, frame_after: pd.DataFrame) -> float:
        per_day = [
            f[f["region"] == "eu"].groupby(f["event_ts"] // DAY_S).size().mean()
            for f in (frame_before, frame_after)
        ]
        return float(per_day[1] / per_day[0])

    assert 1.7 < growth(before, after) / growth(base_before, base_after) < 2.3
    record = shifted.table("oracle_shifts")
    assert record[["kind", "from_date"]].values.tolist() == [["traffic", FROM]]
    assert json.loads(record["params"].iloc[0]) == {"size": 2.0, "target": "eu"}


def test_interests_shift_moves_what_users_watch(baseline: MemorySink) -> None:
    shifted = _shifted("interests", size=0.5, target="music")
    before, after = _split(shifted.table("raw_watch_sessions"))
    base_before, base_after = _split(baseline.table("raw_watch_sessions"))
    assert _same_rows(before, base_before)
    share = after["category"].value_counts(normalize=True)
    base_share = base_after["category"].value_counts(normalize=True)
    assert share["music"] > 1.4 * base_share["music"]
    others = share.drop("music").sort_index()
    assert (others < base_share.drop("music").sort_index()).all()
    # The truth keeps the interests users were drawn with; the shift is in oracle_shifts.
    assert _same_rows(shifted.table("oracle_users"), baseline.table("oracle_users"))


def test_prices_shift_raises_what_orders_cost(baseline: MemorySink) -> None:
    shifted = _shifted("prices", size=1.5)
    before, after = _split(shifted.table("raw_orders"))
    base_before, base_after = _split(baseline.table("raw_orders"))
    assert _same_rows(before, base_before)
    by_product = after.groupby("product_id")["unit_price"].last()
    base_by_product = base_after.groupby("product_id")["unit_price"].last()
    common = by_product.index.intersection(base_by_product.index)
    assert len(common) > 5
    assert np.allclose(by_product[common], (base_by_product[common] * 1.5).round(2), atol=0.011)


def test_ad_mix_shift_gives_one_category_more_impressions(baseline: MemorySink) -> None:
    shifted = _shifted("ad-mix", target="music", size=5.0)
    ads = shifted.table("raw_ads").set_index("ad_id")["ad_category"]

    def music_share(sink: MemorySink) -> float:
        _, after = _split(sink.table("raw_ad_impressions"))
        return float((after["ad_id"].map(ads) == "music").mean())

    assert music_share(shifted) > 1.8 * music_share(baseline)


def test_a_shift_needs_a_known_kind_and_target() -> None:
    with pytest.raises(ValueError, match="unknown shift"):
        make_shift("weather", FROM)
    with pytest.raises(ValueError, match="target must be one of"):
        make_shift("traffic", FROM, target="mars")
    with pytest.raises(ValueError, match="out of range"):
        make_shift("interests", FROM, size=1.5)
    assert make_shift("traffic", FROM).params() == {"size": 2.0, "target": "na"}


def test_no_production_code_reads_the_shift_truth() -> None:
    # Only the simulator writes oracle_shifts; besides tests, only the evaluation-time oracle plan
    # of capacity_plan reads it (traffic_truth, called by training's evaluation step alone).
    # SQL-level checks of what feature builds and training read are in tests/featurestore and
    # tests/integration.
    evaluation_oracle = REPO / "tasks" / "models" / "families" / "traffic_truth.py"
    readers = []
    for path in [*REPO.joinpath("tasks").rglob("*.py"), *REPO.joinpath("flows").rglob("*.py")]:
        if (
            "simulate" in path.relative_to(REPO).parts
            or path.name == "schema.py"
            or path == evaluation_oracle
        ):
            continue
        if re.search(r"oracle_shifts", path.read_text()):
            readers.append(path)
    assert readers == []
