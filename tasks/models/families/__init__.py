"""Shared model machinery: what several catalog models are built from (not models themselves)."""
