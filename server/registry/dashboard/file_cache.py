"""Parsed run files kept in memory until the file changes, so that many dashboards polling cost little.

A file is identified by its path and its ``(mtime_ns, size, inode)``: the run recorder
appends to ``metrics/*.jsonl`` (the size grows) and replaces the other files atomically
(a new inode), so any change is seen at the next request, while a poll that finds
nothing changed costs one ``stat`` per file and no parsing.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

Signature = tuple[int, int, int] | None
"""``(mtime_ns, size, inode)`` of a file, ``None`` when it does not exist (or cannot be stat'ed)."""

MAX_ENTRIES = 1024


def signature(path: Path) -> Signature:
    """The file's ``(mtime_ns, size, inode)``, or ``None`` if it is missing or unreadable."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class FileCache:
    """Results of parsing files (or groups of files), recomputed only when one of them changes.

    Args:
        max_entries: results kept at most (least recently used ones are dropped beyond it).
    """

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[tuple[Signature, ...], Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.parses = 0
        """How many times a parser ran (tests check that an unchanged file is not parsed again)."""

    def get(self, kind: str, paths: Sequence[Path], parse: Callable[[], T]) -> T:
        """``parse()``'s result for the current state of ``paths``, cached under ``(kind, paths[0])``.

        Args:
            kind: what ``parse`` computes (one cache slot per kind and first path).
            paths: the files ``parse`` reads; a change to any of them (or one appearing or
                disappearing) makes it run again.
            parse: reads the files; it must not raise for a missing or damaged file.

        Returns:
            The (possibly cached) result; callers must not modify it.
        """
        key = (kind, str(paths[0]))
        current = tuple(signature(path) for path in paths)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None and cached[0] == current:
                self._entries.move_to_end(key)
                result: T = cached[1]
                return result
        value = parse()
        with self._lock:
            self.parses += 1
            self._entries[key] = (current, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value
