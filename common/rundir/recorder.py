"""The run directory: every run (federated or centralized) leaves the same files.

::

    <run_dir>/
      config.toml              resolved run configuration
      partitions.json          simulation only: which images each hospital held (indices)
      status.json              state, round k/N, latest and best metrics (for progress displays)
      metrics/server.jsonl     one line per round: aggregated and server-side metrics
      metrics/server.csv       the same as a table
      metrics/hospitals.jsonl  one line per hospital, round and phase (train/evaluate/rejected/failed)
      metrics/hospitals.csv
      models/round-000.safetensors ... global model after every round (round 0 = initial)
      models/best.safetensors  the round with the best validation AUC (+ best.json)
      models/manifest.json     sha256 and size of every weight file, recorded when it was written
      model_card.json / .md    what was trained on what, how well, with what guarantees
      plots/learning_curves.png

Files are replaced atomically (write to a temporary file, fsync, rename), so a reader
never sees half a file and a crash leaves the previous version.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from fedward.common.config import RunConfig
from fedward.common.rundir.manifest import MANIFEST_FILE, manifest_document, read_manifest, sha256_of
from fedward.common.wire import metric_key

log = logging.getLogger(__name__)

SELECTION_METRIC = metric_key("val", "auc")
"""Metric that picks the best model: validation AUC (never a test metric)."""


def now_iso() -> str:
    """Current UTC time, ISO 8601, seconds precision."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_weights(path: Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Save a state dict as safetensors, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    save_file(tensors, str(tmp), metadata=dict(metadata))
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All rows of a JSON-lines file (missing file: no rows)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def rows_to_csv(rows: Sequence[Mapping[str, Any]], first: Sequence[str] = ("round",)) -> str:
    """Rows as CSV text; columns are the union of keys, ``first`` ones leading."""
    columns = [c for c in first if any(c in r for r in rows)]
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class RunRecorder:
    """Writes a run directory as rounds complete.

    Args:
        run_dir: the run directory (created if needed).
        cfg: the resolved run configuration.
        mode: ``federated`` or ``centralized``.
    """

    def __init__(self, run_dir: Path, cfg: RunConfig, mode: str) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.mode = mode
        self.metrics_dir = self.run_dir / "metrics"
        self.models_dir = self.run_dir / "models"
        earlier = _read_json(self.run_dir / "status.json")  # a resumed run keeps its start time
        self.started = str(earlier.get("started") or now_iso())
        self._t0 = time.monotonic()
        self.best_round: int | None = None
        self.best_value = -math.inf
        self.last_round = -1
        self.resumed: list[dict[str, Any]] = list(earlier.get("resumed", []))
        for folder in (self.metrics_dir, self.models_dir, self.run_dir / "plots"):
            folder.mkdir(parents=True, exist_ok=True)
        if not (self.run_dir / "config.toml").exists():
            atomic_write(self.run_dir / "config.toml", cfg.to_toml())
        self._write_status("running")

    @property
    def server_rows(self) -> list[dict[str, Any]]:
        """Rows of ``metrics/server.jsonl``."""
        return read_jsonl(self.metrics_dir / "server.jsonl")

    @property
    def hospital_rows(self) -> list[dict[str, Any]]:
        """Rows of ``metrics/hospitals.jsonl``."""
        return read_jsonl(self.metrics_dir / "hospitals.jsonl")

    def record_round(
        self,
        server_round: int,
        state: Mapping[str, torch.Tensor],
        metrics: Mapping[str, float],
        hospitals: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Persist one completed round.

        Args:
            server_round: round number (0 = the initial model).
            state: the global model after the round.
            metrics: aggregated and server-side metrics of the round (kebab-case keys).
            hospitals: per-hospital rows (``hospital``, ``phase``, metrics...).
        """
        row = {"round": server_round, "time": now_iso(), "elapsed-s": round(time.monotonic() - self._t0, 3)}
        row.update({k: _clean(v) for k, v in metrics.items()})
        self._append("server", [row])
        self._append("hospitals", [{"round": server_round, **{k: _clean(v) for k, v in h.items()}} for h in hospitals])
        meta = {"round": str(server_round), "run": self.run_dir.name, "model": self.cfg.model.name.value}
        round_file = self.models_dir / f"round-{server_round:03d}.safetensors"
        save_weights(round_file, state, meta)
        self._manifest_add(round_file, server_round)
        value = metrics.get(SELECTION_METRIC)
        if value is not None and math.isfinite(value) and value > self.best_value:
            self.best_value, self.best_round = float(value), server_round
            self._set_best(server_round, value)
        self.last_round = server_round
        self._write_status("running", latest=row)

    def resume(self, server_round: int) -> None:
        """Continue this run directory after its checkpointed round ``server_round``.

        A crash can land between a round's metrics and its checkpoint: rows, weight files
        and manifest entries of later rounds are dropped (they will be written again), a
        half-written last line is discarded, and the best model is chosen again among the
        kept rounds. The original start time is kept; the resumption is recorded in
        ``status.json`` and the model card.
        """
        for name in ("server", "hospitals"):
            path = self.metrics_dir / f"{name}.jsonl"
            rows = [r for r in _read_jsonl_tolerant(path) if int(r.get("round", -1)) <= server_round]
            atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))
            first = ("round",) if name == "server" else ("round", "hospital", "phase")
            atomic_write(self.metrics_dir / f"{name}.csv", rows_to_csv(rows, first) if rows else "")
        files = read_manifest(self.run_dir)
        for weights in self.models_dir.glob("round-*.safetensors"):
            number = weights.stem.removeprefix("round-")
            if number.isdigit() and int(number) > server_round:
                weights.unlink()
                files.pop(weights.name, None)
        atomic_write(self.run_dir / MANIFEST_FILE, manifest_document(files))
        self.resumed = [*self.resumed, {"after-round": server_round, "time": now_iso()}]
        self.best_round, self.best_value = None, -math.inf
        for row in self.server_rows:
            value = row.get(SELECTION_METRIC)
            if isinstance(value, int | float) and math.isfinite(value) and value > self.best_value:
                self.best_round, self.best_value = int(row["round"]), float(value)
        if self.best_round is not None:
            self._set_best(self.best_round, self.best_value)
        self.last_round = server_round
        self._write_status("running", latest=self.server_rows[-1] if self.server_rows else None)
        log.info("resuming %s after round %d", self.run_dir.name, server_round)

    def finish(self, state: str, reason: str = "") -> None:
        """Mark the run ``completed``, ``failed`` or ``stopped``; plots are drawn here."""
        from fedward.common.rundir.plots import plot_learning_curves

        if self.best_round is None and self.last_round >= 0:
            # No validation AUC ever reported: the last model stands in as "best".
            self._set_best(self.last_round, None)
        try:
            plot_learning_curves(self.server_rows, self.hospital_rows, self.run_dir / "plots" / "learning_curves.png")
        except Exception as err:
            log.warning("could not draw learning curves: %s", err)
        self._write_status(state, reason=reason)

    @property
    def best_file(self) -> Path:
        """Path of the best model's weights."""
        return self.models_dir / "best.safetensors"

    def round_file(self, server_round: int) -> Path:
        """Path of the global model after ``server_round``."""
        return self.models_dir / f"round-{server_round:03d}.safetensors"

    def wall_seconds(self) -> float:
        """Seconds since the recorder was created."""
        return time.monotonic() - self._t0

    # ------------------------------------------------------------------ internals
    def _set_best(self, server_round: int, value: float | None) -> None:
        """Copy round ``server_round``'s weights to ``best.safetensors`` (atomically) and describe it."""
        shutil.copyfile(self.round_file(server_round), self.models_dir / ".best.tmp")
        os.replace(self.models_dir / ".best.tmp", self.best_file)
        self._manifest_add(self.best_file, server_round)
        metric = SELECTION_METRIC if value is not None else None
        atomic_write(
            self.models_dir / "best.json",
            json.dumps({"round": server_round, "metric": metric, "value": value}, indent=2),
        )

    def _manifest_add(self, path: Path, server_round: int) -> None:
        """Record the sha256 and size of a weight file just written."""
        files = read_manifest(self.run_dir)
        files[path.name] = {"round": server_round, "sha256": sha256_of(path), "bytes": path.stat().st_size}
        atomic_write(self.run_dir / MANIFEST_FILE, manifest_document(files))

    def _append(self, name: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        path = self.metrics_dir / f"{name}.jsonl"
        with open(path, "a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, sort_keys=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        first = ("round",) if name == "server" else ("round", "hospital", "phase")
        atomic_write(self.metrics_dir / f"{name}.csv", rows_to_csv(read_jsonl(path), first))

    def _write_status(self, state: str, latest: Mapping[str, Any] | None = None, reason: str = "") -> None:
        status_path = self.run_dir / "status.json"
        previous: dict[str, Any] = {}
        if status_path.is_file():
            try:
                previous = json.loads(status_path.read_text(encoding="utf-8"))
            except ValueError:
                previous = {}
        status = {
            "state": state,
            "mode": self.mode,
            "round": max(self.last_round, 0),
            "rounds": self.cfg.federation.rounds,
            "started": self.started,
            "updated": now_iso(),
            "latest": dict(latest) if latest is not None else previous.get("latest", {}),
            "best": {
                "round": self.best_round,
                "metric": SELECTION_METRIC,
                "value": None if self.best_round is None else self.best_value,
            },
        }
        if reason:
            status["reason"] = reason
        if self.resumed:
            status["resumed"] = self.resumed
        atomic_write(status_path, json.dumps(status, indent=2))
        from fedward.common.rundir.index import index_run  # the runs folder's index (never raises)

        index_run(self.run_dir)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return dict(value) if isinstance(value, dict) else {}


def _read_jsonl_tolerant(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file, skipping a line a crash left half-written."""
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            log.warning("%s line %d is incomplete (interrupted write); dropped", path.name, number)
    return rows


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def new_run_dir(cfg: RunConfig, suffix: str = "") -> Path:
    """A fresh run directory path under ``run.output-dir``: ``<UTC time>-<name>[-suffix]``.

    The directory is created; an existing one is never reused.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{cfg.run.name or cfg.data.dataset}" + (f"-{suffix}" if suffix else "")
    root = Path(cfg.run.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        candidate = root / (base if attempt == 0 else f"{base}.{attempt}")
        try:
            candidate.mkdir()
            return candidate.resolve()
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a new run directory under {root}")  # pragma: no cover
