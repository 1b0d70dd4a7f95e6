"""Every evaluation metric by name, one module per kind of model (see common.py for the signature).

Each entry declares its direction where the metric is defined; ``higher_is_better`` answers from
these entries, so the gates and the metrics can never disagree about which way is better.
"""

from __future__ import annotations

import re

from tasks.models.metrics import binary, clustering, forecast, plan, ranking, regression
from tasks.models.metrics.common import Array, Cols, Metric, MetricDef

_MODULES = (binary, regression, forecast, ranking, clustering, plan)
# A metric's variants: "ndcg@10" or "ndcg_10", "pinball_0.9" or "pinball_p90" share "ndcg"/"pinball".
_VARIANT = re.compile(r"(@.*|_[a-z]?[0-9][0-9.]*)$")

METRICS: dict[str, MetricDef] = {}
for _module in _MODULES:
    for _name, _entry in _module.METRICS.items():
        # pred_obs_ratio is declared by two kinds with the same meaning; any other clash is a bug.
        if _name in METRICS and not (_name == "pred_obs_ratio" and METRICS[_name].higher_is_better is None):
            raise RuntimeError(f"metric {_name!r} is declared twice")
        METRICS.setdefault(_name, _entry)
NO_BOOTSTRAP: frozenset[str] = frozenset(name for name, entry in METRICS.items() if not entry.bootstrap)


def _family(name: str) -> str:
    """The metric family of a name: its parameter suffix (``@k``, ``_10``, ``_p90``, ``_0.9``) removed."""
    return _VARIANT.sub("", name.lower())


def higher_is_better(metric: str) -> bool:
    """True when a larger value of the metric is better (auc, ndcg_10, recall…), False when smaller is.

    A registered metric answers from its entry; another parameter of a registered family (``ndcg@5``,
    ``hit_rate``, ``pinball_0.5``) from that family's entries. Raises ValueError for a metric whose
    direction is not declared, or that has a target value instead of a direction (pred_obs_ratio).
    """
    entry = METRICS.get(metric)
    if entry is not None:
        if entry.higher_is_better is None:
            raise ValueError(
                f"metric {metric!r} has a target value, not a direction (higher or lower is better): "
                "bound it with a value threshold"
            )
        return entry.higher_is_better
    family = _family(metric)
    directions = {
        e.higher_is_better
        for name, e in METRICS.items()
        if _family(name) == family and e.higher_is_better is not None
    }
    if len(directions) != 1:
        raise ValueError(
            f"unknown metric {metric!r}: its direction (higher or lower is better) is not declared"
        )
    return directions.pop()


__all__ = ["METRICS", "NO_BOOTSTRAP", "Array", "Cols", "Metric", "MetricDef", "higher_is_better"]
