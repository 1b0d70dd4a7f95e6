"""Keyed pseudonyms for user identifiers (HMAC-SHA256), applied before data reaches any table."""

from __future__ import annotations

import hashlib
import hmac

import pandas as pd

KEY_LENGTH = 32  # hex characters kept: 128 bits, collision-free at any platform scale


def pseudonymise_one(user_id: str, key: bytes) -> str:
    """The pseudonym of one raw user identifier."""
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:KEY_LENGTH]


def pseudonymise(user_ids: pd.Series, key: bytes) -> pd.Series:
    """Pseudonymise a column of raw identifiers; nulls stay null so validation can flag them.

    Each distinct identifier is hashed once: a file repeats its users on many lines.
    """
    result = pd.Series([None] * len(user_ids), index=user_ids.index, dtype="object")
    present = user_ids.notna()
    raw = [str(v) for v in user_ids[present]]
    known = {v: pseudonymise_one(v, key) for v in dict.fromkeys(raw)}
    result[present] = [known[v] for v in raw]
    return result
