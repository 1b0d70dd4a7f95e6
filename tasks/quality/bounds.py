"""Bound delivered text before it is stored or shown: payloads, reports, messages, Data Docs.

A delivery may hold a multi-megabyte string or a header with thousands of columns; the gate
rejects such rows, but it must not copy them whole into the quarantine, the run records or
the Data Docs, where one bad file would then bloat every reader.
"""

from __future__ import annotations

from typing import Any

MAX_VALUE_CHARS = 256  # characters kept of one delivered value or name
MAX_ITEMS = 100  # list items and mapping entries kept of one delivered collection
MAX_MESSAGE_CHARS = 4_000  # characters kept of one message or reason


def clip(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """The text, or its first ``limit`` characters and how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[+{len(text) - limit} chars]"


def bounded(value: Any, limit: int = MAX_VALUE_CHARS, items: int = MAX_ITEMS) -> Any:
    """A copy of a JSON-like value with every string clipped and every collection cut to ``items``."""
    if isinstance(value, str):
        return clip(value, limit)
    if isinstance(value, dict):
        kept = list(value.items())
        out = {clip(str(k), limit): bounded(v, limit, items) for k, v in kept[:items]}
        if len(kept) > items:
            out["…"] = f"+{len(kept) - items} entries"
        return out
    if isinstance(value, (list, tuple)):
        out_list = [bounded(v, limit, items) for v in value[:items]]
        if len(value) > items:
            out_list.append(f"…[+{len(value) - items} items]")
        return out_list
    return value
