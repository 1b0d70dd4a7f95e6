"""Alias and tag names shared by the registry, the gates and scoring."""

from __future__ import annotations

CHAMPION = "champion"  # the approved version consumers and scoring load
CHALLENGER = "challenger"  # the latest registered candidate
GATE_TAG = "gate"  # "passed" once a version became champion; "rolled_back" after a rollback
GATE_PASSED = "passed"
GATE_ROLLED_BACK = "rolled_back"
SHA_TAG = "model_sha256"  # checksum of every file of the model artifact, recorded at registration
CONTENT_SHA_TAG = "model_content_sha256"  # the same without run-specific metadata (dedupe key)
FINGERPRINT_TAG = "training_fingerprint"
