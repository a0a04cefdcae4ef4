"""The MLflow sink: a run's config, rounds and final artifacts sent to an MLflow tracking store in the background.

Every call from the training side queues a job and returns
(:class:`~fedward.server.tracking.delivery.Delivery`): the MLflow run is found or created
first (the id kept in ``tracking.json``, so a resumed run continues it), then the
parameters, each round's metrics (server metrics by key, hospital metrics as
``hospital/<name>/<key>``, see :mod:`fedward.server.tracking.names`), and at the end the
model card, config, plots and best weights as artifacts. A tracking server that is down
costs the run nothing: one warning per outage, retries with backoff, and at the end a
bounded wait (:data:`CLOSE_WAIT`) after which ``tracking.json`` and the log say what was
not delivered; ``fedward run export-tracking`` delivers it later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedward.server.tracking.delivery import Delivery, Job, Outcome
from fedward.server.tracking.mlflow_runs import (
    STATES,
    NoRunError,
    artifact_files,
    artifact_label,
    find_or_create_run,
    is_permanent,
    log_metrics,
    log_params,
    mlflow_client,
    round_batch,
)
from fedward.server.tracking.record import mlflow_run_id, update_tracking

log = logging.getLogger(__name__)

CLOSE_WAIT = 30.0
"""Seconds the end of a run waits for undelivered records before giving up on them."""
BACKOFF = (1.0, 30.0)
"""First and largest wait between two attempts to deliver a record, seconds (doubling in between)."""


class MlflowSink:
    """Sends one run to MLflow without ever blocking the caller.

    Args:
        uri: the tracking URI (``http(s)://``, ``sqlite:///``, or a folder).
        experiment: the experiment's name (created if absent).
        run_dir: the run directory (its ``tracking.json`` is kept current).
        close_wait: seconds :meth:`close` waits for the queue to drain (default :data:`CLOSE_WAIT`).
        backoff: first and largest wait between attempts, seconds (default :data:`BACKOFF`).

    Raises:
        ConfigError: naming ``tracking.mlflow-uri`` when mlflow is not installed.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_dir: Path,
        *,
        close_wait: float | None = None,
        backoff: tuple[float, float] | None = None,
    ) -> None:
        self.name = f"MLflow at {uri}"
        self.uri, self.experiment, self.run_dir = uri, experiment, Path(run_dir)
        self.close_wait = CLOSE_WAIT if close_wait is None else close_wait
        self.client = mlflow_client(uri)
        self.run_id: str | None = mlflow_run_id(self.run_dir, uri)
        update_tracking(self.run_dir, "mlflow", {"uri": uri, "experiment": experiment, "run-id": self.run_id})
        self.delivery = Delivery(self.name, self._record, is_permanent, backoff or BACKOFF)
        self.delivery.put(Job("run", self._start))

    def _start(self) -> None:
        self.run_id = find_or_create_run(self.client, self.experiment, self.run_dir, self.run_id)
        update_tracking(self.run_dir, "mlflow", {"run-id": self.run_id})
        log.info("MLflow run %s in experiment %r at %s", self.run_id, self.experiment, self.uri)

    def _run(self) -> str:
        if self.run_id is None:
            raise NoRunError("no MLflow run (it could not be created)")
        return self.run_id

    def _record(self, outcome: Outcome) -> None:
        """Keep ``tracking.json`` current (a run killed mid-way still says what was delivered)."""
        update_tracking(
            self.run_dir,
            "mlflow",
            {"delivered": outcome.delivered, "undelivered": outcome.pending, "dropped": outcome.dropped},
        )

    def log_params(self, params: Mapping[str, str]) -> None:
        """Queue the run's config as parameters."""
        copied = dict(params)
        self.delivery.put(Job("params", lambda: log_params(self.client, self._run(), copied)))

    def log_round(
        self, server_round: int, server_metrics: Mapping[str, Any], hospital_rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Queue one round's server and hospital metrics."""
        metrics = round_batch(server_round, server_metrics, hospital_rows, time.time())
        self.delivery.put(Job(f"round {server_round}", lambda: log_metrics(self.client, self._run(), metrics)))

    def log_artifacts(self, run_dir: Path) -> None:
        """Queue the model card, config, plots and best weights, one job per file."""
        for path, folder in artifact_files(run_dir):
            self.delivery.put(
                Job(artifact_label(path, folder), lambda p=path, f=folder: self._artifact(p, f))  # type: ignore[misc]
            )

    def _artifact(self, path: Path, folder: str | None) -> None:
        self.client.log_artifact(self._run(), str(path), artifact_path=folder)

    def close(self, state: str) -> str:
        """Mark the MLflow run ended, wait at most ``close_wait`` seconds, report what was not delivered."""
        status = STATES.get(state, "FINISHED")
        self.delivery.put(Job("end", lambda: self.client.set_terminated(self._run(), status=status)))
        outcome = self.delivery.close(self.close_wait)
        self._record(outcome)
        missing = [label for label in [*outcome.pending, *outcome.dropped] if label != "end"]
        if not missing:
            log.info("MLflow run %s has every record of this run (%s)", self.run_id, self.uri)
            return ""
        note = (
            f"not delivered to MLflow at {self.uri}: {', '.join(missing)} (kept in the run directory; "
            f"fedward run export-tracking {self.run_dir} --mlflow-uri {self.uri} sends them)"
        )
        log.warning("%s", note)
        return note
