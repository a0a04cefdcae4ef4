"""The weights manifest of a run directory: the SHA-256 of every weight file, as written.

``<run_dir>/models/manifest.json`` maps each weight file's name (``round-NNN.safetensors``,
``best.safetensors``) to ``{"round", "sha256", "bytes"}``, recorded by the run recorder the
moment the file was written. Whoever later reads a weight file — the model registry
serving it, ``fedward model pull`` downloading it, ``fedward model evaluate|export|predict``
loading it — checks it against this record, so a file changed after training is caught.
The writer is :class:`fedward.common.rundir.recorder.RunRecorder`; this module is what every
reader shares.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MANIFEST_FILE = "models/manifest.json"
"""The manifest's path inside a run directory."""
MANIFEST_FORMAT = "fedward-models/1"
CHUNK_BYTES = 1 << 20


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks.

    Raises:
        OSError: if the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Weight file name -> ``{"round", "sha256", "bytes"}`` from ``<run_dir>/models/manifest.json``.

    Entries that are not JSON objects are left out; a run without a manifest gives ``{}``.
    The values are as recorded: callers that serve or trust them validate their types.

    Raises:
        OSError: if the manifest exists but cannot be read.
        ValueError: if it is not a JSON object with a ``files`` object (damaged).
    """
    path = Path(run_dir) / MANIFEST_FILE
    if not path.is_file():
        return {}
    document = json.loads(path.read_text(encoding="utf-8"))
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, dict):
        raise ValueError(f"{path} is not a fedward weights manifest (no 'files' object)")
    return {str(name): dict(entry) for name, entry in files.items() if isinstance(entry, dict)}


def manifest_document(files: dict[str, dict[str, Any]]) -> str:
    """The manifest's JSON text for ``files`` (sorted by file name)."""
    return json.dumps({"format": MANIFEST_FORMAT, "files": dict(sorted(files.items()))}, indent=2)
