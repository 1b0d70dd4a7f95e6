"""Cast a frame read from a file to the raw table's declared types, listing cells that fail."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.quality.columns import ColumnSpec, is_key, table_columns

TYPE_RULE = "expect_column_values_to_be_of_type"
BAD_ROW_COLUMNS = ["row", "rule", "column_name", "reason"]
PANDAS_DTYPES = {"str": "str", "int": "Int64", "float": "float64", "date": "datetime64[s]"}


def empty_bad_rows() -> pd.DataFrame:
    """A bad-rows frame with no rows and the documented columns."""
    return pd.DataFrame(
        {
            "row": pd.Series([], dtype="int64"),
            "rule": pd.Series([], dtype="str"),
            "column_name": pd.Series([], dtype="str"),
            "reason": pd.Series([], dtype="str"),
        }
    )


def blank(series: pd.Series) -> np.ndarray:
    """Mask of missing identifiers: null, empty or whitespace-only values."""
    missing = series.isna().to_numpy()
    text = series.astype("object").where(~missing, "").astype(str)
    return missing | (text.str.strip() == "").to_numpy()


def _cast(series: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, np.ndarray]:
    """Cast one column; returns the typed column and a mask of cells that could not be cast."""
    target = PANDAS_DTYPES[spec.kind]
    if str(series.dtype) == target:
        return series, np.zeros(len(series), dtype=bool)
    was_null = series.isna().to_numpy()
    if spec.kind == "str":
        typed = series.astype("str")
        return typed.where(~was_null, None).astype("str"), np.zeros(len(series), dtype=bool)
    if spec.kind == "date":
        parsed = pd.to_datetime(series, errors="coerce", utc=False, format="mixed")
        if getattr(parsed.dt, "tz", None) is not None:
            parsed = parsed.dt.tz_convert(None)
        not_midnight = (parsed != parsed.dt.normalize()).to_numpy() & parsed.notna().to_numpy()
        parsed = parsed.where(~not_midnight).astype("datetime64[s]")
        failed = (~was_null & parsed.isna().to_numpy()) | not_midnight
        return parsed, failed
    numeric = pd.to_numeric(series, errors="coerce")
    values = numeric.to_numpy(dtype="float64", na_value=np.nan)
    failed = ~was_null & np.isnan(values)
    if spec.kind == "float":
        return pd.Series(values, index=series.index, name=series.name), failed
    # Integers: NaN/inf, fractions and out-of-int64 values cannot be stored exactly.
    with np.errstate(invalid="ignore"):
        bad_int = np.isinf(values) | (np.abs(values) >= 2.0**63) | (values != np.round(values))
    bad_int &= ~np.isnan(values)
    failed |= bad_int
    if pd.api.types.is_integer_dtype(numeric.dtype):
        return numeric.astype("Int64"), failed
    exact = pd.Series(np.where(bad_int, np.nan, values), index=series.index, name=series.name)
    return exact.astype("Float64").astype("Int64"), failed


def coerce_frame(table: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cast a frame to the schema's types; returns (typed_frame, bad_rows) for uncastable cells."""
    typed = frame.reset_index(drop=True).copy(deep=False)
    pieces = []
    for spec in table_columns(table):
        if spec.name not in typed.columns:
            continue  # the suite's column-set check reports it, naming the column
        original = typed[spec.name]
        typed[spec.name], failed = _cast(original, spec)
        if spec.kind == "str" and is_key(spec.name):
            # A blank identifier is a missing one: the not-null rule then names it.
            empty = blank(typed[spec.name]) & typed[spec.name].notna().to_numpy()
            if empty.any():
                typed[spec.name] = typed[spec.name].where(~empty, None)
        if failed.any():
            rows = np.flatnonzero(failed)
            shown = original.iloc[rows].astype("object").map(lambda v: repr(v)[:40])
            pieces.append(
                pd.DataFrame(
                    {
                        "row": rows.astype("int64"),
                        "rule": TYPE_RULE,
                        "column_name": spec.name,
                        "reason": f"cannot cast to {PANDAS_DTYPES[spec.kind]}: " + shown.to_numpy(),
                    }
                )
            )
    if not pieces:
        return typed, empty_bad_rows()
    bad = pd.concat(pieces, ignore_index=True)
    return typed, bad.astype({"row": "int64", "rule": "str", "column_name": "str", "reason": "str"})
