"""Point-in-time training-set export for data scientists (``liveyield features get``)."""

from __future__ import annotations

from pathlib import Path

from tasks.db import make_engine
from tasks.featurestore import get_historical_features
from tasks.importer import ImportError_, read_file, to_epoch_seconds
from tasks.settings import get_settings


def export_training_set(
    entities: Path, feature_refs: list[str], out: Path, *, created_before_event: bool = True
) -> int:
    """Join features point-in-time onto an entity file and write CSV or Parquet; returns rows.

    Each row gets the features known at its event_ts; ``created_before_event=False`` gives the
    latest version of every feature row instead (late rows included).
    """
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ImportError_(f"output {out.name}: use a .csv or .parquet file name")
    if not feature_refs:
        raise ImportError_("no feature references given")
    frame = read_file(entities)
    if "event_ts" not in frame.columns:
        raise ImportError_(f"{entities.name} needs an event_ts column (epoch seconds or date-time)")
    frame["event_ts"] = to_epoch_seconds(frame["event_ts"])
    if frame["event_ts"].isna().any():
        bad = int(frame["event_ts"].isna().sum())
        raise ImportError_(f"{entities.name}: {bad} rows have an unreadable event_ts")
    frame["event_ts"] = frame["event_ts"].astype("int64")
    engine = make_engine(get_settings().db_url)
    try:
        result = get_historical_features(
            engine, frame, feature_refs, created_before_event=created_before_event
        )
    finally:
        engine.dispose()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        result.to_csv(out, index=False)
    else:
        result.to_parquet(out, index=False)
    return len(result)
