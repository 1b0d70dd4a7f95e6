"""Monitoring: reference profiles taken at training time, drift statistics, the monitoring table.

The statistics are scipy's (``scipy.spatial.distance.jensenshannon``,
``scipy.stats.wasserstein_distance``, ``scipy.stats.chi2_contingency``) plus numpy for binning and
quantiles, not Evidently. Evidently 0.7.23 (what the package index resolves) resolves against the pinned stack
but fails at import under pandas 3 (``ImportError: cannot import name 'infer_dtype_from_object'
from 'pandas.core.dtypes.common'``), and its drift presets compare two raw data sets, whereas a
model's reference here is a stored profile (bins, quantiles, frequencies), never the training rows.
The defaults follow Evidently's and TFX's (see ``DriftPolicy``) so that thresholds read the same.
"""

from tasks.monitoring.drift import (
    DriftPolicy,
    DriftReport,
    DriftResult,
    compare_column,
    compare_frame,
    compare_prediction,
)
from tasks.monitoring.profile import (
    CategoricalProfile,
    ColumnProfile,
    FrameProfile,
    NumericProfile,
    profile_column,
    profile_frame,
)
from tasks.monitoring.store import CHECKS, BadCheckRow, CheckRow, check_rows, latest_checks, record_checks

__all__ = [
    "CHECKS",
    "BadCheckRow",
    "CategoricalProfile",
    "CheckRow",
    "ColumnProfile",
    "DriftPolicy",
    "DriftReport",
    "DriftResult",
    "FrameProfile",
    "NumericProfile",
    "check_rows",
    "compare_column",
    "compare_frame",
    "compare_prediction",
    "latest_checks",
    "profile_column",
    "profile_frame",
    "record_checks",
]
