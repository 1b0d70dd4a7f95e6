"""The SQL feature store: declared feature views, per-partition materialisation, point-in-time retrieval.

Storage: the raw and control tables (``raw_*``, ``partition_status``) come from the Alembic
migrations in ``infra/``; the store's own tables — ``fs_registry`` (every view version and its
definition), ``fs_materializations`` (one row per built partition, with the data version it read)
and one feature table per view version (``fs_<view>__<version8>``) — are created by this package
on first use (``metadata.create_all`` of exactly those tables), so a changed definition lands in
a new table and never overwrites an old version's rows.

Every feature row carries ``created_ts``, the time from which it is known: its ``feature_ts``
for a partition's first build (a backfill of history included), the rebuild's time for a
version added because late rows arrived; retrieval reads only rows known at each event, so
late rows never leak into a training row that precedes their arrival (materialize.py).

Nothing here reads the clock: ``created_ts`` and ``as_of`` are parameters.
"""

from tasks.featurestore.definitions import (
    ENTITIES,
    BuildWindow,
    Entity,
    Feature,
    FeatureView,
    InvalidDefinition,
    UnknownFeature,
    UnknownView,
)
from tasks.featurestore.materialize import (
    PartitionNotReady,
    backfill,
    materialize_incremental,
    materialize_partition,
    materialize_views,
    stale_partitions,
)
from tasks.featurestore.registry import feature_table, freshness, register_view
from tasks.featurestore.retrieval import ViewNotMaterialized, get_historical_features, get_online_features
from tasks.featurestore.views import FEATURE_VIEWS, get_view

__all__ = [
    "ENTITIES",
    "FEATURE_VIEWS",
    "BuildWindow",
    "Entity",
    "Feature",
    "FeatureView",
    "InvalidDefinition",
    "PartitionNotReady",
    "UnknownFeature",
    "UnknownView",
    "ViewNotMaterialized",
    "backfill",
    "feature_table",
    "freshness",
    "get_historical_features",
    "get_online_features",
    "get_view",
    "materialize_incremental",
    "materialize_partition",
    "materialize_views",
    "register_view",
    "stale_partitions",
]
