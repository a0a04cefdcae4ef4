"""The run's tracking: the sinks a ``[tracking]`` section asks for, fed by the run recorder.

:func:`open_tracker` builds a :class:`Tracker` from the run's config; the ServerApp's
:class:`~fedward.server.app.session.RunSession` (simulation and deployment) and the
centralized baseline hand it to their :class:`~fedward.common.rundir.recorder.RunRecorder`
as its listener, so every recorded round reaches every sink with exactly the values the
run directory holds. A sink that fails is logged and never stops the run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from fedward.common.config import RunSpec
from fedward.common.config.tracking import check_tracking_installed
from fedward.server.tracking.names import config_params

log = logging.getLogger(__name__)


class TrackingSink(Protocol):
    """Somewhere a run's records are mirrored; every call returns quickly."""

    name: str

    def log_params(self, params: Mapping[str, str]) -> None:
        """The run's resolved config, flat ``section.key`` strings."""

    def log_round(
        self, server_round: int, server_metrics: Mapping[str, Any], hospital_rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """One round: its ``metrics/server.jsonl`` row and ``metrics/hospitals.jsonl`` rows, as written."""

    def log_artifacts(self, run_dir: Path) -> None:
        """The finished run's model card, plots and best weights."""

    def close(self, state: str) -> str:
        """Finish (``state``: completed, failed or stopped); returns what was not delivered (``""``: nothing)."""
        ...


class Tracker:
    """Fans the recorder's events out to sinks; a :class:`~fedward.common.rundir.recorder.RunListener`.

    Args:
        sinks: where to mirror the run.
    """

    def __init__(self, sinks: Sequence[TrackingSink]) -> None:
        self.sinks = list(sinks)

    def log_params(self, params: Mapping[str, str]) -> None:
        """Send the run's config to every sink."""
        for sink in self.sinks:
            _guarded(sink.name, "parameters", lambda s=sink: s.log_params(params))

    def round_recorded(self, server_round: int, row: Mapping[str, Any], hospitals: Sequence[Mapping[str, Any]]) -> None:
        """Send a recorded round to every sink."""
        for sink in self.sinks:
            _guarded(sink.name, f"round {server_round}", lambda s=sink: s.log_round(server_round, row, hospitals))

    def run_finished(self, run_dir: Path, state: str = "completed") -> str:
        """Send the artifacts, close every sink; what was not delivered, in one line."""
        notes = []
        for sink in self.sinks:
            _guarded(sink.name, "artifacts", lambda s=sink: s.log_artifacts(run_dir))
            note = ""
            try:
                note = sink.close(state)
            except Exception as err:
                note = f"{sink.name}: could not close ({err})"
                log.warning("%s", note)
            if note:
                notes.append(note)
        return "; ".join(notes)


def _guarded(sink: str, what: str, call: Any) -> None:
    try:
        call()
    except Exception as err:
        log.warning("tracking (%s) could not take %s: %s", sink, what, err)


def open_tracker(spec: RunSpec, run_dir: Path) -> Tracker | None:
    """The tracking ``spec.config.tracking`` asks for (``None``: none), its parameters already queued.

    Raises:
        ConfigError: naming ``tracking.mlflow-uri`` or ``tracking.tensorboard`` when the
            package is not installed.
    """
    settings = spec.config.tracking
    if not settings.enabled:
        return None
    check_tracking_installed(settings)
    sinks: list[TrackingSink] = []
    if settings.tensorboard:
        from fedward.server.tracking.tensorboard import TensorBoardSink

        sinks.append(TensorBoardSink(run_dir, resume=spec.resume))
    if settings.mlflow_uri:
        from fedward.server.tracking.mlflow_sink import MlflowSink

        sinks.append(MlflowSink(settings.mlflow_uri, settings.mlflow_experiment, run_dir))
    tracker = Tracker(sinks)
    tracker.log_params(config_params(spec))
    log.info("tracking this run: %s", ", ".join(sink.name for sink in sinks))
    return tracker
