"""The scoring frame: every entity of a model's scoring target with its latest features at as_of."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from sqlalchemy import Engine, and_, func, select

from tasks.dates import utc
from tasks.featurestore import feature_table, get_online_features, stale_partitions
from tasks.featurestore.definitions import ENTITIES, FeatureView, parse_ref
from tasks.featurestore.registry import is_registered
from tasks.featurestore.views import FEATURE_VIEWS as VIEWS
from tasks.models.context import context_refs, resolve_context
from tasks.models.spec import ModelSpec
from tasks.models.training import epoch_seconds
from tasks.schema import partition_status


class StaleFeatures(RuntimeError):
    """A feature view the model reads is too old at as_of, or was built from untrusted raw data."""


def _views(refs: tuple[str, ...]) -> list[FeatureView]:
    seen: dict[str, FeatureView] = {}
    for ref in refs:
        view = parse_ref(ref, VIEWS)[0]
        seen.setdefault(view.name, view)
    return list(seen.values())


def check_fresh(engine: Engine, view: FeatureView, as_of: int) -> int:
    """The view's newest feature_ts at as_of; StaleFeatures if older than its TTL or untrusted."""
    with engine.connect() as conn:
        if not is_registered(conn, view):
            raise StaleFeatures(f"feature view {view.name} version {view.version[:8]} was never materialised")
        table = feature_table(view)
        latest = conn.execute(
            select(table.c.feature_ts, table.c.partition_date)
            .where(and_(table.c.feature_ts <= as_of, table.c.created_ts <= as_of))  # known at as_of
            .order_by(table.c.feature_ts.desc())
            .limit(1)
        ).first()
        if latest is None or (view.ttl_s > 0 and latest.feature_ts < as_of - view.ttl_s):
            newest = "none" if latest is None else utc(int(latest.feature_ts)).isoformat()
            raise StaleFeatures(
                f"feature view {view.name}: newest feature_ts {newest} is older than as_of "
                f"{utc(as_of).isoformat()} minus its TTL of {view.ttl_s} s"
            )
        partition = latest.partition_date
        first = partition - dt.timedelta(days=view.lookback_days - 1)
        ps = partition_status
        statuses = conn.execute(
            select(ps.c.table_name, ps.c.partition_date, ps.c.status).where(
                and_(ps.c.table_name.in_(view.sources), ps.c.partition_date.between(first, partition))
            )
        ).all()
    bad = [f"{r.table_name}/{r.partition_date} is {r.status}" for r in statuses if r.status != "validated"]
    primary_ok = any(
        r.table_name == view.primary_source and r.partition_date == partition and r.status == "validated"
        for r in statuses
    )
    if bad or not primary_ok:
        reason = "; ".join(bad) or f"{view.primary_source}/{partition} has no validated status"
        raise StaleFeatures(
            f"feature view {view.name} partition {partition} reads untrusted raw data: {reason}"
        )
    if stale_partitions(engine, view, partition, partition):
        raise StaleFeatures(
            f"feature view {view.name} partition {partition} was built from raw data that has since changed"
        )
    return int(latest.feature_ts)


def _population(engine: Engine, view: FeatureView, as_of: int) -> pd.DataFrame:
    """Entities with a row of the population view inside its TTL at as_of, in key order."""
    table = feature_table(view)
    key = table.c[view.key]
    query = select(key).where(and_(table.c.feature_ts <= as_of, table.c.created_ts <= as_of))
    if view.ttl_s > 0:
        query = query.where(table.c.feature_ts >= as_of - view.ttl_s)
    with engine.connect() as conn:
        keys = [r[0] for r in conn.execute(query.group_by(key).order_by(func.min(key)))]
    return pd.DataFrame({view.key: sorted(keys)}, dtype=object)


def build_scoring_frame(
    engine: Engine, spec: ModelSpec, as_of: dt.datetime, partition: tuple[int, int] | None = None
) -> pd.DataFrame:
    """Key column + the spec's input columns for every scorable entity, features as of as_of.

    ``partition`` = (part, parts) keeps the entities of one entity-key partition
    (tasks/scoring/partitions.py): the same rows the whole frame holds for them.

    The population is the entities with a row, in TTL, of the longest-TTL view of the scoring
    entity the model reads (user_profile for user models). Context columns come from the
    spec's reference context; feature-based context values use the entity's own features.
    """
    target = spec.scoring
    entity = ENTITIES[target.entity]
    ts = epoch_seconds(as_of)
    refs = tuple(dict.fromkeys([*spec.feature_refs, *context_refs(target.context)]))
    views = _views(refs)
    for view in views:
        check_fresh(engine, view, ts)
    own = [v for v in views if v.entity == target.entity]
    if not own:
        raise ValueError(f"{spec.name}: reads no feature view of its scoring entity {target.entity}")
    population = _population(engine, max(own, key=lambda v: (v.ttl_s, v.name)), ts)
    if partition is not None:
        from tasks.scoring.partitions import in_partition

        population = in_partition(population, target.key, *partition)
    keys = population.copy()
    # Other entities' keys (e.g. ad_id) come from the context; None means "no such history".
    for view in views:
        other = ENTITIES[view.entity]
        if other.key != entity.key and other.constant is None and other.key not in keys:
            value = target.context.get(other.key)
            keys[other.key] = pd.Series([value] * len(keys), index=keys.index, dtype=object)
    features = get_online_features(engine, keys, refs, ts)
    context = resolve_context(target.context, features)
    out = features.copy()
    for column in context.columns:
        out[column] = context[column]
    missing = [c for c in spec.input_columns if c not in out.columns]
    if missing:
        raise ValueError(f"{spec.name}: the scoring context gives no value for inputs {missing}")
    return out[[target.key, *spec.input_columns]].reset_index(drop=True)
