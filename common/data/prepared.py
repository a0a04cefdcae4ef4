"""Cache of prepared folder data sets on disk, so that only the first hospital process decodes a folder.

A folder data set (image + mask folder, Decathlon folder) is read once into a
:class:`~fedward.common.data.maskfolder.FolderRead`: every split's arrays go into one
uncompressed ``.npz`` and the schema, the split kinds, the problems, the strata and the
case ids into a small ``.json`` beside it, under ``<cache root>/prepared/``. Later
processes (every simulated hospital, every round in a new process) load these instead of
decoding again.

The key hashes the folder's absolute path, every (non-hidden) file's relative path, size
and modification time (ns), the reading settings and :data:`PREPARED_VERSION`: a file
that is added, removed or changed, or a run at another grid, misses the cache. Entries are
written atomically (:func:`~fedward.common.fileio.write_atomically`, the ``.npz`` first, the
``.json`` last so that it marks a whole entry); an entry that cannot be loaded (cut short,
damaged) counts as a miss and is rebuilt. Processes that miss at the same time wait on a
file lock, and all but the first then find the entry. A newer entry of the same folder and
settings replaces the older one.

The cache holds derived pixels and relative file names: like the images themselves it
stays at the hospital (the default root is under ``~/.fedward/cache``), and nothing in it
is ever sent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fedward.common.data.dicom import Reason
from fedward.common.data.folder import Problem, _files, _relative
from fedward.common.data.maskfolder import FolderRead
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.npz import ArraySplit
from fedward.common.errors import FedwardError
from fedward.common.fileio import atomic_write, read_json_object, write_atomically
from fedward.common.schema import DatasetSchema

log = logging.getLogger(__name__)

PREPARED_VERSION = 3
"""Bump when any folder reader's output changes, so old entries are not reused."""
FOLDER = "prepared"
MASK_FIELDS = ("images", "masks", "labels", "spacing")
ARRAY_FIELDS = ("images", "labels")
_LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error, FedwardError)


def prepared(
    folder: Path, settings: tuple[object, ...], build: Callable[[], FolderRead], cache_root: Path | None
) -> FolderRead:
    """The folder's prepared splits: from the cache, else ``build()`` (then stored).

    Args:
        folder: the data set folder (its files make the key).
        settings: everything besides the files that changes the result (reader, grid,
            intensity, target...); JSON-serialisable or ``str``-able values.
        build: reads the folder; called only on a miss.
        cache_root: the hospital's cache root; entries live in ``cache_root / "prepared"``.
            ``None`` disables the cache (``build()`` every time).

    Returns:
        What ``build`` returned, or an equal copy loaded from the cache.

    Raises:
        DataError: whatever ``build`` raises. A cache that cannot be read or written only
            costs time (a miss; a warning when the entry cannot be stored).
    """
    if cache_root is None:
        return build()
    base = _entry(Path(folder), settings, Path(cache_root).expanduser() / FOLDER)
    found = _load(base)
    if found is not None:
        log.info("prepared data set loaded from the cache (no decoding)")
        return found
    with _lock(base.with_name(base.name.split("-")[0] + ".lock")):
        found = _load(base)  # another process may have built it while this one waited
        if found is not None:
            log.info("prepared data set loaded from the cache (no decoding)")
            return found
        result = build()
        try:
            _store(base, result)
        except OSError as err:
            log.warning("prepared data set not cached (%s); the next process decodes again", type(err).__name__)
    return result


def _entry(folder: Path, settings: tuple[object, ...], root: Path) -> Path:
    """``<root>/<folder and settings tag>-<content tag>`` (no suffix)."""
    absolute = str(folder.resolve())
    tag = hashlib.sha256(json.dumps([absolute, PREPARED_VERSION, *settings], default=str).encode()).hexdigest()[:16]
    files = []
    for path in _files(folder):
        stat = path.stat()
        files.append([_relative(path, folder), stat.st_size, stat.st_mtime_ns])
    content = hashlib.sha256(json.dumps([tag, files]).encode()).hexdigest()[:32]
    return root / f"{tag}-{content}"


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` while the block runs; no lock where none can be made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _load(base: Path) -> FolderRead | None:
    try:
        meta = read_json_object(base.with_suffix(".json"))
        if meta.get("version") != PREPARED_VERSION:
            return None
        schema = DatasetSchema.from_json(meta["schema"], str(base))
        problems = [Problem(str(file), Reason(reason), str(message)) for file, reason, message in meta["problems"]]
        splits: dict[str, MaskSplit | ArraySplit] = {}
        with np.load(base.with_suffix(".npz"), allow_pickle=False) as archive:
            for split, kind in meta["splits"].items():
                if kind == "mask":
                    splits[split] = MaskSplit(*(np.asarray(archive[f"{split}.{name}"]) for name in MASK_FIELDS))
                else:
                    images, labels = (np.asarray(archive[f"{split}.{name}"]) for name in ARRAY_FIELDS)
                    masks = np.asarray(archive[f"{split}.masks"]) if kind == "array+masks" else None
                    splits[split] = ArraySplit(images, labels, masks)
    except _LOAD_ERRORS:
        return None
    strata = tuple(str(n) for n in meta.get("strata", ()))
    cases = {str(split): tuple(str(c) for c in ids) for split, ids in dict(meta.get("cases", {})).items()}
    return FolderRead(schema, splits, problems, strata, cases)


def _store(base: Path, result: FolderRead) -> None:
    """Write the ``.npz``, then the ``.json``; then remove older entries of the same folder and settings.

    Raises:
        OSError: if the cache folder cannot be written.
    """
    arrays: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    for split, data in result.splits.items():
        fields = MASK_FIELDS if isinstance(data, MaskSplit) else ARRAY_FIELDS
        kinds[split] = "mask" if isinstance(data, MaskSplit) else "array"
        arrays.update({f"{split}.{name}": getattr(data, name) for name in fields})
        if isinstance(data, ArraySplit) and data.masks is not None:  # a classification learnt with lesion masks
            kinds[split] = "array+masks"
            arrays[f"{split}.masks"] = data.masks
    meta: dict[str, Any] = {
        "version": PREPARED_VERSION,
        "schema": result.schema.to_json(),
        "splits": kinds,
        "problems": [[p.file, p.reason.value, p.message] for p in result.problems],
        "strata": list(result.strata),
        "cases": {split: list(ids) for split, ids in result.cases.items()},
    }
    write_atomically(base.with_suffix(".npz"), lambda tmp: _save_npz(tmp, arrays), sync=False)
    atomic_write(base.with_suffix(".json"), json.dumps(meta), sync=False)
    tag = base.name.split("-")[0]
    for old in base.parent.glob(f"{tag}-*"):
        if old.stem != base.name:
            old.unlink(missing_ok=True)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to exactly ``path`` (given a name, it would add ``.npz``)."""
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]
