"""Every evaluation metric by name, one module per kind of model (see common.py for the signature)."""

from __future__ import annotations

from tasks.models.metrics import binary, clustering, forecast, plan, ranking, regression
from tasks.models.metrics.common import Array, Cols, Metric

_MODULES = (binary, regression, forecast, ranking, clustering, plan)

METRICS: dict[str, Metric] = {}
for _module in _MODULES:
    for _name, _fn in _module.METRICS.items():
        # pred_obs_ratio is declared by two kinds with the same meaning; any other clash is a bug.
        if _name in METRICS and _name != "pred_obs_ratio":
            raise RuntimeError(f"metric {_name!r} is declared twice")
        METRICS.setdefault(_name, _fn)
NO_BOOTSTRAP: frozenset[str] = frozenset().union(*(m.NO_BOOTSTRAP for m in _MODULES))

__all__ = ["METRICS", "NO_BOOTSTRAP", "Array", "Cols", "Metric"]
