"""The landing zone: raw batches wait here as Parquet, one folder per (table, event-date partition).

Producers (the simulator, ``liveyield import``) only write here; the ingest-validate flow is
the one way into the warehouse. File names are content hashes, so writing the same batch
twice is a no-op, and files are written atomically (temp file, fsync, rename, fsync of the
folder). A file is trusted only when its content still hashes to its name; one that does not
(truncated, corrupt) is set aside under ``_corrupt/`` with its reason, never read again.

Rows whose event time is readable but implausible (before the source's lower bound, or after
``max_ts``) are landed with the rest of their delivery, in its main partition, where the gate
quarantines them; alone in a partition of their own they would reject that partition.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

UNKNOWN = "unknown"  # partition folder for rows whose event time could not be read
CORRUPT = "_corrupt"  # folder of landed files set aside as unreadable, each with a .reason file
FAR_FUTURE_TS = 4_102_444_800  # 2100-01-01: the upper bound when the producer gives no 'now'
_SECONDS_PER_DAY = 86_400
_MAX_DAYS = 2_900_000  # about year 9900: later days are not dates Python can hold


class CorruptFile(ValueError):
    """A landed file that cannot be read, or whose content no longer matches its hash name."""


class LandingWriteError(OSError):
    """The landing zone cannot take a batch (read-only, full, missing); the message names the folder.

    Nothing of the failed batch is left behind: no temporary file, and no part of it landed.
    """

    def __init__(self, folder: Path, cause: OSError) -> None:
        reason = cause.strerror or type(cause).__name__
        super().__init__(cause.errno, f"cannot write to the landing zone {folder}: {reason}")
        self.folder = folder

    def __str__(self) -> str:
        return str(self.strerror)


def event_dates(event_ts: pd.Series) -> pd.Series:
    """The UTC event date of each epoch-second timestamp (None where missing)."""
    return _per_day(event_ts, lambda date: date)


def _per_day(event_ts: pd.Series, label: Callable[[dt.date], Any]) -> pd.Series:
    """``label`` of each timestamp's UTC date (None where missing), computed once per distinct day."""
    ts = pd.to_numeric(event_ts, errors="coerce").astype("Float64")
    days = (ts // _SECONDS_PER_DAY).to_numpy(dtype="float64", na_value=np.nan)
    usable = ~np.isnan(days) & (days > -700_000) & (days < _MAX_DAYS)
    out = np.full(len(days), None, dtype=object)
    if usable.any():
        distinct, back = np.unique(days[usable].astype("int64"), return_inverse=True)
        epoch = dt.date(1970, 1, 1)
        labels = np.empty(len(distinct), dtype=object)
        labels[:] = [label(epoch + dt.timedelta(days=int(d))) for d in distinct]
        out[usable] = labels[back.reshape(-1)]
    return pd.Series(out, index=event_ts.index, dtype="object")


def frame_hash(frame: pd.DataFrame) -> str:
    """A content hash of a frame (columns and values, in row order)."""
    return _digest(frame.columns, _row_hashes(frame))


def _row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """Each row's 64-bit hash: a function of that row's values and the columns' dtypes only.

    So the rows of a slice hash as they do in the whole frame, and many parts (or many files
    of equal dtypes, concatenated) are hashed in one call instead of one per part.
    """
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _digest(columns: pd.Index, row_hashes: np.ndarray) -> str:
    digest = hashlib.sha256(",".join(map(str, columns)).encode())
    digest.update(row_hashes.tobytes())
    return digest.hexdigest()


def write_batch(
    root: Path, table: str, frame: pd.DataFrame, *, min_ts: int | None = None, max_ts: int | None = None
) -> list[Path]:
    """Split a batch by event date and land each part; returns the files written.

    ``min_ts`` is the source's lower event-time bound (default: its setting, see
    ``tasks.settings.min_event_ts``), ``max_ts`` the producer's 'now' (default: 2100).
    Rows outside them go to the delivery's main partition (see the module docstring).
    """
    written: list[Path] = []
    new: list[Path] = []  # files this call created: taken back if a later part cannot be written
    keys = partition_keys(frame, table, min_ts=min_ts, max_ts=max_ts)
    # Rows grouped by partition (in delivery order within each) with one reordering of the
    # batch, and hashed once: each part is then a slice, its name the hash of its rows' slice.
    codes, uniques = pd.factorize(keys.to_numpy(), sort=True)
    order = np.argsort(codes, kind="stable")
    grouped, hashes = frame.take(order), _row_hashes(frame)[order]
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    try:
        for i, key in enumerate(uniques):
            part = grouped.iloc[bounds[i] : bounds[i + 1]].reset_index(drop=True)
            name = _digest(frame.columns, hashes[bounds[i] : bounds[i + 1]])
            path, created = _write_part(root, table, str(key), part, name)
            written.append(path)
            if created:
                new.append(path)
    except LandingWriteError:
        for path in new:  # a delivery lands whole or not at all: no half of it is ingested
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        raise
    return written


def partition_keys(
    frame: pd.DataFrame, table: str, *, min_ts: int | None = None, max_ts: int | None = None
) -> pd.Series:
    """The partition folder key of each row: its event date, the main one, or ``UNKNOWN``."""
    from tasks.settings import min_event_ts

    if "event_ts" not in frame:
        return pd.Series([UNKNOWN] * len(frame), index=frame.index, dtype="object")
    ts = pd.to_numeric(frame["event_ts"], errors="coerce").astype("Float64")
    low = min_event_ts(table) if min_ts is None else min_ts
    high = FAR_FUTURE_TS if max_ts is None else max_ts
    keys = _per_day(ts, dt.date.isoformat).fillna(UNKNOWN)
    readable = ts.notna().to_numpy(dtype=bool, na_value=False)
    stray = readable & ((ts < low) | (ts > high)).to_numpy(dtype=bool, na_value=True)
    plausible = readable & ~stray
    if stray.any() and plausible.any():
        counts = keys[plausible].value_counts()
        home = min(counts.index[counts.to_numpy() == counts.max()])  # most rows; ties: earliest
        keys = keys.where(~stray, home)
    return keys.astype("object")


def write_empty(root: Path, table: str, partition: dt.date, columns: list[str]) -> Path:
    """Land an empty batch for one partition (a source that delivered nothing)."""
    return _write_part(root, table, partition.isoformat(), pd.DataFrame(columns=columns))[0]


def _write_part(
    root: Path, table: str, key: str, part: pd.DataFrame, content_hash: str | None = None
) -> tuple[Path, bool]:
    """Land one partition's part; returns its file and whether this call created it.

    ``content_hash`` is the part's ``frame_hash`` where the caller has it already.

    An OS failure (a read-only or full disk) becomes ``LandingWriteError`` naming the folder,
    after the temporary file is removed.
    """
    folder = root / table / f"event_date={key}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LandingWriteError(_nearest_existing(folder), exc) from exc
    path = folder / f"{(content_hash or frame_hash(part))[:24]}.parquet"
    if path.exists():
        try:
            read_verified(path)
            return path, False  # the same batch, intact: writing it again is a no-op
        except CorruptFile:
            pass  # a damaged copy under the right name: replace it with the good one
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            part.to_parquet(handle, index=False)
            handle.flush()
            os.fsync(handle.fileno())  # the bytes are on disk before the name says they are there
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise LandingWriteError(folder, exc) from exc
    _fsync_dir(folder)
    return path, True


def _nearest_existing(folder: Path) -> Path:
    """``folder`` or its closest existing parent: the one a failed ``mkdir`` could not write in."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_verified(path: Path) -> pd.DataFrame:
    """Read a landed file and check that its content still hashes to its name.

    Raises ``CorruptFile`` (with the reason in one line) for an unreadable Parquet file or
    one whose content changed since it was written.
    """
    result = read_verified_many([path])[0]
    if isinstance(result, CorruptFile):
        raise result
    return result


def read_verified_many(paths: list[Path]) -> list[pd.DataFrame | CorruptFile]:
    """``read_verified`` of several files: each one's frame, or the ``CorruptFile`` it raised.

    Every file is read and checked against its own name, as one by one; files of the same
    columns and dtypes are hashed together (a row's hash depends on that row alone), which
    for hundreds of small partition files is most of the cost of checking them.
    """
    out: list[pd.DataFrame | CorruptFile] = []
    read: dict[int, pd.DataFrame] = {}
    alike: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, path in enumerate(paths):
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow and the OS raise many kinds for a damaged file
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            error = CorruptFile(f"unreadable Parquet file ({type(exc).__name__}: {first[:200]})")
            error.__cause__ = exc
            out.append(error)
            continue
        out.append(frame)
        read[i] = frame
        alike[(tuple(map(str, frame.columns)), tuple(frame.dtypes))].append(
            i
        )  # dtype equality: categories too
    for members in alike.values():
        frames = [read[i] for i in members]
        together = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        hashes, start = _row_hashes(together), 0
        for i, frame in zip(members, frames, strict=True):
            stop = start + len(frame)
            if _digest(frame.columns, hashes[start:stop])[:24] != paths[i].stem:
                out[i] = CorruptFile("content does not match the content hash in its name")
            start = stop
    return out


def set_aside(root: Path, path: Path, reason: str) -> Path:
    """Move a corrupt landed file to ``<root>/_corrupt/<table>/<partition>/`` next to a ``.reason`` file."""
    partition, table = path.parent.name, path.parent.parent.name
    folder = root / CORRUPT / table / partition
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    os.replace(path, target)
    (folder / f"{path.name}.reason").write_text(reason + "\n", encoding="utf-8")
    _fsync_dir(folder)
    return target


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
