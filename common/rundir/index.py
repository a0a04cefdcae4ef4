"""The run store: an SQLite index of the run directories in one runs folder.

``runs/runs.sqlite`` sits beside the run directories and holds one row per run: status,
start and end, rounds done, the best validation AUC, the test AUC at that round and the
privacy budget spent. ``fedward run list`` reads it instead of opening every run
directory. It is only a cache: the run directories are the truth. A missing, corrupt or
older-schema index is rebuilt from them, directories added or deleted behind its back
are picked up by :meth:`RunStore.list`, and a run directory that cannot be read (a
half-written or damaged ``status.json``) is listed with status ``unknown``.

Several processes write it (ServerApps recording rounds, the CLI listing), so it runs in
WAL mode with short transactions and a busy timeout; files are read before a
transaction starts. WAL needs a local file system (not NFS).
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from fedward.common.errors import ConfigError, FedwardError
from fedward.common.rundir.layout import is_run_directory
from fedward.common.rundir.reader import TERMINAL, RunEntry, read_entry, run_directories

__all__ = [
    "INDEX_FILE",
    "RunEntry",
    "RunNotFoundError",
    "RunStore",
    "RunStoreError",
    "index_run",
    "is_run_directory",
    "read_entry",
    "run_directories",
]

log = logging.getLogger(__name__)

INDEX_FILE = "runs.sqlite"
SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of the index; an index of another version is rebuilt."""
TIMEOUT_S = 10.0
"""How long a writer waits for another one's transaction to end, seconds."""

_CORRUPT = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)

T = TypeVar("T")


class RunNotFoundError(FedwardError):
    """No run directory of that id in the runs folder (or the id is not a plain directory name)."""


class RunStoreError(FedwardError):
    """The index file cannot be written (read-only folder, locked by another process for too long)."""


COLUMNS = tuple(f.name for f in fields(RunEntry) if f.name != "path")
_CREATE = """CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, flower_run_id TEXT, status TEXT NOT NULL, mode TEXT NOT NULL,
    started TEXT, ended TEXT, rounds_done INTEGER NOT NULL, rounds INTEGER NOT NULL,
    best_round INTEGER, best_metric TEXT, best_value REAL, test_auc REAL, epsilon REAL, delta REAL,
    dataset TEXT NOT NULL, model TEXT NOT NULL)"""
_UPSERT = f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM runs ORDER BY COALESCE(started, '') DESC, run_id DESC"


class RunStore:
    """The index of one runs folder (``runs_dir / INDEX_FILE``, created on demand).

    Args:
        runs_dir: the folder holding the run directories (``./runs``, ``<state>/runs``).
    """

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = Path(runs_dir).absolute()
        self.index_file = self.runs_dir / INDEX_FILE

    def update(self, run_dir: Path) -> RunEntry:
        """(Re)index one run directory from its files.

        Args:
            run_dir: a run directory inside this store's runs folder.

        Returns:
            The run's entry as stored.

        Raises:
            ConfigError: if ``run_dir`` is not directly inside the runs folder.
            RunStoreError: if the index cannot be written (locked longer than ``TIMEOUT_S``,
                read-only folder).
        """
        run_dir = Path(run_dir).absolute()
        if run_dir.parent != self.runs_dir:
            raise ConfigError(f"{run_dir} is not a run directory in {self.runs_dir}")
        entry = read_entry(run_dir)
        self._with_index(lambda conn, created: self._store(conn, created, [entry]))
        return entry

    def remove(self, run_id: str) -> None:
        """Forget a run (after its directory was deleted); the directory itself is not touched.

        A run directory still on disk comes back at the next :meth:`list`.

        Raises:
            RunNotFoundError: if ``run_id`` is not a plain directory name.
            RunStoreError: if the index cannot be written.
        """
        name = _checked_id(run_id, self.runs_dir)
        if not self.index_file.exists():
            return

        def delete(conn: sqlite3.Connection, created: bool) -> None:
            with _transaction(conn):
                conn.execute("DELETE FROM runs WHERE run_id = ?", (name,))

        self._with_index(delete)

    def get(self, run_id: str) -> RunEntry:
        """The entry of one run, read from its directory (and refreshed in the index).

        Raises:
            RunNotFoundError: if ``run_id`` is not a plain directory name, or no run
                directory of that name is in the runs folder.
        """
        name = _checked_id(run_id, self.runs_dir)
        path = self.runs_dir / name
        if not is_run_directory(path):
            raise RunNotFoundError(
                f"no run {name!r} in {self.runs_dir}: 'fedward run list --runs {self.runs_dir}' lists its runs"
            )
        entry = read_entry(path)
        try:
            self._with_index(lambda conn, created: self._store(conn, created, [entry]))
        except RunStoreError as err:
            log.warning("could not refresh %s in the run store: %s", name, err)
        return entry

    def rebuild(self) -> int:
        """Drop the index and re-create it from every run directory in the runs folder.

        Returns:
            The number of runs indexed (0 when the runs folder does not exist).

        Raises:
            RunStoreError: if the index cannot be written.
        """
        if not self.runs_dir.is_dir():
            return 0
        entries = [read_entry(path) for path in run_directories(self.runs_dir)]
        self._with_index(lambda conn, created: _replace_all(conn, entries))
        log.info("indexed %d runs in %s", len(entries), self.index_file)
        return len(entries)

    def list(self) -> builtins.list[RunEntry]:
        """Every run in the runs folder, newest first.

        A missing or corrupt index is rebuilt first (with a warning); run directories the
        index does not know are added, entries whose directory is gone are dropped, and
        unfinished runs (running, unknown) are re-read from their directories.
        When the index cannot be written at all (read-only folder, locked), the entries
        are read from the run directories directly. Never fails on a damaged run directory.

        Returns:
            Entries sorted by start time, newest first (empty if the folder does not exist).
        """
        if not self.runs_dir.is_dir():
            return []
        on_disk = {path.name: path for path in run_directories(self.runs_dir)}
        if on_disk and not self.index_file.exists():
            log.warning("%s is missing: rebuilding it from %d run directories", self.index_file, len(on_disk))

        def reconcile(conn: sqlite3.Connection, created: bool) -> builtins.list[RunEntry]:
            if created:
                entries = [read_entry(path) for path in on_disk.values()]
                _replace_all(conn, entries)
                return entries
            stored = {e.run_id: e for e in (_entry(row, self.runs_dir) for row in conn.execute(_SELECT))}
            gone = stored.keys() - on_disk.keys()
            # New directories, and unfinished runs whose writer may have failed to index its last change.
            fresh = [read_entry(p) for n, p in on_disk.items() if n not in stored or stored[n].status not in TERMINAL]
            changed = [e for e in fresh if stored.get(e.run_id) != e]
            if gone or changed:
                with _transaction(conn):
                    conn.executemany("DELETE FROM runs WHERE run_id = ?", [(name,) for name in gone])
                    conn.executemany(_UPSERT, [_row(e) for e in changed])
            stored.update({e.run_id: e for e in changed})
            return [e for name, e in stored.items() if name not in gone]

        try:
            entries = self._with_index(reconcile)
        except (RunStoreError, ValueError, TypeError) as err:
            log.warning("%s; reading the run directories directly", err)
            entries = [read_entry(path) for path in on_disk.values()]
        return sorted(entries, key=lambda e: (e.started or "", e.run_id), reverse=True)

    # ------------------------------------------------------------------ internals
    def _store(self, conn: sqlite3.Connection, created: bool, entries: Sequence[RunEntry]) -> None:
        """Upsert ``entries``; into a new index, every run directory goes first."""
        if created:
            fresh = {e.run_id: e for e in (read_entry(p) for p in run_directories(self.runs_dir))}
            fresh.update({e.run_id: e for e in entries})
            _replace_all(conn, list(fresh.values()))
            return
        with _transaction(conn):
            conn.executemany(_UPSERT, [_row(e) for e in entries])

    def _with_index(self, action: Callable[[sqlite3.Connection, bool], T]) -> T:
        """Run ``action(connection, created)`` on the index; a corrupt file is replaced once.

        ``created`` is true when the table was just (re)created and is empty.

        Raises:
            RunStoreError: if the index cannot be opened or written.
        """
        try:
            try:
                return self._open_and(action)
            except sqlite3.DatabaseError as err:
                if (getattr(err, "sqlite_errorcode", 0) & 0xFF) not in _CORRUPT:
                    raise
                log.warning("%s is corrupt (%s): rebuilding it from the run directories", self.index_file, err)
            for path in (self.index_file, *(self.index_file.with_name(INDEX_FILE + s) for s in ("-wal", "-shm"))):
                path.unlink(missing_ok=True)
            return self._open_and(action)
        except (sqlite3.Error, OSError) as err:
            raise RunStoreError(f"cannot use the run store {self.index_file}: {err}") from err

    def _open_and(self, action: Callable[[sqlite3.Connection, bool], T]) -> T:
        with closing(sqlite3.connect(self.index_file, timeout=TIMEOUT_S, isolation_level=None)) as conn:
            _use_wal(conn)
            created = _ensure_schema(conn, self.index_file)
            return action(conn, created)


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch ``conn``'s database to WAL, waiting up to ``TIMEOUT_S`` for other connections.

    SQLite answers a journal-mode change "database is locked" at once, without its busy
    handler, while another connection is switching it too (new index files under
    concurrent writers); the change is retried until it succeeds or the time is up.

    Raises:
        sqlite3.OperationalError: if the database stays locked for ``TIMEOUT_S`` seconds.
    """
    ends = time.monotonic() + TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() >= ends:
                raise
            time.sleep(0.05)


def index_run(run_dir: Path) -> None:
    """Index ``run_dir`` in the store of its runs folder (``run_dir.parent``); best effort.

    Never raises: a failure is logged as a warning (the next ``fedward run list`` picks
    the run up from its directory).
    """
    try:
        run_dir = Path(run_dir).absolute()
        RunStore(run_dir.parent).update(run_dir)
    except Exception as err:  # the index is a cache: never fail a run for it
        log.warning("run %s not indexed: %s", Path(run_dir).name, err)


def _checked_id(run_id: str, runs_dir: Path) -> str:
    """``run_id`` if it is a plain directory name; else RunNotFoundError."""
    if not isinstance(run_id, str) or run_id in ("", ".", "..") or any(c in run_id for c in "/\\\0"):
        raise RunNotFoundError(f"{run_id!r} is not a run id: run ids are run directory names in {runs_dir}")
    return run_id


# ---------------------------------------------------------------------------------- SQLite
@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction (the write lock is taken at once, so readers never deadlock it)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _ensure_schema(conn: sqlite3.Connection, index_file: Path) -> bool:
    """Create the table in a new index (or one of another schema version); True if it did."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return False
    with _transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:  # another process created it meanwhile
            return False
        if version != 0:
            log.warning("%s has schema version %s, not %d: rebuilding it", index_file, version, SCHEMA_VERSION)
        conn.execute("DROP TABLE IF EXISTS runs")
        conn.execute(_CREATE)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return True


def _replace_all(conn: sqlite3.Connection, entries: Sequence[RunEntry]) -> None:
    """Drop and re-create the table with ``entries``, in one transaction."""
    with _transaction(conn):
        conn.execute("DROP TABLE IF EXISTS runs")
        conn.execute(_CREATE)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.executemany(_UPSERT, [_row(e) for e in entries])


def _row(entry: RunEntry) -> tuple[Any, ...]:
    values = [getattr(entry, name) for name in COLUMNS]
    values[COLUMNS.index("flower_run_id")] = None if entry.flower_run_id is None else str(entry.flower_run_id)
    return tuple(values)  # Flower's run ids are unsigned 64-bit: stored as text


def _entry(row: Sequence[Any], runs_dir: Path) -> RunEntry:
    values = dict(zip(COLUMNS, row, strict=True))
    flower = values["flower_run_id"]
    values["flower_run_id"] = None if flower is None else int(flower)
    for name in ("best_value", "test_auc", "epsilon", "delta"):
        values[name] = None if values[name] is None else float(values[name])
    return RunEntry(**values, path=runs_dir / str(values["run_id"]))
