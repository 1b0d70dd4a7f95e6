"""The version-controlled suite files: one per raw table, loadable by GX, documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.quality.generate import SUITE_DIR, render_suite
from tasks.quality.suites import canonical_hash, load_suite
from tasks.schema import RAW_TABLES

TABLES = sorted(RAW_TABLES)


def test_one_suite_file_per_raw_table() -> None:
    """Every raw table has exactly one suite file and there are no strays."""
    assert sorted(p.stem for p in SUITE_DIR.glob("raw_*.json")) == TABLES


@pytest.mark.parametrize("table", TABLES)
def test_suite_file_matches_generator(table: str) -> None:
    """The committed file is what tasks/quality/generate.py renders (regenerate and commit)."""
    assert (SUITE_DIR / f"{table}.json").read_text(encoding="utf-8") == render_suite(table)


@pytest.mark.parametrize("table", TABLES)
def test_suite_loads_with_gx_and_is_documented(table: str) -> None:
    """GX deserialises every expectation; each has a note; meta holds max_bad_share."""
    loaded = load_suite(table)
    raw = json.loads((SUITE_DIR / f"{table}.json").read_text(encoding="utf-8"))
    assert loaded.name == table
    assert len(loaded.suite.expectations) == len(raw["expectations"])
    assert all(e.notes for e in loaded.suite.expectations)
    assert 0 < loaded.max_bad_share <= 0.05
    assert loaded.sha256 == canonical_hash(raw)
    by_type = {e["type"]: e["kwargs"] for e in raw["expectations"]}
    assert by_type["expect_table_row_count_to_be_between"]["min_value"] == 1
    columns = by_type["expect_table_columns_to_match_set"]
    assert columns["exact_match"] is True
    assert set(columns["column_set"]) == {c.name for c in RAW_TABLES[table].columns}
    not_null = {
        e["kwargs"]["column"]
        for e in raw["expectations"]
        if e["type"] == "expect_column_values_to_not_be_null" and "mostly" not in e["kwargs"]
    }
    assert not_null == {c.name for c in RAW_TABLES[table].columns if not c.nullable}


def test_catalogue_tables_are_stricter() -> None:
    """Catalogue tables tolerate fewer bad rows than event tables."""
    assert load_suite("raw_products").max_bad_share < load_suite("raw_ad_impressions").max_bad_share


def test_readme_documents_mostly_thresholds() -> None:
    """expectations/README.md names every soft (mostly < 1) rule's threshold."""
    readme = (Path(SUITE_DIR) / "README.md").read_text(encoding="utf-8")
    for table in TABLES:
        for e in json.loads(render_suite(table))["expectations"]:
            if "mostly" in e["kwargs"]:
                assert f"mostly={e['kwargs']['mostly']}" in readme
