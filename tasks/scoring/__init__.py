"""Batch scoring output: staged score sets, validated by the `scores` suite, published atomically."""

from tasks.scoring.publish import (
    KEEP_PUBLISHED,
    PublishResult,
    ScoreSetError,
    ScoreValidationError,
    follow_rollback,
    lock_publication,
    publication,
    publish,
    published_score_set,
    read_current_scores,
    score_set_id_for,
    score_set_status,
    validate_score_set,
    write_score_set,
)

__all__ = [
    "KEEP_PUBLISHED",
    "PublishResult",
    "ScoreSetError",
    "ScoreValidationError",
    "follow_rollback",
    "lock_publication",
    "publication",
    "publish",
    "published_score_set",
    "read_current_scores",
    "score_set_id_for",
    "score_set_status",
    "validate_score_set",
    "write_score_set",
]
