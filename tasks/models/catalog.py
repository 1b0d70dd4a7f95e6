"""The model catalog: every declared ModelSpec by its registered-model name."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.models.ads import ad_ctr, ad_cvr
from tasks.models.spec import ModelSpec


class UnknownModel(KeyError):
    """A model name that is not in the catalog."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown model"


@dataclass(frozen=True)
class OracleTarget:
    """Where the simulator's true probability of a model's label lives (evaluation only)."""

    table: str
    column: str


CATALOG: dict[str, ModelSpec] = {spec.name: spec for spec in (ad_ctr, ad_cvr)}

# Joined on example_id = event_id; real data has no oracle rows and gets an empty report.
ORACLE_TARGETS: dict[str, OracleTarget] = {
    "ad_ctr": OracleTarget("oracle_ad_impressions", "p_click"),
    "ad_cvr": OracleTarget("oracle_ad_impressions", "p_convert"),
}


def get_spec(name: str) -> ModelSpec:
    """The spec of that model, else UnknownModel listing the declared names."""
    spec = CATALOG.get(name)
    if spec is None:
        raise UnknownModel(f"unknown model {name!r}; declared models: {', '.join(sorted(CATALOG))}")
    return spec
