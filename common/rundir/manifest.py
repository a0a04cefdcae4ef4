"""The weights manifest of a run directory: the SHA-256 of every weight file, as written.

``<run_dir>/models/manifest.json`` maps each weight file's name (``round-NNN.safetensors``,
``best.safetensors``) to ``{"round", "sha256", "bytes"}``, recorded by the run recorder the
moment the file was written. Whoever later reads a weight file — the model registry
serving it, ``fedward model pull`` downloading it, ``fedward model evaluate|export|predict``
loading it — checks it against this record, so a file changed after training is caught.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedward.common.fileio import atomic_write, read_json_object, sha256_of
from fedward.common.rundir.layout import MANIFEST_FILE

MANIFEST_FORMAT = "fedward-models/1"


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
    files = read_json_object(path).get("files")
    if not isinstance(files, dict):
        raise ValueError(f"{path} is not a fedward weights manifest (no 'files' object)")
    return {str(name): dict(entry) for name, entry in files.items() if isinstance(entry, dict)}


def record_weights(run_dir: Path, weights: Path, server_round: int) -> None:
    """Record the SHA-256 and size of a weight file just written (replacing its old entry).

    Raises:
        OSError, ValueError: as :func:`read_manifest`, or if the file cannot be hashed.
    """
    files = read_manifest(run_dir)
    files[weights.name] = {"round": server_round, "sha256": sha256_of(weights), "bytes": weights.stat().st_size}
    write_manifest(run_dir, files)


def write_manifest(run_dir: Path, files: dict[str, dict[str, Any]]) -> None:
    """Replace the manifest with ``files`` (sorted by file name), atomically."""
    document = {"format": MANIFEST_FORMAT, "files": dict(sorted(files.items()))}
    atomic_write(Path(run_dir) / MANIFEST_FILE, json.dumps(document, indent=2))
