"""The model catalog: every declared ModelSpec by its registered-model name."""

from __future__ import annotations

from tasks.models.ads import ad_ctr, ad_cvr
from tasks.models.capacity import capacity_plan
from tasks.models.churn import churn
from tasks.models.gift_revenue import gift_revenue
from tasks.models.product_recs import product_recs
from tasks.models.propensity import paid_content_propensity, subscription_propensity
from tasks.models.segments import user_segments
from tasks.models.spec import ModelSpec
from tasks.models.stream_recs import stream_recs
from tasks.models.traffic import traffic_forecast
from tasks.models.user_growth import user_growth


class UnknownModel(KeyError):
    """A model name that is not in the catalog."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown model"


_SPECS: tuple[ModelSpec, ...] = (
    ad_ctr,
    ad_cvr,
    stream_recs,
    product_recs,
    user_segments,
    user_growth,
    traffic_forecast,
    capacity_plan,
    churn,
    subscription_propensity,
    paid_content_propensity,
    gift_revenue,
)
CATALOG: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> ModelSpec:
    """The spec of that model, else UnknownModel listing the declared names."""
    spec = CATALOG.get(name)
    if spec is None:
        raise UnknownModel(f"unknown model {name!r}; declared models: {', '.join(sorted(CATALOG))}")
    return spec
