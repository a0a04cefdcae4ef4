"""Files that survive crashes: atomic replacement, and JSON records read without surprises.

Every file fedward writes for later (run records, weights, checkpoints, the hospital
roster, registry tokens, the decode cache, pulled models) is replaced atomically: written
to a temporary file in the same folder, flushed and fsynced, renamed over the target
(``os.replace``, atomic on POSIX) and, for records that must survive a power cut, the
folder entry fsynced too. A reader sees the old file or the new one, whole, never a mix.

JSON readers come in two kinds: :func:`read_json_object` for files whose damage is an
error the caller reports, :func:`read_json_or_empty` and :func:`read_jsonl` for files a
crash may have cut short (status, metrics), where what can be read is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
"""Block size for hashing and streaming files, bytes (1 MiB)."""


def write_atomically(
    path: Path,
    write: Callable[[Path], object],
    *,
    mode: int | None = None,
    durable: bool = False,
    sync: bool = True,
) -> None:
    """Create or replace ``path`` with what ``write`` puts into a temporary file beside it.

    Args:
        path: the target file; its folder is created if needed.
        write: writes the whole content into the path it is given (e.g. safetensors'
            ``save_file``, ``shutil.copyfile``).
        mode: permission bits of the new file (e.g. ``0o600`` for secrets), set before any
            byte is written; ``None`` keeps the process umask's default.
        durable: also fsync the folder, so the rename itself survives a power cut.
        sync: fsync the file before the rename; off only for derived data that is
            recomputed when lost (the decode cache), where a cut-short file is detected.

    Raises:
        OSError: if the folder or file cannot be written; the temporary file is removed
            and the previous ``path`` (if any) is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if mode is not None:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))
            os.chmod(tmp, mode)
        write(tmp)
        if sync:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(path.parent)


def atomic_write(
    path: Path, data: bytes | str, *, mode: int | None = None, durable: bool = False, sync: bool = True
) -> None:
    """Create or replace ``path`` with ``data`` (text is UTF-8), atomically.

    Args and raises as :func:`write_atomically`.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    write_atomically(Path(path), lambda tmp: tmp.write_bytes(payload), mode=mode, durable=durable, sync=sync)


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


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


def read_json_object(path: Path) -> dict[str, Any]:
    """A file holding one JSON object.

    Raises:
        OSError: if the file cannot be read (``FileNotFoundError`` when it is missing).
        ValueError: if it is not valid JSON or not an object (a damaged record).
    """
    value = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds JSON {type(value).__name__}, not an object")
    return value


def read_json_or_empty(path: Path) -> dict[str, Any]:
    """A JSON object file as far as it can be read: ``{}`` when missing, unreadable or damaged."""
    with contextlib.suppress(OSError, ValueError):
        return read_json_object(path)
    return {}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; no file gives no rows.

    A line that is not a JSON object (a crash cut the last write short, damaged bytes) is
    skipped with a warning naming the file and line.

    Raises:
        OSError: if the file exists but cannot be read.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return list(_objects(Path(path), lines))


def _objects(path: Path, lines: list[str]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            log.warning("%s line %d is incomplete (interrupted write); skipped", path.name, number)
            continue
        if isinstance(row, dict):
            yield row
