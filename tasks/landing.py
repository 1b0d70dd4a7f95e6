"""The landing zone: raw batches wait here as Parquet, one folder per (table, event-date partition).

Producers (the simulator, ``liveyield import``) only write here; the ingest-validate flow is
the one way into the warehouse. File names are content hashes, so writing the same batch
twice is a no-op, and files are written atomically (temp file + rename).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections import defaultdict
from pathlib import Path

import pandas as pd

UNKNOWN = "unknown"  # partition folder for rows whose event time could not be read
_SECONDS_PER_DAY = 86_400


def event_dates(event_ts: pd.Series) -> pd.Series:
    """The UTC event date of each epoch-second timestamp (None where missing)."""
    ts = pd.to_numeric(event_ts, errors="coerce")
    days = (ts // _SECONDS_PER_DAY).astype("Float64")
    epoch = dt.date(1970, 1, 1)
    return pd.Series(
        [None if pd.isna(d) else epoch + dt.timedelta(days=int(d)) for d in days],
        index=event_ts.index,
        dtype="object",
    )


def frame_hash(frame: pd.DataFrame) -> str:
    """A content hash of a frame (columns and values, in row order)."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def write_batch(root: Path, table: str, frame: pd.DataFrame) -> list[Path]:
    """Split a batch by event date and land each part; returns the files written."""
    written: list[Path] = []
    dates = event_dates(frame["event_ts"]) if "event_ts" in frame else pd.Series([None] * len(frame))
    keys = dates.map(lambda d: UNKNOWN if d is None else d.isoformat())
    for key, part in frame.groupby(keys.to_numpy(), sort=True):
        written.append(_write_part(root, table, str(key), part.reset_index(drop=True)))
    return written


def write_empty(root: Path, table: str, partition: dt.date, columns: list[str]) -> Path:
    """Land an empty batch for one partition (a source that delivered nothing)."""
    return _write_part(root, table, partition.isoformat(), pd.DataFrame(columns=columns))


def _write_part(root: Path, table: str, key: str, part: pd.DataFrame) -> Path:
    folder = root / table / f"event_date={key}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{frame_hash(part)[:24]}.parquet"
    if not path.exists():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        part.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    return path


def pending(
    root: Path, table: str | None = None, partition: dt.date | None = None
) -> dict[str, dict[str, list[Path]]]:
    """Landed files waiting for ingestion: table -> partition key -> files."""
    found: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    if not root.exists():
        return {}
    for path in sorted(root.glob("*/event_date=*/*.parquet")):
        name, key = path.parent.parent.name, path.parent.name.removeprefix("event_date=")
        if table is not None and name != table:
            continue
        if partition is not None and key != partition.isoformat():
            continue
        found[name][key].append(path)
    return {t: dict(parts) for t, parts in found.items()}


def batch_fingerprint(files: list[Path]) -> str:
    """The fingerprint of a batch made of landed files (their names are content hashes)."""
    return hashlib.sha256("\n".join(sorted(p.name for p in files)).encode()).hexdigest()
