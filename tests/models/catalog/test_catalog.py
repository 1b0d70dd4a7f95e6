"""The catalog's shape: one module (or package) per registered model, named after it, and every model
reading its inputs through the feature store."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import tasks.models.catalog as catalog_package
from tasks.featurestore import FEATURE_VIEWS
from tasks.featurestore.definitions import parse_ref
from tasks.models.catalog import MODELS


def test_every_model_module_is_named_after_its_model_and_declares_it() -> None:
    modules = {info.name for info in pkgutil.iter_modules(catalog_package.__path__)}
    assert modules == set(MODELS)
    for name in modules:
        module = importlib.import_module(f"tasks.models.catalog.{name}")
        assert getattr(module, name) is MODELS[name]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_reads_declared_features(name: str) -> None:
    spec = MODELS[name]
    assert spec.feature_refs, f"{name} declares no feature references: its inputs bypass the feature store"
    for ref in spec.feature_refs:
        view, feature = parse_ref(ref, FEATURE_VIEWS)
        assert view.name in FEATURE_VIEWS and feature.name == ref.split(":")[1]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_history_views_are_declared_views(name: str) -> None:
    assert set(MODELS[name].history_views) <= set(FEATURE_VIEWS)
