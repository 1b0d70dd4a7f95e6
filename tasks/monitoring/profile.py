"""Reference profiles: what monitoring keeps of a training frame instead of its rows.

A numeric column keeps its quantile bins and the share of values in each, a quantile sketch for
the Wasserstein distance, its null share and summary (count, mean, std, min, max). A categorical
column keeps its top-K category frequencies, an "other" bucket and its null share. Profiles are
plain data with a JSON round trip (``to_dict``/``from_dict``), small enough for an MLflow artifact.

Bins. The interior edges are the reference's deciles plus its min and max, made unique; bins are
right-closed, ``(-inf, e0], (e0, e1], …, (e_last, +inf)``, so the ends are open to -inf/+inf and
values outside the training range land in bins of their own (empty, or nearly, in the reference).
The min and max edges keep discrete columns apart: a 0/1 flag with 95 % ones still gets a bin
for the zeros. A constant column gets three bins: below, equal to, and above the constant.
Edges are stored without the infinite ends, so the JSON holds only finite numbers.

Sketch. ``quantiles`` holds the values at the mid-points ``(k + 0.5) / K`` (K = 100 by default):
K equally weighted atoms whose Wasserstein distance to the same atoms of another sample
approximates the distance between the two distributions (exact for a pure shift).

Missing values: null, NaN and ±inf count as missing; statistics are over the remaining values.

Entities, not rows. An input that describes one entity (a streamer's popularity, a product's price,
a user's activity) is profiled over distinct entities, not over the frame's rows: ``keys`` maps
such an input to its entity's key column, and the input is read from ``entity_rows`` of the frame,
one row per distinct key (per key and request time, ``event_ts``, when the frame has that column:
a training frame spans many request times). A ranking frame has a row per (user, candidate); per
row, a candidate's inputs would count once per user, and the handful of streams live at one
moment would make the whole distribution. Rows with a missing key are each kept; an input without
a key (a user × candidate input, a request context), or whose key column is not in the frame, and
predictions, stay per row. ``tasks/monitoring/drift.py`` reads the current frame by the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

FORMAT = 1
BINS = 10
QUANTILES = 100
TOP_K = 50
OTHER = "__other__"  # the bucket of categories beyond the top K (and, later, never-seen ones)
TIME = "event_ts"  # a frame's request time: every label frame has it, some scoring frames too

Kind = Literal["numeric", "categorical"]


def numeric_values(series: pd.Series) -> np.ndarray:
    """The column as float64 with every missing or non-finite value as NaN."""
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    if not values.flags.writeable:
        values = values.copy()
    values[~np.isfinite(values)] = np.nan
    return values


def entity_rows(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """One row per distinct ``key`` (per key and ``TIME`` when the frame has that column); rows with
    a missing key are each kept, and a frame without the key column is returned whole."""
    if key not in frame.columns:
        return frame
    subset = [key, TIME] if TIME in frame.columns and key != TIME else [key]
    return frame[~frame.duplicated(subset) | frame[key].isna()]


def input_series(
    frame: pd.DataFrame, column: str, keys: Mapping[str, str], cache: dict[str, pd.DataFrame]
) -> pd.Series:
    """The column as profiled: over ``entity_rows`` of its key when ``keys`` names one, else per row
    (``cache`` keeps each key's rows, computed once per frame)."""
    key = keys.get(column)
    if key is None:
        return frame[column]
    if key not in cache:
        cache[key] = entity_rows(frame, key)
    return cache[key][column]


def is_numeric(series: pd.Series) -> bool:
    """Numbers are profiled as distributions; booleans, text and categories by frequency."""
    return bool(pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype))


def quantile_points(k: int) -> np.ndarray:
    """The mid-point probabilities ``(i + 0.5) / k`` of a K-atom sketch."""
    return (np.arange(k) + 0.5) / k


def sorted_quantiles(ordered: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Quantiles of already sorted values, linear interpolation (numpy's default method)."""
    position = probs * (len(ordered) - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, len(ordered) - 1)
    frac = position - low
    result: np.ndarray = ordered[low] + (ordered[high] - ordered[low]) * frac
    return result


def bin_shares(ordered: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of sorted values in each right-closed bin ``(e[i-1], e[i]]`` with open ends."""
    cuts = np.searchsorted(ordered, edges, side="right")  # values <= each edge
    counts = np.diff(np.concatenate(([0], cuts, [len(ordered)])))
    shares: np.ndarray = counts / len(ordered)
    return shares


def bin_edges(ordered: np.ndarray, bins: int) -> np.ndarray:
    """Interior edges: the deciles (for bins=10) plus min and max, unique; see the module notes."""
    lo, hi = ordered[0], ordered[-1]
    if lo == hi:  # constant: below, equal, above
        return np.array([np.nextafter(lo, -np.inf), lo])
    inner = sorted_quantiles(ordered, np.arange(1, bins) / bins)
    edges: np.ndarray = np.unique(np.concatenate(([lo], inner, [hi])))
    return edges


@dataclass(frozen=True)
class _ColumnCounts:
    """What every column profile has: its name, rows and missing values."""

    name: str
    rows: int
    nulls: int

    @property
    def count(self) -> int:
        """Values that were not missing."""
        return self.rows - self.nulls

    @property
    def null_share(self) -> float:
        """Share of rows with a missing value (0 for an empty column)."""
        return self.nulls / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class NumericProfile(_ColumnCounts):
    """A numeric column's distribution: bins and shares, quantile sketch, nulls and summary."""

    mean: float | None
    std: float | None  # population std (ddof=0), as the normalised Wasserstein distance uses
    min: float | None
    max: float | None
    edges: tuple[float, ...]
    shares: tuple[float, ...]  # one more than edges
    quantiles: tuple[float, ...]
    kind: Kind = field(default="numeric", init=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "kind": self.kind,
            "name": self.name,
            "rows": self.rows,
            "nulls": self.nulls,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "edges": list(self.edges),
            "shares": list(self.shares),
            "quantiles": list(self.quantiles),
        }


@dataclass(frozen=True)
class CategoricalProfile(_ColumnCounts):
    """A categorical column's top-K frequencies (shares of non-null values), other bucket, nulls."""

    frequencies: Mapping[str, float]
    other_share: float
    distinct: int
    kind: Kind = field(default="categorical", init=False)

    @property
    def complete(self) -> bool:
        """Every category seen in the reference is kept by name (none went to the other bucket)."""
        return self.distinct == len(self.frequencies)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "kind": self.kind,
            "name": self.name,
            "rows": self.rows,
            "nulls": self.nulls,
            "frequencies": dict(self.frequencies),
            "other_share": self.other_share,
            "distinct": self.distinct,
        }


ColumnProfile = NumericProfile | CategoricalProfile


def _profile_numeric(name: str, values: np.ndarray, bins: int, quantiles: int) -> NumericProfile:
    ordered = np.sort(values[~np.isnan(values)])
    if len(ordered) == 0:
        return NumericProfile(name, len(values), len(values), None, None, None, None, (), (), ())
    edges = bin_edges(ordered, bins)
    return NumericProfile(
        name=name,
        rows=len(values),
        nulls=len(values) - len(ordered),
        mean=float(ordered.mean()),
        std=float(ordered.std()),
        min=float(ordered[0]),
        max=float(ordered[-1]),
        edges=tuple(float(e) for e in edges),
        shares=tuple(float(s) for s in bin_shares(ordered, edges)),
        quantiles=tuple(float(q) for q in sorted_quantiles(ordered, quantile_points(quantiles))),
    )


def category_counts(series: pd.Series) -> pd.Series:
    """Counts per category (as text), most frequent first; missing values are left out."""
    counts = series.value_counts(dropna=True, sort=True)
    counts.index = [str(v) for v in counts.index]
    return counts


def _profile_categorical(name: str, series: pd.Series, top_k: int) -> CategoricalProfile:
    counts = category_counts(series)
    count = int(counts.sum())
    kept = counts.iloc[:top_k]
    frequencies = {str(k): float(v) / count for k, v in kept.items()} if count else {}
    other = float(counts.iloc[top_k:].sum()) / count if count else 0.0
    return CategoricalProfile(
        name=name,
        rows=len(series),
        nulls=len(series) - count,
        frequencies=frequencies,
        other_share=other,
        distinct=len(counts),
    )


def profile_column(
    series: pd.Series,
    *,
    name: str | None = None,
    kind: Kind | None = None,
    bins: int = BINS,
    quantiles: int = QUANTILES,
    top_k: int = TOP_K,
) -> ColumnProfile:
    """Profile one column (a feature, or a model's predictions); kind is inferred from the dtype."""
    label = str(series.name) if name is None else name
    kind = kind or ("numeric" if is_numeric(series) else "categorical")
    if kind == "numeric":
        return _profile_numeric(label, numeric_values(series), bins, quantiles)
    return _profile_categorical(label, series, top_k)


@dataclass(frozen=True)
class FrameProfile:
    """The reference profile of a frame: one column profile per feature, and the row count."""

    rows: int
    columns: Mapping[str, ColumnProfile]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``json.dumps`` of it has no NaN or infinity)."""
        return {
            "format": FORMAT,
            "rows": self.rows,
            "columns": [c.to_dict() for c in self.columns.values()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FrameProfile:
        """Rebuild a profile written by ``to_dict``."""
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown profile format {data.get('format')!r} (expected {FORMAT})")
        columns = [column_from_dict(c) for c in data["columns"]]
        return cls(rows=int(data["rows"]), columns={c.name: c for c in columns})


def column_from_dict(data: Mapping[str, Any]) -> ColumnProfile:
    """Rebuild a column profile written by its ``to_dict``."""
    if data["kind"] == "numeric":
        return NumericProfile(
            name=data["name"],
            rows=int(data["rows"]),
            nulls=int(data["nulls"]),
            mean=data["mean"],
            std=data["std"],
            min=data["min"],
            max=data["max"],
            edges=tuple(data["edges"]),
            shares=tuple(data["shares"]),
            quantiles=tuple(data["quantiles"]),
        )
    if data["kind"] == "categorical":
        return CategoricalProfile(
            name=data["name"],
            rows=int(data["rows"]),
            nulls=int(data["nulls"]),
            frequencies=dict(data["frequencies"]),
            other_share=float(data["other_share"]),
            distinct=int(data["distinct"]),
        )
    raise ValueError(f"unknown column profile kind {data['kind']!r}")


def profile_frame(
    frame: pd.DataFrame,
    columns: Iterable[str] | None = None,
    *,
    categorical: Iterable[str] = (),
    keys: Mapping[str, str] | None = None,
    bins: int = BINS,
    quantiles: int = QUANTILES,
    top_k: int = TOP_K,
) -> FrameProfile:
    """Profile the given columns (default: all); ``categorical`` forces numeric codes to categories,
    ``keys`` profiles entity inputs over distinct entities (see the module notes)."""
    names = list(frame.columns if columns is None else columns)
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise KeyError(f"columns not in the frame: {missing}")
    forced = set(categorical)
    cache: dict[str, pd.DataFrame] = {}
    profiles = {
        str(c): profile_column(
            input_series(frame, c, keys or {}, cache),
            name=str(c),
            kind="categorical" if c in forced else None,
            bins=bins,
            quantiles=quantiles,
            top_k=top_k,
        )
        for c in names
    }
    return FrameProfile(rows=len(frame), columns=profiles)
