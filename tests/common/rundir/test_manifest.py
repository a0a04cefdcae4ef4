"""The weights manifest every reader of a run directory shares."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fedward.common.fileio import sha256_of
from fedward.common.rundir.layout import MANIFEST_FILE
from fedward.common.rundir.manifest import read_manifest, write_manifest


def test_round_trip_and_hash(tmp_path: Path) -> None:
    weights = tmp_path / "models" / "round-001.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"x" * 3_000_000)  # more than one read block
    assert sha256_of(weights) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    entry = {"round": 1, "sha256": sha256_of(weights), "bytes": 3_000_000}
    write_manifest(tmp_path, {"round-001.safetensors": entry})
    assert read_manifest(tmp_path) == {"round-001.safetensors": entry}


def test_missing_is_empty_and_damaged_is_an_error(tmp_path: Path) -> None:
    assert read_manifest(tmp_path) == {}
    (tmp_path / "models").mkdir()
    (tmp_path / MANIFEST_FILE).write_text('{"format": "x"}')
    with pytest.raises(ValueError, match="not a fedward weights manifest"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text('{"files": {"best.safetensors": "not an object"}}')
    assert read_manifest(tmp_path) == {}
