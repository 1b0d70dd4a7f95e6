"""Reference-context values for batch scoring that come from the scored entity's own features."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.featurestore.retrieval import feature_columns


@dataclass(frozen=True)
class FeatureValue:
    """Use the entity's own online value of a feature (e.g. the user's device from user_profile)."""

    ref: str  # "view:feature"

    @property
    def refs(self) -> tuple[str, ...]:
        """The feature references this value needs."""
        return (self.ref,)

    def resolve(self, features: pd.DataFrame) -> pd.Series:
        """The value per entity row."""
        return features[feature_columns([self.ref])[0]]


@dataclass(frozen=True)
class TopChoice:
    """The label whose feature is largest for the entity (e.g. its most-watched category)."""

    choices: tuple[tuple[str, str], ...]  # (label, "view:feature") pairs
    default: str = "missing"

    @property
    def refs(self) -> tuple[str, ...]:
        """The feature references this value needs."""
        return tuple(ref for _, ref in self.choices)

    def resolve(self, features: pd.DataFrame) -> pd.Series:
        """The label of the largest value per entity row (default when all are missing)."""
        columns = feature_columns(self.refs)
        values = features[columns].apply(pd.to_numeric).to_numpy("float64", na_value=np.nan)
        labels = np.array([label for label, _ in self.choices], dtype=object)
        known = ~np.isnan(values).all(axis=1)
        best = np.argmax(np.where(np.isnan(values), -np.inf, values), axis=1)
        return pd.Series(np.where(known, labels[best], self.default), index=features.index, dtype=object)


ContextValue = FeatureValue | TopChoice


def context_refs(context: Mapping[str, Any]) -> tuple[str, ...]:
    """Feature references a scoring context reads, in first-seen order."""
    refs: dict[str, None] = {}
    for value in context.values():
        if isinstance(value, FeatureValue | TopChoice):
            refs.update(dict.fromkeys(value.refs))
    return tuple(refs)


def resolve_context(context: Mapping[str, Any], features: pd.DataFrame) -> pd.DataFrame:
    """The context columns for every entity row: literals broadcast, feature-based values resolved."""
    out = pd.DataFrame(index=features.index)
    for column, value in context.items():
        if isinstance(value, FeatureValue | TopChoice):
            out[column] = value.resolve(features)
        else:
            out[column] = pd.Series([value] * len(features), index=features.index, dtype=object)
    return out
