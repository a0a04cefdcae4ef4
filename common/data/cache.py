"""On-disk cache of decoded images, so that only the first round decodes a hospital's files.

An entry is the model input of one file (uint8, (F, C, S, S), ``.npy``) or the reason it
is unusable (``.err``). Its key hashes the file's absolute path, size and modification
time with the decoding settings and the decoder version: a file that changes, or a run
at another image size, simply misses the cache. Entries are replaced atomically
(:func:`~fedward.common.fileio.atomic_write`) without fsync: they are derived data, and
an entry a power cut leaves short fails to load and counts as a miss.

The cache lives outside the data folder (which hospitals often mount read-only): by
default ``~/.fedward/cache/decoded/<hash of the data folder>/``. It holds derived pixels,
so it stays at the hospital like the images themselves.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from fedward.common.data.dicom import Reason, UnusableFileError
from fedward.common.fileio import atomic_write, read_json_object, write_atomically

DECODER_VERSION = 1
"""Bump when decoding changes, so old entries are not reused."""


def default_cache_root() -> Path:
    """``~/.fedward/cache/decoded``."""
    return Path.home() / ".fedward" / "cache" / "decoded"


class DecodeCache:
    """Decoded model inputs of one hospital's folder.

    Args:
        root: cache root; ``None`` disables caching.
        folder: the hospital's data folder (entries live under a hash of its path).
        settings: decoding settings that change the result (size, channels, frames).
    """

    def __init__(self, root: Path | None, folder: Path, settings: tuple[object, ...]) -> None:
        self.settings = (DECODER_VERSION, *settings)
        self.dir: Path | None = None
        if root is not None:
            tag = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:16]
            self.dir = Path(root).expanduser() / tag
        self.hits = 0
        self.misses = 0

    def _key(self, path: Path) -> str | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        ident = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, *map(str, self.settings)])
        return hashlib.sha256(ident.encode()).hexdigest()

    def get(self, path: Path) -> torch.Tensor | None:
        """The cached model input of ``path``, ``None`` on a miss.

        Raises:
            UnusableFileError: if the file was found unusable before (and has not changed since).
        """
        key = self._key(path)
        if self.dir is None or key is None:
            self.misses += 1
            return None
        base = self.dir / key[:2] / key
        try:
            if base.with_suffix(".err").is_file():
                info = read_json_object(base.with_suffix(".err"))
                self.hits += 1
                raise UnusableFileError(Reason(info["reason"]), info["message"])
            array = np.load(base.with_suffix(".npy"), allow_pickle=False)
        except (OSError, ValueError, KeyError, EOFError):  # EOFError: an empty .npy
            self.misses += 1
            return None
        self.hits += 1
        return torch.from_numpy(array)

    def put(self, path: Path, value: torch.Tensor | UnusableFileError) -> None:
        """Store a model input, or the reason the file is unusable (best effort)."""
        key = self._key(path)
        if self.dir is None or key is None:
            return
        base = self.dir / key[:2] / key
        try:
            if isinstance(value, UnusableFileError):
                payload = json.dumps({"reason": value.reason.value, "message": str(value)}).encode()
                atomic_write(base.with_suffix(".err"), payload, sync=False)
            else:
                array = value.numpy()
                write_atomically(base.with_suffix(".npy"), lambda tmp: _save_npy(tmp, array), sync=False)
        except OSError:
            return  # a full or read-only disk only costs speed


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` in ``.npy`` format to exactly ``path`` (``np.save`` given a name would add ``.npy``)."""
    with open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
