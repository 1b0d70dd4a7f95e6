"""The warehouse schema: raw event tables, oracle (ground-truth) tables and control tables.

Conventions that every backend shares:

* every raw row is an event with a unique ``event_id`` (primary key, so replays dedupe),
  an ``event_ts`` in UTC epoch seconds and an ``event_date`` partition key derived from it;
* timestamps are integers so that point-in-time arithmetic is the same SQL on SQLite and
  PostgreSQL;
* users appear only as ``user_key`` (a keyed HMAC pseudonym); the raw id lives in
  ``identity_users`` alone;
* ``oracle_*`` tables hold the simulator's ground truth; only evaluation may read them.

Alembic migrations in ``infra/migrations`` create these tables; a test checks that the
migrations and this module agree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

ID = String(64)
NAME = String(64)


def _raw(name: str, *columns: Column, doc: str) -> Table:
    """Declare a raw event table with the shared event columns and partition index."""
    table = Table(
        name,
        metadata,
        Column("event_id", ID, primary_key=True),
        Column("event_ts", BigInteger, nullable=False),
        Column("event_date", Date, nullable=False),
        *columns,
        comment=doc,
    )
    Index(f"ix_{name}_event_date", table.c.event_date)
    return table


raw_users = _raw(
    "raw_users",
    Column("user_key", ID, nullable=False),
    Column("region", NAME, nullable=False),
    Column("device", NAME),
    Column("age_band", NAME),
    Column("channel", NAME, nullable=False),
    doc="One signup event per user.",
)

raw_streamers = _raw(
    "raw_streamers",
    Column("streamer_id", ID, nullable=False),
    Column("category", NAME, nullable=False),
    Column("region", NAME, nullable=False),
    doc="One onboarding event per streamer.",
)

raw_streams = _raw(
    "raw_streams",
    Column("stream_id", ID, nullable=False),
    Column("streamer_id", ID, nullable=False),
    Column("category", NAME, nullable=False),
    Column("region", NAME, nullable=False),
    Column("is_commerce", Integer, nullable=False),
    Column("end_ts", BigInteger, nullable=False),
    doc="A live stream; event_ts is when it went live, end_ts when it ended.",
)

raw_watch_sessions = _raw(
    "raw_watch_sessions",
    Column("user_key", ID, nullable=False),
    Column("stream_id", ID, nullable=False),
    Column("streamer_id", ID, nullable=False),
    Column("category", NAME, nullable=False),
    Column("region", NAME, nullable=False),
    Column("device", NAME),
    Column("end_ts", BigInteger, nullable=False),
    Column("duration_s", Integer, nullable=False),
    doc="A user watching one live stream; event_ts is the start.",
)

raw_follows = _raw(
    "raw_follows",
    Column("user_key", ID, nullable=False),
    Column("streamer_id", ID, nullable=False),
    doc="A user following a streamer.",
)

raw_ads = _raw(
    "raw_ads",
    Column("ad_id", ID, nullable=False),
    Column("advertiser_id", ID, nullable=False),
    Column("ad_category", NAME, nullable=False),
    Column("bid_type", NAME, nullable=False),
    Column("bid", Float, nullable=False),
    doc="An ad creative entering the catalogue.",
)

raw_ad_impressions = _raw(
    "raw_ad_impressions",
    Column("user_key", ID, nullable=False),
    Column("ad_id", ID, nullable=False),
    Column("stream_id", ID, nullable=False),
    Column("position", Integer, nullable=False),
    Column("hour", Integer, nullable=False),
    Column("device", NAME),
    Column("region", NAME, nullable=False),
    Column("clicked", Integer, nullable=False),
    Column("converted", Integer, nullable=False),
    doc="An ad shown during watching, with its click and conversion outcome.",
)

raw_ad_delivery = _raw(
    "raw_ad_delivery",
    Column("ad_id", ID, nullable=False),
    Column("impressions", Integer, nullable=False),
    Column("clicks", Integer, nullable=False),
    Column("conversions", Integer, nullable=False),
    Column("ctr", Float, nullable=False),
    Column("spend", Float, nullable=False),
    doc="The ad server's hourly delivery report per ad; event_ts is the hour.",
)

raw_products = _raw(
    "raw_products",
    Column("product_id", ID, nullable=False),
    Column("streamer_id", ID),
    Column("category", NAME, nullable=False),
    Column("price", Float, nullable=False),
    Column("commission_rate", Float, nullable=False),
    doc="A product entering the live-commerce catalogue.",
)

raw_product_views = _raw(
    "raw_product_views",
    Column("user_key", ID, nullable=False),
    Column("product_id", ID, nullable=False),
    Column("stream_id", ID),
    Column("streamer_id", ID),
    doc="A user opening a product card in a commerce stream.",
)

raw_orders = _raw(
    "raw_orders",
    Column("order_ref", ID),
    Column("user_key", ID, nullable=False),
    Column("product_id", ID, nullable=False),
    Column("stream_id", ID),
    Column("streamer_id", ID),
    Column("region", NAME),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", Float, nullable=False),
    Column("amount", Float, nullable=False),
    Column("commission", Float, nullable=False),
    doc="An order line in live commerce.",
)

raw_gifts = _raw(
    "raw_gifts",
    Column("user_key", ID, nullable=False),
    Column("streamer_id", ID, nullable=False),
    Column("stream_id", ID, nullable=False),
    Column("amount", Float, nullable=False),
    Column("platform_share", Float, nullable=False),
    doc="A gift (tip) sent to a streamer during a live stream.",
)

raw_memberships = _raw(
    "raw_memberships",
    Column("user_key", ID, nullable=False),
    Column("streamer_id", ID, nullable=False),
    Column("action", NAME, nullable=False),
    Column("plan", NAME, nullable=False),
    Column("fee", Float, nullable=False),
    doc="A membership subscribe, renew or cancel event.",
)

raw_paid_content = _raw(
    "raw_paid_content",
    Column("user_key", ID, nullable=False),
    Column("content_id", ID, nullable=False),
    Column("streamer_id", ID, nullable=False),
    Column("price", Float, nullable=False),
    doc="A purchase of paid content (replay, course, premium stream).",
)

raw_traffic = _raw(
    "raw_traffic",
    Column("region", NAME, nullable=False),
    Column("concurrent_viewers", Float, nullable=False),
    Column("bandwidth_mbps", Float),
    Column("capacity_viewers", Float),
    doc="Concurrent viewers, bandwidth and serving capacity per region and time step.",
)

raw_revenue = _raw(
    "raw_revenue",
    Column("source", NAME, nullable=False),
    Column("amount", Float, nullable=False),
    Column("user_key", ID),
    Column("streamer_id", ID),
    Column("ref_event_id", ID),
    doc="The platform's revenue ledger: one line per earning event.",
)

RAW_TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        raw_users,
        raw_streamers,
        raw_streams,
        raw_watch_sessions,
        raw_follows,
        raw_ads,
        raw_ad_impressions,
        raw_ad_delivery,
        raw_products,
        raw_product_views,
        raw_orders,
        raw_gifts,
        raw_memberships,
        raw_paid_content,
        raw_traffic,
        raw_revenue,
    )
}

# --- identity: the only table that holds raw user identifiers ---------------------------

identity_users = Table(
    "identity_users",
    metadata,
    Column("user_key", ID, primary_key=True),
    Column("user_id", String(256), nullable=False),
    Column("email", String(320)),
    comment="Pseudonym to raw identifier; never joined into features, scores or artifacts.",
)

# --- oracle: the simulator's ground truth (evaluation only) -----------------------------

oracle_users = Table(
    "oracle_users",
    metadata,
    Column("user_key", ID, primary_key=True),
    Column("activity", Float, nullable=False),
    Column("spend_propensity", Float, nullable=False),
    Column("churn_hazard", Float, nullable=False),
    Column("churned_ts", BigInteger),
    Column("segment", Integer, nullable=False),
    Column("segment_name", NAME, nullable=False),
    Column("top_category", NAME, nullable=False),
    Column("interests", Text, nullable=False),
    comment="Latent user traits; interests is a JSON object category -> weight.",
)

oracle_streamers = Table(
    "oracle_streamers",
    metadata,
    Column("streamer_id", ID, primary_key=True),
    Column("quality", Float, nullable=False),
    Column("start_hour", Integer, nullable=False),
    Column("live_hours", Integer, nullable=False),
    Column("days_mask", Integer, nullable=False),
    comment="Latent streamer quality and weekly schedule.",
)

oracle_ad_impressions = Table(
    "oracle_ad_impressions",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("event_date", Date, nullable=False),
    Column("p_click", Float, nullable=False),
    Column("p_convert", Float, nullable=False),
    comment="True click and conversion probabilities of each impression.",
)

oracle_shifts = Table(
    "oracle_shifts",
    metadata,
    Column("kind", NAME, primary_key=True),
    Column("from_date", Date, primary_key=True),
    Column("params", Text, nullable=False),
    comment="Changes the simulator planted from a day on; params is a JSON object.",
)

ORACLE_TABLES: dict[str, Table] = {
    t.name: t for t in (oracle_users, oracle_streamers, oracle_ad_impressions, oracle_shifts)
}

# --- control: validation runs, quarantine, partition status -----------------------------

validation_runs = Table(
    "validation_runs",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("table_name", NAME, nullable=False),
    Column("partition_date", Date),
    Column("suite_name", NAME, nullable=False),
    Column("suite_hash", String(64), nullable=False),
    Column("source", String(512), nullable=False),
    Column("success", Boolean, nullable=False),
    Column("rows_total", BigInteger, nullable=False),
    Column("rows_loaded", BigInteger, nullable=False),
    Column("rows_quarantined", BigInteger, nullable=False),
    Column("rows_duplicate", BigInteger, nullable=False),
    Column("bad_share", Float, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("report", Text, nullable=False),
    Column("flow_run_id", String(64)),
    Column("finished_ts", BigInteger, nullable=False),
    # A batch (same content, same suite) is validated once: a replay or a concurrent rerun
    # of the same batch hits this constraint and is skipped instead of double-counted.
    UniqueConstraint("table_name", "fingerprint", "suite_hash", name="uq_validation_runs_batch"),
    comment="One row per validated (table, partition) batch.",
)
Index("ix_validation_runs_partition", validation_runs.c.table_name, validation_runs.c.partition_date)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("run_id", String(36), nullable=False),
    Column("table_name", NAME, nullable=False),
    Column("partition_date", Date),
    Column("event_id", String(256)),
    Column("rule", NAME, nullable=False),
    Column("column_name", NAME),
    Column("reason", Text, nullable=False),
    Column("payload", Text, nullable=False),
    comment="Rejected rows with the rule they broke; payload is the row as JSON.",
)
Index("ix_quarantine_table_partition", quarantine.c.table_name, quarantine.c.partition_date)

partition_status = Table(
    "partition_status",
    metadata,
    Column("table_name", NAME, primary_key=True),
    Column("partition_date", Date, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("last_run_id", String(36), nullable=False),
    Column("row_count", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    comment="Latest validation verdict per partition; downstream reads only 'validated'.",
)

# --- model lifecycle: champion pointer, alias ledger, score sets ------------------------

model_champions = Table(
    "model_champions",
    metadata,
    Column("model_name", NAME, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("ledger_id", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    comment="The current champion per model: the row compare-and-set promotions update.",
)

alias_ledger = Table(
    "alias_ledger",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("model_name", NAME, nullable=False),
    Column("alias", NAME, nullable=False),
    Column("from_version", Integer),
    Column("to_version", Integer),
    Column("action", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("report", Text, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("flow_run_id", String(64)),
    Column("created_ts", BigInteger, nullable=False),
    # The integrity record of the version moved to (NULL on moves recorded before it existed):
    # load_approved checks a downloaded artifact against model_sha256, never an MLflow tag.
    Column("model_sha256", String(64)),
    Column("gate_verdict", String(16)),
    Column("report_sha256", String(64)),
    comment="Every move of @champion (promote, rollback): who, what, why, previous.",
)
Index("ix_alias_ledger_model", alias_ledger.c.model_name, alias_ledger.c.id)

score_sets = Table(
    "score_sets",
    metadata,
    Column("score_set_id", String(36), primary_key=True),
    Column("model_name", NAME, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("as_of", BigInteger, nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    comment="One batch-scoring output; 'staged' until published, then 'published'.",
)

scores = Table(
    "scores",
    metadata,
    Column("score_set_id", String(36), primary_key=True),
    Column("entity_key", String(128), primary_key=True),
    Column("item", String(128), primary_key=True, server_default=""),
    Column("model_name", NAME, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("as_of", BigInteger, nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("score", Float, nullable=False),
    Column("rank", Integer),
    Column("lower", Float),
    Column("upper", Float),
    Column("label", String(128)),
    Column("detail", Text),
    comment="Scored rows of every score set; consumers read current_scores.",
)

published_scores = Table(
    "published_scores",
    metadata,
    Column("model_name", NAME, primary_key=True),
    Column("score_set_id", String(36), nullable=False),
    Column("published_ts", BigInteger, nullable=False),
    comment="The pointer consumers follow: flipping it publishes a score set atomically.",
)

# The view consumers read: only rows of each model's published score set.
CURRENT_SCORES_VIEW = """
CREATE VIEW current_scores AS
SELECT s.* FROM scores s
JOIN published_scores p ON p.score_set_id = s.score_set_id AND p.model_name = s.model_name
"""

# --- monitoring: drift, freshness and realised-performance checks -----------------------

monitoring_checks = Table(
    "monitoring_checks",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("model", NAME, nullable=False),
    Column("version", Integer),
    Column("as_of", BigInteger, nullable=False),
    Column("check", String(32), nullable=False),
    Column("feature", String(128)),
    Column("statistic", NAME, nullable=False),
    Column("value", Float),
    Column("threshold", Float),
    Column("status", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    Column("run_id", String(64)),
    Column("recorded_at", BigInteger, nullable=False),
    comment="One row per monitoring statistic: model, version, as_of, check, value, threshold, status.",
)
Index(
    "ix_monitoring_checks_model",
    monitoring_checks.c.model,
    monitoring_checks.c.check,
    monitoring_checks.c.as_of,
)
