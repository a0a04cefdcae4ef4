"""Atomic writes and tolerant JSON readers: a reader never sees half a file, a crash loses nothing written."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from fedward.common.fileio import atomic_write, read_json_object, read_json_or_empty, read_jsonl, write_atomically


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "status.json"
    atomic_write(target, '{"state": "running"}')
    atomic_write(target, b'{"state": "completed"}', durable=True)
    assert read_json_object(target) == {"state": "completed"}
    assert [p.name for p in target.parent.iterdir()] == ["status.json"]


def test_a_failing_writer_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "weights.bin"
    atomic_write(target, b"old")

    def crash(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, crash)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"], "the temporary file is removed"


def test_secrets_are_private_from_the_first_byte(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "tokens.json", "{}", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode) == 0o600


def test_json_readers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert read_json_or_empty(tmp_path / "missing.json") == {}
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not an object"):
        read_json_object(tmp_path / "list.json")
    assert read_json_or_empty(tmp_path / "list.json") == {}
    rows = tmp_path / "server.jsonl"
    rows.write_bytes(b'{"round": 0}\n\n{"round": 1}\n\xff{"round": 2, "val-a')
    with caplog.at_level(logging.WARNING, logger="fedward.common.fileio"):
        assert read_jsonl(rows) == [{"round": 0}, {"round": 1}]
    assert "server.jsonl line 4 is incomplete" in caplog.text
    assert read_jsonl(tmp_path / "none.jsonl") == []
