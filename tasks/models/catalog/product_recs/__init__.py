"""product_recs: which products to show a user in live commerce (two-stage ranking), as a ModelSpec.

Stage one generates candidates per user from collaborative filtering on the user × product
interaction matrix (orders, and product-card views at a lower weight) built ONLY from
interactions before the cut-off: item-item co-occurrence (item-kNN) and a truncated SVD
(PureSVD), joined by the user's own recent products, the shelves of the streamers the user
watches most (what live commerce puts on screen), the shelves the user is likely to see next
(streamer affinity: category interest × the streamer's share of its category's audience, which
reaches streamers never watched, where most purchases happen), the shelves of streamers
co-watched with the user's own (streamer-level item-kNN on watch time) and the most popular
products.
Stage two re-ranks the candidates with XGBoost ``rank:ndcg`` on user, product, streamer and
user × product features, all computed from data before the cut-off, starting from the
product's expected share of the user's purchases as prior: the chance the user watches the
streamer next (own watch share and affinity, mixed by the platform's repeat share) × the
product's share of its shelf's orders.

The modules, in reading order: ``data`` (histories through the feature store, the catalogue,
integer codes), ``affinity`` (streamer affinity and co-watch), ``candidates`` (candidate rows
and their features at one cut-off), ``ranker`` (the scikit-learn re-ranker) and ``spec``
(labels, scoring, policy and the ModelSpec).
"""

from tasks.models.catalog.product_recs.candidates import (
    CANDIDATE_FEATURES,
    CONFIG,
    RecsConfig,
    candidates_at,
)
from tasks.models.catalog.product_recs.data import (
    CommerceData,
    commerce_data,
    commerce_from_store,
    load_commerce,
)
from tasks.models.catalog.product_recs.ranker import GROUP, RANKER_DEFAULTS, ProductRanker, make_estimator
from tasks.models.catalog.product_recs.spec import (
    CONTEXT,
    FEATURE_REFS,
    KS,
    LABEL_SOURCES,
    METRICS,
    POLICY,
    TOP_K,
    build_examples,
    cutoffs_in,
    format_scores,
    make_label_builder,
    make_scoring_frame_builder,
    product_recs,
    ranking_at_k,
    ranking_plots,
    scoring_users,
)

__all__ = [
    "CANDIDATE_FEATURES",
    "CONFIG",
    "CONTEXT",
    "FEATURE_REFS",
    "GROUP",
    "KS",
    "LABEL_SOURCES",
    "METRICS",
    "POLICY",
    "RANKER_DEFAULTS",
    "TOP_K",
    "CommerceData",
    "ProductRanker",
    "RecsConfig",
    "build_examples",
    "candidates_at",
    "commerce_data",
    "commerce_from_store",
    "cutoffs_in",
    "format_scores",
    "load_commerce",
    "make_estimator",
    "make_label_builder",
    "make_scoring_frame_builder",
    "product_recs",
    "ranking_at_k",
    "ranking_plots",
    "scoring_users",
]
