"""The run recorder: writes a run directory as rounds complete, for federated and centralized runs alike.

Per round: a row in ``metrics/server.jsonl`` (and its CSV), one row per hospital and phase
in ``metrics/hospitals.jsonl``, the global model's weights (recorded in the manifest),
the best model when validation AUC improves, and ``status.json``. Every status change is
indexed in the runs folder's ``runs.sqlite``. Files are replaced atomically, so a reader
never sees half a file and a crash leaves the previous version; rows a crash cut short
are dropped when the run resumes. A :class:`RunListener` (the run's tracking, MLflow and
TensorBoard: :mod:`fedward.server.tracking`) is told each round's rows as written and the
end of the run.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import save_file

from fedward.common.config import RunSpec
from fedward.common.fileio import atomic_write, read_json_or_empty, read_jsonl, write_atomically
from fedward.common.ml.tasks import head_for
from fedward.common.rundir.index import index_run
from fedward.common.rundir.info import describe_run
from fedward.common.rundir.layout import (
    BEST_RECORD,
    BEST_WEIGHTS,
    CALIBRATION_DIR,
    CURVES_PNG,
    MODELS_DIR,
    RELIABILITY_PNG,
    ROW_FILES,
    SITES_FILE,
    STATUS_FILE,
)
from fedward.common.rundir.layout import RunDir as Paths
from fedward.common.rundir.manifest import read_manifest, record_weights, write_manifest
from fedward.common.timestamps import now_iso

log = logging.getLogger(__name__)


def save_weights(path: Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Save a state dict as safetensors (tensors copied to the CPU, contiguous), atomically."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=dict(metadata)))


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


class RunListener(Protocol):
    """Follows a run directory as the recorder writes it (e.g. mirrors it into MLflow); must never raise."""

    def round_recorded(self, server_round: int, row: Mapping[str, Any], hospitals: Sequence[Mapping[str, Any]]) -> None:
        """Called after round ``server_round``'s rows (as written to the JSONL files) and weights are on disk."""

    def run_finished(self, run_dir: Path, state: str) -> str:
        """Called once the model card and plots are written, before the final status ``state``.

        Returns:
            What the listener could not deliver, in one line (``""``: everything); the
            final ``status.json`` keeps it under ``tracking``.
        """
        ...


class RunRecorder:
    """Writes one run directory as rounds complete.

    Args:
        run_dir: the run directory (created if needed); ``config.toml`` and ``run.json``
            are written unless present (a resumed run keeps its own).
        spec: the run.
        mode: ``federated`` or ``centralized``.
        flower_run_id: the coordinator's Flower run id, recorded in ``run.json``.
        listener: told each recorded round and the end of the run (tracking).
    """

    def __init__(
        self,
        run_dir: Path,
        spec: RunSpec,
        mode: str,
        flower_run_id: int | None = None,
        listener: RunListener | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.paths = Paths(self.run_dir)
        self.spec = spec
        self.mode = mode
        self.listener = listener
        self._hospitals: list[dict[str, Any]] = []
        earlier = read_json_or_empty(self.paths / STATUS_FILE)  # a resumed run keeps its start time
        self.started = str(earlier.get("started") or now_iso())
        self._t0 = time.monotonic()
        self.selection_metric = head_for(spec.schema).selection_metric
        """The validation metric that picks the best round (``val-auc``, ``val-dice``)."""
        self.best_round: int | None = None
        self.best_value = -math.inf
        self.last_round = -1
        self.resumed: list[dict[str, Any]] = list(earlier.get("resumed", []))
        for folder in (self.run_dir / "metrics", self.run_dir / MODELS_DIR, (self.paths / CURVES_PNG).parent):
            folder.mkdir(parents=True, exist_ok=True)
        describe_run(self.run_dir, spec, mode, flower_run_id)
        self._write_status("running")

    @property
    def server_rows(self) -> list[dict[str, Any]]:
        """Rows of ``metrics/server.jsonl``."""
        return read_jsonl(self.paths.rows("server"))

    @property
    def hospital_rows(self) -> list[dict[str, Any]]:
        """Rows of ``metrics/hospitals.jsonl``."""
        return read_jsonl(self.paths.rows("hospitals"))

    @property
    def best_file(self) -> Path:
        """Path of the best model's weights."""
        return self.paths / BEST_WEIGHTS

    def round_file(self, server_round: int) -> Path:
        """Path of the global model after ``server_round``."""
        return self.paths.weights(server_round)

    def wall_seconds(self) -> float:
        """Seconds since the recorder was created."""
        return time.monotonic() - self._t0

    def record_round(
        self,
        server_round: int,
        state: Mapping[str, torch.Tensor],
        metrics: Mapping[str, float],
        hospitals: Sequence[Mapping[str, Any]] = (),
        statistics: Mapping[str, list[float]] | None = None,
    ) -> None:
        """Persist one completed round.

        Args:
            server_round: round number (0 = the initial model).
            state: the global model after the round.
            metrics: aggregated and server-side metrics of the round (kebab-case keys).
            hospitals: per-hospital rows (``hospital``, ``phase``, metrics...).
            statistics: the federation's merged validation statistics of the round
                (:meth:`~fedward.common.ml.valstats.ValidationStatistics.wire`), kept for the
                selected round's reliability diagram.
        """
        if statistics:
            atomic_write(self._statistics_file(server_round), json.dumps(statistics))
        row = {"round": server_round, "time": now_iso(), "elapsed-s": round(time.monotonic() - self._t0, 3)}
        row.update({k: _clean(v) for k, v in metrics.items()})
        self._append("server", [row])
        hospital_rows = [{"round": server_round, **{k: _clean(v) for k, v in h.items()}} for h in hospitals]
        self._append("hospitals", hospital_rows)
        meta = {"round": str(server_round), "run": self.run_dir.name, "model": self.spec.config.model.name.value}
        round_file = self.round_file(server_round)
        save_weights(round_file, state, meta)
        record_weights(self.run_dir, round_file, server_round)
        value = metrics.get(self.selection_metric)
        if value is not None and math.isfinite(value) and value > self.best_value:
            self.best_value, self.best_round = float(value), server_round
            self._set_best(server_round, value)
        self.last_round = server_round
        self._write_status("running", latest=row)
        if self.listener is not None:
            self.listener.round_recorded(server_round, row, hospital_rows)

    def record_hospitals(self, hospitals: Sequence[Mapping[str, Any]]) -> None:
        """Rewrite ``hospitals.json``: the hospitals enrolled so far (counts and versions only).

        Args:
            hospitals: one JSON-ready entry per hospital (the model card's
                :class:`~fedward.common.rundir.card.HospitalEntry` fields).
        """
        entries = [dict(h) for h in hospitals]
        if entries == self._hospitals:
            return
        self._hospitals = entries
        atomic_write(self.run_dir / SITES_FILE, json.dumps({"updated": now_iso(), "hospitals": entries}, indent=1))

    def resume(self, server_round: int, *, owed: bool = False) -> None:
        """Continue this run directory after its checkpointed round ``server_round``.

        A crash can land between a round's metrics and its checkpoint: rows, weight files
        and manifest entries of later rounds are dropped (they will be written again), a
        half-written last line is discarded, and the best model is chosen again among the
        kept rounds. The original start time is kept; the resumption is recorded in
        ``status.json`` and the model card.

        Args:
            server_round: the checkpoint's round.
            owed: the checkpoint was written before that round's evaluation; its record
                too is written again.
        """
        kept = server_round - 1 if owed else server_round
        for table in ROW_FILES:
            rows = [r for r in read_jsonl(self.paths.rows(table)) if int(r.get("round", -1)) <= kept]
            self._rewrite(table, rows)
        files = read_manifest(self.run_dir)
        for weights in (self.run_dir / MODELS_DIR).glob("round-*.safetensors"):
            number = weights.stem.removeprefix("round-")
            if number.isdigit() and int(number) > kept:
                weights.unlink()
                files.pop(weights.name, None)
        write_manifest(self.run_dir, files)
        self.resumed = [*self.resumed, {"after-round": server_round, "time": now_iso()}]
        self._choose_best(self.server_rows)
        self.last_round = kept
        self._write_status("running", latest=self.server_rows[-1] if self.server_rows else None)
        log.info("resuming %s after round %d", self.run_dir.name, server_round)

    def finish(self, state: str, reason: str = "") -> None:
        """Mark the run ``completed``, ``failed`` or ``stopped`` after :meth:`conclude`."""
        self.conclude()
        self.mark_finished(state, reason)

    def conclude(self) -> None:
        """Settle the best model (the last round's if no validation metric was ever reported) and draw the curves."""
        from fedward.common.rundir.plots import plot_learning_curves  # matplotlib only when a run ends

        if self.best_round is None and self.last_round >= 0:
            self._set_best(self.last_round, None)
        try:
            metric = self.selection_metric.removeprefix("val-")
            plot_learning_curves(self.server_rows, self.hospital_rows, self.paths / CURVES_PNG, metric)
        except Exception as err:
            log.warning("could not draw learning curves: %s", err)
        self._plot_reliability()

    def _statistics_file(self, server_round: int) -> Path:
        return self.run_dir / CALIBRATION_DIR / f"round-{server_round:03d}.json"

    def _plot_reliability(self) -> None:
        """The selected round's reliability diagram, before and after temperature scaling (if it has statistics)."""
        from fedward.common.ml.calibration import plot_reliability
        from fedward.common.ml.valstats import ValidationStatistics

        path = self._statistics_file(self.best_round) if self.best_round is not None else None
        if path is None or not path.is_file():
            return
        try:
            stats = ValidationStatistics.from_wire(json.loads(path.read_text(encoding="utf-8")))
            if stats is not None:
                title = f"{self.run_dir.name}, round {self.best_round} (federated validation)"
                plot_reliability(stats.calibration, self.paths / RELIABILITY_PNG, title)
        except (OSError, ValueError) as err:
            log.warning("could not draw the reliability diagram: %s", err)

    def mark_finished(self, state: str, reason: str = "") -> None:
        """Write the final ``status.json``; a run's last file, so a reader that sees it may take the rest as written.

        The listener (tracking) finishes first; what it could not deliver is kept in the status.
        """
        note = self.listener.run_finished(self.run_dir, state) if self.listener is not None else ""
        self._write_status(state, reason=reason, tracking=note)

    # ------------------------------------------------------------------ internals
    def _choose_best(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.best_round, self.best_value = None, -math.inf
        for row in rows:
            value = row.get(self.selection_metric)
            if isinstance(value, int | float) and math.isfinite(value) and value > self.best_value:
                self.best_round, self.best_value = int(row["round"]), float(value)
        if self.best_round is not None:
            self._set_best(self.best_round, self.best_value)

    def _set_best(self, server_round: int, value: float | None) -> None:
        """Copy round ``server_round``'s weights to ``best.safetensors`` (atomically) and describe it."""
        write_atomically(self.best_file, lambda tmp: shutil.copyfile(self.round_file(server_round), tmp))
        record_weights(self.run_dir, self.best_file, server_round)
        metric = self.selection_metric if value is not None else None
        record = {"round": server_round, "metric": metric, "value": value}
        atomic_write(self.paths / BEST_RECORD, json.dumps(record, indent=2))

    def _append(self, table: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._rewrite(table, [*read_jsonl(self.paths.rows(table)), *rows])

    def _rewrite(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Replace ``metrics/<table>.jsonl`` and its CSV with ``rows``."""
        atomic_write(self.paths.rows(table), "".join(json.dumps(r) + "\n" for r in rows))
        atomic_write(self.paths.csv(table), rows_to_csv(rows, ROW_FILES[table]) if rows else "")

    def _write_status(
        self, state: str, latest: Mapping[str, Any] | None = None, reason: str = "", tracking: str = ""
    ) -> None:
        previous = read_json_or_empty(self.paths / STATUS_FILE)
        status: dict[str, Any] = {
            "state": state,
            "mode": self.mode,
            "round": max(self.last_round, 0),
            "rounds": self.spec.config.federation.rounds,
            "started": self.started,
            "updated": now_iso(),
            "latest": dict(latest) if latest is not None else previous.get("latest", {}),
            "best": {
                "round": self.best_round,
                "metric": self.selection_metric,
                "value": None if self.best_round is None else self.best_value,
            },
        }
        if reason:
            status["reason"] = reason
        if self.resumed:
            status["resumed"] = self.resumed
        if tracking:
            status["tracking"] = tracking
        atomic_write(self.paths / STATUS_FILE, json.dumps(status, indent=2))
        index_run(self.run_dir)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
