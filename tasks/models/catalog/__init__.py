"""The model catalog: one module per registered model, named after it, and MODELS by name.

A reader who knows a model's name opens ``tasks/models/catalog/<name>.py`` (or the package of
that name) and finds its labels, feature references, estimator, policy and scoring there.
"""

from __future__ import annotations

from tasks.models.catalog import (  # the modules; the package never shadows them with specs
    ad_ctr,
    ad_cvr,
    capacity_plan,
    churn,
    gift_revenue,
    paid_content_propensity,
    product_recs,
    stream_recs,
    subscription_propensity,
    traffic_forecast,
    user_growth,
    user_segments,
)
from tasks.models.spec import ModelSpec


class UnknownModel(KeyError):
    """A model name that is not in the catalog."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown model"


_SPECS: tuple[ModelSpec, ...] = (
    ad_ctr.ad_ctr,
    ad_cvr.ad_cvr,
    stream_recs.stream_recs,
    product_recs.product_recs,
    user_segments.user_segments,
    user_growth.user_growth,
    traffic_forecast.traffic_forecast,
    capacity_plan.capacity_plan,
    churn.churn,
    subscription_propensity.subscription_propensity,
    paid_content_propensity.paid_content_propensity,
    gift_revenue.gift_revenue,
)
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> ModelSpec:
    """The spec of that model, else UnknownModel listing the declared names."""
    spec = MODELS.get(name)
    if spec is None:
        raise UnknownModel(f"unknown model {name!r}; declared models: {', '.join(sorted(MODELS))}")
    return spec
