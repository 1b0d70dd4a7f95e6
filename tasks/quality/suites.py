"""Load, check, hash and cache the version-controlled suite files under expectations/."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.quality.columns import HELPER_COLUMNS
from tasks.quality.errors import QualityError

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite

SUITE_DIR = Path(__file__).resolve().parents[2] / "expectations"
BATCH_TYPES = frozenset(
    {
        "expect_table_row_count_to_be_between",
        "expect_table_columns_to_match_set",
        "expect_column_values_to_be_unique",
    }
)
_CACHE: dict[str, LoadedSuite] = {}


@dataclass(frozen=True)
class LoadedSuite:
    """A parsed suite with its file hash and the gate's reading of its meta."""

    name: str
    path: Path
    sha256: str
    raw: dict[str, Any]
    suite: ExpectationSuite
    max_bad_share: float


def canonical_hash(document: Any) -> str:
    """sha256 of a JSON document in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def expectation_columns(kwargs: dict[str, Any]) -> list[str]:
    """The columns an expectation reads (column, column_A/B or column_list)."""
    cols = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
    return cols + list(kwargs.get("column_list", []))


def user_columns(kwargs: dict[str, Any]) -> str | None:
    """The user's columns an expectation reads, comma-joined, helper columns left out."""
    cols = [c for c in expectation_columns(kwargs) if c not in HELPER_COLUMNS]
    return ",".join(cols) or None


def is_soft(config: dict[str, Any]) -> bool:
    """True when a row-level expectation has mostly < 1 (rows kept, batch judged as a whole)."""
    return float(config.get("kwargs", {}).get("mostly", 1.0)) < 1.0


def load_suite(table: str, suite_dir: Path | None = None) -> LoadedSuite:
    """Read and check expectations/<table>.json; raise QualityError if missing or invalid."""
    path = (suite_dir or SUITE_DIR) / f"{table}.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise QualityError(f"{table}: suite file {path} cannot be read: {exc}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QualityError(f"{table}: suite file {path} is not valid JSON: {exc}") from exc
    digest = canonical_hash(raw)
    key = f"{path}:{digest}"
    if key in _CACHE:
        return _CACHE[key]
    loaded = _parse(table, path, raw, digest)
    _CACHE[key] = loaded
    return loaded


def _parse(table: str, path: Path, raw: Any, digest: str) -> LoadedSuite:
    """Deserialise with GX's own schema and refuse anything GX would silently drop."""
    from great_expectations.core import ExpectationSuite
    from great_expectations.core.expectation_suite import expectationSuiteSchema

    if not isinstance(raw, dict) or not isinstance(raw.get("expectations"), list):
        raise QualityError(f"{table}: suite file {path} has no expectations list")
    try:
        suite = ExpectationSuite(**expectationSuiteSchema.load(raw))
    except Exception as exc:  # GX raises marshmallow/pydantic/GX errors alike
        raise QualityError(f"{table}: suite file {path} is not a valid GX suite: {exc}") from exc
    # ExpectationSuite() logs and DROPS an invalid expectation instead of raising.
    if len(suite.expectations) != len(raw["expectations"]):
        raise QualityError(
            f"{table}: suite file {path} has {len(raw['expectations'])} expectations but GX "
            f"accepted only {len(suite.expectations)}; fix the invalid ones"
        )
    if suite.name != table:
        raise QualityError(f"{table}: suite file {path} is named {suite.name!r}")
    share = suite.meta.get("max_bad_share")
    if not isinstance(share, (int, float)) or not 0.0 <= float(share) <= 1.0:
        raise QualityError(f"{table}: suite meta.max_bad_share must be in [0, 1], got {share!r}")
    types = {e["type"] for e in raw["expectations"]}
    for needed in ("expect_table_row_count_to_be_between", "expect_table_columns_to_match_set"):
        if needed not in types:
            raise QualityError(f"{table}: suite {path} lacks {needed}")
    return LoadedSuite(table, path, digest, raw, suite, float(share))
