"""The model catalog: every declared ModelSpec by its registered-model name."""

from __future__ import annotations

from tasks.models.ads import ad_ctr, ad_cvr
from tasks.models.spec import ModelSpec


class UnknownModel(KeyError):
    """A model name that is not in the catalog."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown model"


_SPECS: tuple[ModelSpec, ...] = (
    ad_ctr,
    ad_cvr,
)
CATALOG: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> ModelSpec:
    """The spec of that model, else UnknownModel listing the declared names."""
    spec = CATALOG.get(name)
    if spec is None:
        raise UnknownModel(f"unknown model {name!r}; declared models: {', '.join(sorted(CATALOG))}")
    return spec
