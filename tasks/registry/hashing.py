"""Checksums of a model artifact directory.

``artifact_sha256`` covers every byte of every file (sorted relative paths), so any tampering
is detected. ``content_sha256`` is the same with run-specific noise left out (the ids and
creation time MLflow writes into ``MLmodel``, the member timestamps of a skops zip), so the same
model trained twice on the same data gets the same value: it is the de-duplication key.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import yaml

CHUNK = 1 << 20
_ID = re.compile(r'"__id__":\s*(\d+)')
_NUMBER = re.compile(r"\d+")
_VOLATILE_MLMODEL_KEYS = frozenset(
    {"artifact_path", "model_id", "model_uuid", "run_id", "utc_time_created", "model_size_bytes"}
)


def _files(root: Path) -> list[tuple[str, Path]]:
    if not root.is_dir():
        raise FileNotFoundError(f"model artifact directory {root} does not exist")
    files = sorted(
        (p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file() or p.is_symlink()
    )
    if not files:
        raise FileNotFoundError(f"model artifact directory {root} holds no files")
    return files


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def artifact_sha256(root: Path) -> str:
    """SHA-256 over every file under root: sorted relative paths, each with its bytes' digest."""
    digest = hashlib.sha256()
    for rel, path in _files(root):
        if path.is_symlink():  # a link could point anywhere at load time: refuse to vouch for it
            raise ValueError(f"model artifact {root} contains a symbolic link: {rel}")
        digest.update(rel.encode("utf-8") + b"\0" + _file_digest(path).encode("ascii") + b"\n")
    return digest.hexdigest()


def content_sha256(root: Path) -> str:
    """SHA-256 of the model's content, ignoring run ids, creation times and zip timestamps."""
    digest = hashlib.sha256()
    for rel, path in _files(root):
        if rel == "MLmodel":
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            kept = {k: v for k, v in document.items() if k not in _VOLATILE_MLMODEL_KEYS}
            part = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()
        elif rel.endswith(".skops") and zipfile.is_zipfile(path):
            part = _zip_digest(path)
        else:
            part = _file_digest(path)
        digest.update(rel.encode("utf-8") + b"\0" + part.encode("ascii") + b"\n")
    return digest.hexdigest()


def _zip_digest(path: Path) -> str:
    """Digest of a skops archive with its object-id file names renumbered in order of appearance.

    skops names array members and ``__id__`` fields after ``id()`` of the pickled objects, which
    differ on every save of the same model.
    """
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        schema = archive.read("schema.json").decode("utf-8") if "schema.json" in names else ""
        mapping: dict[str, str] = {}
        for found in _ID.findall(schema):
            mapping.setdefault(found, f"obj{len(mapping)}")

        def renumber(text: str) -> str:
            return _NUMBER.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)

        members = sorted((renumber(name), name) for name in names)
        for shown, name in members:
            data = renumber(schema).encode("utf-8") if name == "schema.json" else archive.read(name)
            digest.update(shown.encode("utf-8") + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()
