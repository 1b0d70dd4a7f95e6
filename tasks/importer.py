"""Bring your own data: read a CSV or Parquet file, map its columns onto a raw table, land it.

A mapping file (YAML) translates a foreign schema; without one the file must already carry
the raw table's columns. Either way the rows then go through the same landing zone and
data-quality gate as simulated data. Raw user identifiers (``user_id``) are pseudonymised
here, and they and any ``email`` go to the identity table only.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tasks import landing
from tasks.pseudonym import pseudonymise
from tasks.warehouse import raw_table

_EXPRESSION = re.compile(r"^\s*(\w+)\s*([-+*/])\s*(\w+)\s*$")
TS_COLUMNS = ("event_ts", "end_ts")


class ImportError_(ValueError):
    """A file or mapping that cannot be imported, with the reason in one line."""


@dataclass(frozen=True)
class Mapping:
    """How a foreign file's columns become a raw table's columns."""

    table: str
    columns: dict[str, str] = field(default_factory=dict)
    user_id: str | None = None
    email: str | None = None
    timestamps: dict[str, dict[str, str]] = field(default_factory=dict)
    event_id: dict[str, Any] = field(default_factory=dict)
    computed: dict[str, str] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    max_bad_share: float | None = None


def load_mapping(path: Path) -> Mapping:
    """Read and check a mapping file."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ImportError_(f"cannot read mapping {path}: {exc}") from exc
    if not isinstance(data, dict) or "table" not in data:
        raise ImportError_(f"mapping {path}: expected a YAML mapping with a 'table' key")
    known = set(Mapping.__dataclass_fields__)
    if unknown := set(data) - known:
        raise ImportError_(f"mapping {path}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    mapping = Mapping(**data)
    table = raw_table(mapping.table)
    targets = set(mapping.columns) | set(mapping.computed) | set(mapping.constants) | set(mapping.timestamps)
    if bad := targets - set(table.c.keys()):
        raise ImportError_(f"mapping {path}: {mapping.table} has no columns {sorted(bad)}")
    for name, expr in mapping.computed.items():
        if not _EXPRESSION.match(expr):
            raise ImportError_(f"mapping {path}: computed {name!r} must look like 'a * b', got {expr!r}")
    return mapping


def read_file(path: Path) -> pd.DataFrame:
    """Read a CSV (optionally compressed) or Parquet file as delivered (strings kept as strings)."""
    if not path.exists():
        raise ImportError_(f"no such file: {path}")
    suffixes = "".join(path.suffixes).lower()
    try:
        if ".parquet" in suffixes:
            return pd.read_parquet(path)
        if ".csv" in suffixes or ".tsv" in suffixes:
            return pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                sep=None if ".tsv" in suffixes else ",",
            )
    except Exception as exc:  # every reader raises its own kind for a broken file
        raise ImportError_(f"cannot read {path.name}: {str(exc).splitlines()[0]}") from exc
    raise ImportError_(f"{path.name}: unsupported file type; use .csv, .csv.gz/.xz/.zip or .parquet")


def apply_mapping(frame: pd.DataFrame, mapping: Mapping, *, file_stem: str) -> pd.DataFrame:
    """Rename, derive and convert a foreign frame into the raw table's columns."""
    missing = {src for src in mapping.columns.values() if src not in frame.columns}
    for spec in mapping.timestamps.values():
        if spec["column"] not in frame.columns:
            missing.add(spec["column"])
    if mapping.user_id and mapping.user_id not in frame.columns:
        missing.add(mapping.user_id)
    if missing:
        raise ImportError_(f"file lacks the mapped source columns {sorted(missing)}")
    out = pd.DataFrame(index=frame.index)
    for target, source in mapping.columns.items():
        out[target] = frame[source]
    for target, spec in mapping.timestamps.items():
        out[target] = to_epoch_seconds(frame[spec["column"]], spec.get("format"), spec.get("timezone", "UTC"))
    if mapping.user_id:
        out["user_id"] = frame[mapping.user_id]
    if mapping.email:
        out["email"] = frame[mapping.email]
    for target, value in mapping.constants.items():
        out[target] = value.format(file_stem=file_stem) if isinstance(value, str) else value
    for target, expr in mapping.computed.items():
        out[target] = _compute(out, expr)
    if mapping.event_id:
        out["event_id"] = derive_event_ids(frame.join(out, rsuffix="_mapped"), mapping.event_id, file_stem)
    # A mapping names the columns a source has; optional (nullable) columns it leaves out
    # are null. Required ones it leaves out stay missing, and the gate names them.
    for column in raw_table(mapping.table).columns:
        if column.nullable and column.name not in out.columns and column.name != "event_date":
            out[column.name] = None
    return out


def to_epoch_seconds(values: pd.Series, fmt: str | None = None, timezone: str = "UTC") -> pd.Series:
    """Epoch seconds from epoch numbers or date-time text; unreadable values become null."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().sum() >= values.notna().sum() and values.notna().any():
        return numeric.astype("Float64").round().astype("Int64")
    parsed = pd.to_datetime(values, format=fmt, errors="coerce", utc=False)
    if parsed.dt.tz is None:
        parsed = parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    seconds = (parsed.dt.tz_convert("UTC") - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.astype("Int64")


def derive_event_ids(frame: pd.DataFrame, spec: dict[str, Any], file_stem: str) -> pd.Series:
    """Stable event ids from a hash of the named columns (plus the occurrence of identical rows)."""
    columns = spec.get("hash_of", [])
    if missing := [c for c in columns if c not in frame.columns]:
        raise ImportError_(f"event_id hash_of names unknown columns {missing}")
    key = pd.Series("", index=frame.index, dtype=object)
    for i, column in enumerate(columns):
        text = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
        key = (key + "\x1f" + text) if i else text
    if spec.get("occurrence", True):
        # Identical lines in a file are kept apart (nothing lost); reimporting the file
        # gives the same ids again, so a replay still deduplicates.
        key = key + "\x1f" + key.groupby(key).cumcount().astype(str)
    prefix = str(spec.get("prefix", file_stem))
    sha256 = hashlib.sha256
    ids = [f"{prefix}-{sha256(k.encode()).hexdigest()[:24]}" for k in key.tolist()]
    return pd.Series(ids, index=key.index, dtype="str")  # as Series.map gives it


def _compute(frame: pd.DataFrame, expr: str) -> pd.Series:
    match = _EXPRESSION.match(expr)
    assert match is not None  # checked when the mapping was loaded
    left, op, right = match.groups()
    a, b = (_operand(frame, name) for name in (left, right))
    result = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
    return result if isinstance(result, pd.Series) else pd.Series(result, index=frame.index)


def _operand(frame: pd.DataFrame, name: str) -> pd.Series | float:
    if name in frame.columns:
        return pd.to_numeric(frame[name], errors="coerce")
    try:
        return float(name)
    except ValueError:
        raise ImportError_(f"computed expression names unknown column {name!r}") from None


def prepare_frame(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Convert timestamps of an unmapped file to epoch seconds (text dates are allowed)."""
    out = frame.copy()
    for column in TS_COLUMNS:
        if column in out.columns:
            out[column] = to_epoch_seconds(out[column])
    raw_table(table)
    return out


@dataclass(frozen=True)
class Identities:
    """Raw identifiers split off a frame: pseudonym, raw id, email."""

    frame: pd.DataFrame

    def __len__(self) -> int:
        return len(self.frame)


def split_identities(frame: pd.DataFrame, key: bytes) -> tuple[pd.DataFrame, Identities]:
    """Replace ``user_id`` by its pseudonym ``user_key``; move raw ids and emails aside."""
    if "user_id" not in frame.columns:
        return frame.drop(columns=["email"], errors="ignore"), Identities(pd.DataFrame())
    out = frame.copy()
    out["user_key"] = pseudonymise(out["user_id"], key)
    ids = pd.DataFrame(
        {
            "user_key": out["user_key"],
            "user_id": out["user_id"].astype("object"),
            "email": out.get("email"),
        }
    )
    ids = ids[ids["user_key"].notna()].drop_duplicates("user_key")
    return out.drop(columns=["user_id", "email"], errors="ignore"), Identities(ids.reset_index(drop=True))


def land_import(
    path: Path,
    table: str,
    landing_root: Path,
    key: bytes,
    mapping: Mapping | None = None,
    *,
    max_ts: int | None = None,
) -> tuple[list[Path], Identities, int]:
    """Read, map and pseudonymise a file, then land it; returns files, identities and rows.

    ``max_ts`` is the caller's 'now': rows after it (or before the source's lower bound) land
    with the rest of the file, where the gate quarantines them (see ``landing.write_batch``).
    """
    raw_table(table)
    if mapping is not None and mapping.table != table:
        raise ImportError_(f"mapping is for {mapping.table}, not {table}")
    frame = read_file(path)
    if frame.empty:
        raise ImportError_(f"{path.name} holds no rows")
    frame = (
        apply_mapping(frame, mapping, file_stem=path.name.split(".")[0])
        if mapping
        else prepare_frame(frame, table)
    )
    frame, identities = split_identities(frame, key)
    files = landing.write_batch(landing_root, table, frame, max_ts=max_ts)
    return files, identities, len(frame)
