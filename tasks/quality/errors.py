"""The one error the quality gate raises when it cannot give a trustworthy verdict."""

from __future__ import annotations


class QualityError(RuntimeError):
    """GX failed to run or a suite is missing/invalid: the flow must fail, never skip."""
