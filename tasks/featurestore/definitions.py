"""Declarations of the feature store: entities, typed features and feature views with a version hash.

A feature view's source is either a SQL select or a pure pandas transform. A SQL source is
run as ``INSERT INTO <feature table> SELECT ... FROM (<sql>)`` for one partition, with these
bound parameters (values only, never spliced into the text):

* ``:part_start`` / ``:part_end`` — epoch seconds of the partition day's start and end
  (exclusive); a daily view's ``feature_ts`` is ``:part_end``;
* ``:window_start`` — ``:part_end`` minus the lookback window, epoch seconds;
* ``:first_date`` / ``:partition_date`` — the first and last ``event_date`` of the window,
  so that the select can use the raw tables' partition index.

It must return the entity key column, ``feature_ts`` and one column per feature.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from tasks.dates import DAY_S, day_start
from tasks.warehouse import raw_table

HOUR_S = 3_600
# What the store writes for a view, part of every version hash: a change of meaning of the rows
# (2: ``created_ts`` is when a row became known, see tasks/featurestore/materialize.py) gives
# every view a new version and table, so rows written under the old meaning are never read.
STORE_FORMAT = 2
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,40}$")

FeatureType = Literal["int", "float", "str", "text"]  # str: a short label; text: unbounded (JSON lists)
Granularity = Literal["daily", "hourly"]


class UnknownView(ValueError):
    """A feature view name that is not declared."""


class UnknownFeature(ValueError):
    """A feature reference naming a feature its view does not declare."""


class InvalidDefinition(ValueError):
    """A feature view declaration that breaks the store's rules."""


@dataclass(frozen=True)
class Entity:
    """What features describe: a name and the key column that identifies one instance."""

    name: str
    key: str
    constant: str | None = None  # a single-instance entity (platform) always has this key


ENTITIES: dict[str, Entity] = {
    e.name: e
    for e in (
        Entity("user", "user_key"),
        Entity("streamer", "streamer_id"),
        Entity("stream", "stream_id"),
        Entity("product", "product_id"),
        Entity("ad", "ad_id"),
        Entity("region", "region"),
        Entity("series", "series"),  # one forecast series, e.g. "eu/viewers" (a region and a measure)
        Entity("platform", "platform", constant="all"),
    )
}


@dataclass(frozen=True)
class Feature:
    """One typed feature column of a view."""

    name: str
    dtype: FeatureType = "float"


@dataclass(frozen=True)
class BuildWindow:
    """The time bounds of one partition build, handed to SQL as parameters and to transforms."""

    partition: dt.date
    part_start: int
    part_end: int
    window_start: int
    first_date: dt.date

    @classmethod
    def of(cls, partition: dt.date, lookback_days: int) -> BuildWindow:
        """The window of a partition day with that many days of lookback (the day included)."""
        start = day_start(partition)
        end = start + DAY_S
        return cls(
            partition=partition,
            part_start=start,
            part_end=end,
            window_start=end - lookback_days * DAY_S,
            first_date=partition - dt.timedelta(days=lookback_days - 1),
        )

    def params(self) -> dict[str, Any]:
        """Bound parameters of a SQL source."""
        return {
            "part_start": self.part_start,
            "part_end": self.part_end,
            "window_start": self.window_start,
            "first_date": self.first_date,
            "partition_date": self.partition,
        }


Transform = Callable[[Mapping[str, pd.DataFrame], BuildWindow], pd.DataFrame]


@dataclass(frozen=True)
class FeatureView:
    """A named, versioned group of features of one entity, computed per partition from raw tables."""

    name: str
    entity: str
    features: tuple[Feature, ...]
    ttl_s: int
    sources: tuple[str, ...]  # raw tables read; the first is the primary (must be validated)
    lookback_days: int = 1
    granularity: Granularity = "daily"
    sql: str | None = None
    transform: Transform | None = field(default=None, compare=False)
    owner: str = "features"
    description: str = ""

    def __post_init__(self) -> None:
        if not IDENTIFIER.match(self.name) or "__" in self.name:
            raise InvalidDefinition(f"feature view name {self.name!r} is not a plain identifier")
        if self.entity not in ENTITIES:
            raise InvalidDefinition(f"{self.name}: unknown entity {self.entity!r}")
        names = [f.name for f in self.features]
        bad = [n for n in names if not IDENTIFIER.match(n)]
        if bad or not names or len(set(names)) != len(names):
            raise InvalidDefinition(f"{self.name}: feature names must be unique identifiers, got {names}")
        reserved = {self.key, "feature_ts", "created_ts", "partition_date"}
        if reserved & set(names):
            raise InvalidDefinition(f"{self.name}: feature names clash with {sorted(reserved & set(names))}")
        if (self.sql is None) == (self.transform is None):
            raise InvalidDefinition(f"{self.name}: give exactly one of sql or transform")
        if not self.sources or self.lookback_days < 1 or self.ttl_s < 0:
            raise InvalidDefinition(f"{self.name}: needs sources, lookback_days >= 1 and ttl_s >= 0")
        for source in self.sources:
            table = raw_table(source)  # refuses undeclared tables
            if self.transform is not None and self.key not in table.c:
                # pandas sources are read in chunks of entity keys, so each must carry the key
                raise InvalidDefinition(f"{self.name}: transform source {source} lacks {self.key}")

    @property
    def key(self) -> str:
        """The entity key column."""
        return ENTITIES[self.entity].key

    @property
    def primary_source(self) -> str:
        """The raw table whose validated partition D is required to build partition D."""
        return self.sources[0]

    def source_text(self) -> str:
        """The SQL text, or the transform function's source code."""
        if self.sql is not None:
            return self.sql
        assert self.transform is not None
        return inspect.getsource(self.transform)

    def canonical(self) -> dict[str, Any]:
        """The parts of the definition that decide its values (owner and description do not)."""
        return {
            "name": self.name,
            "entity": self.entity,
            "features": [[f.name, f.dtype] for f in self.features],
            "ttl_s": self.ttl_s,
            "sources": list(self.sources),
            "lookback_days": self.lookback_days,
            "granularity": self.granularity,
            "source": self.source_text(),
            "store_format": STORE_FORMAT,
        }

    @property
    def version(self) -> str:
        """sha256 of the canonical definition: any semantic change gives a new version."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def table_name(self) -> str:
        """The feature table of this version; a new version never overwrites an old one's rows."""
        return f"fs_{self.name}__{self.version[:8]}"

    def definition_json(self) -> str:
        """The registry's record of this definition."""
        record = {**self.canonical(), "owner": self.owner, "description": self.description}
        record["kind"] = "sql" if self.sql is not None else "pandas"
        record["version"] = self.version
        return json.dumps(record, sort_keys=True)

    def feature(self, name: str) -> Feature:
        """The declared feature of that name, else UnknownFeature."""
        for f in self.features:
            if f.name == name:
                return f
        raise UnknownFeature(
            f"feature view {self.name!r} has no feature {name!r}; "
            f"declared: {', '.join(f.name for f in self.features)}"
        )


def parse_ref(ref: str, views: Mapping[str, FeatureView]) -> tuple[FeatureView, Feature]:
    """Resolve "view:feature" against declared views; anything undeclared is refused."""
    view_name, sep, feature_name = ref.partition(":")
    if not sep:
        raise UnknownFeature(f"feature reference {ref!r} is not of the form 'view:feature'")
    view = views.get(view_name)
    if view is None:
        raise UnknownView(f"unknown feature view {view_name!r}; declared views: {', '.join(sorted(views))}")
    return view, view.feature(feature_name)
