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
import json
import logging
import math
import re
import sqlite3
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from fedward.common.errors import ConfigError, FedwardError

log = logging.getLogger(__name__)

INDEX_FILE = "runs.sqlite"
SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of the index; an index of another version is rebuilt."""
TIMEOUT_S = 10.0
"""How long a writer waits for another one's transaction to end, seconds."""
TERMINAL = frozenset({"completed", "failed", "stopped"})
STATES = TERMINAL | {"running"}
UNKNOWN = "unknown"

_FLOWER_SUFFIX = re.compile(r".+-(\d+)(?:\.\d+)?")  # "<time>-<name>-<flower run id>[.<n>]"
_STAMP = re.compile(r"(\d{8}-\d{6})-")  # new_run_dir's "%Y%m%d-%H%M%S-" prefix (UTC)
_CORRUPT = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)

T = TypeVar("T")


class RunNotFoundError(FedwardError):
    """No run directory of that id in the runs folder (or the id is not a plain directory name)."""


class RunStoreError(FedwardError):
    """The index file cannot be written (read-only folder, locked by another process for too long)."""


@dataclass(frozen=True, slots=True)
class RunEntry:
    """One run as the store lists it.

    Attributes:
        run_id: the run directory's name (unique in its runs folder).
        flower_run_id: Flower's run id (the directory name's ``-<digits>`` suffix) for a run
            a coordinator started; ``None`` for simulations and centralized runs.
        status: ``running``, ``completed``, ``failed``, ``stopped``, or ``unknown`` when
            ``status.json`` cannot be read.
        mode: ``federated`` or ``centralized`` (``unknown`` if nothing says).
        started: start time, ISO 8601.
        ended: end time, ISO 8601, for a finished (completed/failed/stopped) run.
        rounds_done: rounds completed.
        rounds: rounds planned.
        best_round: the round of the best model, ``None`` before any validation AUC.
        best_metric: the metric that chose it (``val-auc``).
        best_value: its value at ``best_round``.
        test_auc: the server's test AUC at ``best_round``, if it evaluated one.
        epsilon: privacy budget spent: the larger of the last client-level ``epsilon`` and
            the last record-level ``dpsgd-epsilon``; ``None`` without differential privacy.
        delta: the delta that goes with ``epsilon`` (or the configured one while no round
            has reported an epsilon yet); ``None`` without differential privacy.
        dataset: dataset name.
        model: model name.
        path: the run directory.
    """

    run_id: str
    flower_run_id: int | None
    status: str
    mode: str
    started: str | None
    ended: str | None
    rounds_done: int
    rounds: int
    best_round: int | None
    best_metric: str | None
    best_value: float | None
    test_auc: float | None
    epsilon: float | None
    delta: float | None
    dataset: str
    model: str
    path: Path

    def to_json(self) -> dict[str, Any]:
        """The entry as a JSON-serialisable dict with kebab-case keys (``run-id``, ``best-value``...)."""
        out = {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}
        out["path"] = str(self.path)
        return out


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
            conn.execute("PRAGMA journal_mode=WAL")
            created = _ensure_schema(conn, self.index_file)
            return action(conn, created)


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


def is_run_directory(path: Path) -> bool:
    """Whether ``path`` is a run directory (a folder with ``status.json`` or ``config.toml``)."""
    return path.is_dir() and ((path / "status.json").is_file() or (path / "config.toml").is_file())


def run_directories(runs_dir: Path) -> builtins.list[Path]:
    """The run directories directly inside ``runs_dir``, by name."""
    try:
        children = sorted(runs_dir.iterdir())
    except OSError as err:
        log.warning("cannot list %s: %s", runs_dir, err)
        return []
    return [path for path in children if not path.name.startswith(".") and is_run_directory(path)]


def read_entry(run_dir: Path) -> RunEntry:
    """Read a run directory's files into an entry, taking what can be read.

    Reads ``status.json``, ``config.toml``, ``metrics/server.jsonl``, ``models/best.json``
    and ``model_card.json``; a missing or damaged file leaves its fields at their defaults
    (``status`` ``unknown``). Never raises.
    """
    run_dir = Path(run_dir)
    status = _read_json(run_dir / "status.json")
    card = _read_json(run_dir / "model_card.json")
    config = _read_toml(run_dir / "config.toml")
    rows = _read_rows(run_dir / "metrics" / "server.jsonl")
    run_card = _table(card, "run")
    state = _str(status.get("state"))
    status_text = state if state in STATES else UNKNOWN
    mode = _str(status.get("mode")) or _str(run_card.get("mode")) or UNKNOWN

    best = _table(status, "best")
    best_round = _int(best.get("round"))
    if best_round is None:
        best = _read_json(run_dir / "models" / "best.json") or {}
        best_round = _int(best.get("round"))
    best_value = _num(best.get("value")) if best_round is not None else None
    best_metric = _str(best.get("metric")) if best_value is not None else None

    rounds_seen = [r for r in (_int(row.get("round")) for row in rows) if r is not None]
    rounds_done = max([0, *rounds_seen, _int(status.get("round")) or 0, _int(run_card.get("rounds_completed")) or 0])
    rounds = (
        _int(status.get("rounds"))
        or _int(run_card.get("rounds_planned"))
        or _int(_table(config, "federation").get("rounds"))
        or 0
    )
    at_best = [row for row in rows if best_round is not None and row.get("round") == best_round]
    test_auc = _num(at_best[-1].get("test-auc")) if at_best else None
    if test_auc is None:
        test_auc = _num(_table(_table(card, "metrics"), "best").get("test-auc"))
    epsilon, delta = _privacy(rows, config, card)
    return RunEntry(
        run_id=run_dir.name,
        flower_run_id=_flower_run_id(run_dir.name, mode, config),
        status=status_text,
        mode=mode,
        started=_str(status.get("started")) or _str(run_card.get("started")) or _stamp_time(run_dir.name),
        ended=(_str(status.get("updated")) or _str(run_card.get("finished"))) if status_text in TERMINAL else None,
        rounds_done=rounds_done,
        rounds=rounds,
        best_round=best_round,
        best_metric=best_metric,
        best_value=best_value,
        test_auc=test_auc,
        epsilon=epsilon,
        delta=delta,
        dataset=_str(_table(config, "data").get("dataset")) or _str(_table(card, "dataset").get("name")) or "",
        model=_str(_table(config, "model").get("name")) or _str(_table(card, "model").get("name")) or "",
        path=run_dir,
    )


# ---------------------------------------------------------------------------------- reading
def _privacy(
    rows: Sequence[Mapping[str, Any]], config: Mapping[str, Any], card: Mapping[str, Any]
) -> tuple[float | None, float | None]:
    """(epsilon, delta): the larger of the last client-level and record-level epsilon, and its delta."""
    client = next((v for v in (_num(r.get("epsilon")) for r in reversed(rows)) if v is not None), None)
    image = next((v for v in (_num(r.get("dpsgd-epsilon")) for r in reversed(rows)) if v is not None), None)
    guarantees = {
        _str(g.get("unit")): g for g in _table(card, "privacy").get("guarantees") or [] if isinstance(g, Mapping)
    }
    if client is None:
        client = _num(guarantees.get("hospital", {}).get("epsilon"))
    if image is None:
        image = _num(guarantees.get("image", {}).get("epsilon"))
    privacy = _table(config, "privacy")
    client_dp = (_str(privacy.get("client-dp")) or "none") != "none" and privacy.get("noise-multiplier") != 0
    dpsgd = privacy.get("dpsgd") is True and privacy.get("dpsgd-noise-multiplier") != 0
    client_delta = _num(guarantees.get("hospital", {}).get("delta")) or (
        _num(privacy.get("delta")) if client_dp else None
    )
    image_delta = _num(guarantees.get("image", {}).get("delta")) or (
        _num(privacy.get("dpsgd-delta")) if dpsgd else None
    )
    if client is not None and (image is None or client >= image):
        return client, client_delta
    if image is not None:
        return image, image_delta
    return None, client_delta if client_delta is not None else image_delta


def _flower_run_id(name: str, mode: str, config: Mapping[str, Any]) -> int | None:
    """Flower's run id from a coordinator run's directory name.

    Simulations record ``run.dir`` in their ``config.toml`` and centralized runs have no
    Flower run, so neither has one even when its name ends in digits.
    """
    if mode == "centralized" or _table(config, "run").get("dir"):
        return None
    stamp = _STAMP.match(name)
    match = _FLOWER_SUFFIX.fullmatch(name[stamp.end() :] if stamp else name)  # the name part must stay
    return int(match[1]) if match else None


def _stamp_time(name: str) -> str | None:
    """The UTC creation time in a run directory's name, ISO 8601."""
    match = _STAMP.match(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match[1], "%Y%m%d-%H%M%S").replace(tzinfo=UTC).isoformat()
    except ValueError:
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _read_rows(path: Path) -> builtins.list[dict[str, Any]]:
    """Rows of a JSON-lines file; damaged lines (a half-written last one) are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _table(mapping: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = mapping.get(key)
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


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
