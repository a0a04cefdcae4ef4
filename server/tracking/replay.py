"""Export a finished run directory into MLflow (``fedward run export-tracking``), for runs made without tracking.

The run directory is the record: its config becomes the parameters, every row of
``metrics/server.jsonl`` and ``metrics/hospitals.jsonl`` the metrics (named as a live run
names them, :mod:`fedward.server.tracking.names`), and its model card, config, plots and
best weights the artifacts. The MLflow run is the one ``tracking.json`` names for this
URI, else the one tagged with the run directory's name, else a new one; metrics MLflow
already holds (same key and round) are not logged again, so exporting twice, or after a
live run that delivered part of the records, fills in without duplicates.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedward.common.config import RunSpec
from fedward.common.errors import ConfigError, FedwardError
from fedward.common.fileio import read_jsonl
from fedward.common.rundir.info import read_run_config, read_run_info
from fedward.common.rundir.layout import RunDir
from fedward.common.rundir.reader import read_status
from fedward.server.tracking.mlflow_runs import (
    STATES,
    artifact_files,
    artifact_label,
    find_or_create_run,
    log_metrics,
    log_params,
    mlflow_client,
    round_batch,
)
from fedward.server.tracking.names import config_params
from fedward.server.tracking.record import mlflow_run_id, update_tracking

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What an export sent.

    Attributes:
        run_id: the MLflow run.
        rounds: rounds found in the run directory.
        metrics: metric values logged now (those MLflow already had are not counted).
        skipped: metric values MLflow already had.
        artifacts: files uploaded.
    """

    run_id: str
    rounds: int
    metrics: int
    skipped: int
    artifacts: int


def export_run(run_dir: Path, uri: str, experiment: str = "fedward") -> ExportReport:
    """Replay the finished (or interrupted) run directory ``run_dir`` into MLflow at ``uri``.

    Raises:
        ConfigError: if ``run_dir`` is not a run directory, or mlflow is not installed.
        FedwardError: if the tracking store cannot be reached or refuses the run.
    """
    run_dir = check_run_dir(run_dir)
    spec = RunSpec(read_run_config(run_dir), read_run_info(run_dir).schema)
    client = mlflow_client(uri)
    try:
        return _export(client, run_dir, uri, experiment, spec)
    except FedwardError:
        raise
    except Exception as err:
        raise FedwardError(f"could not export {run_dir.name} to MLflow at {uri}: {err}") from None


def _export(client: MlflowClient, run_dir: Path, uri: str, experiment: str, spec: RunSpec) -> ExportReport:
    paths = RunDir(run_dir)
    run_id = find_or_create_run(client, experiment, run_dir, mlflow_run_id(run_dir, uri))
    update_tracking(run_dir, "mlflow", {"uri": uri, "experiment": experiment, "run-id": run_id})
    _log_new_params(client, run_id, config_params(spec))
    servers = read_jsonl(paths.rows("server"))
    by_round: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in read_jsonl(paths.rows("hospitals")):
        by_round[int(row.get("round", -1))].append(row)
    metrics: list[Metric] = []
    for row in servers:
        server_round = int(row["round"])
        metrics += round_batch(server_round, row, by_round.get(server_round, []), time.time())
    new = _not_logged(client, run_id, metrics)
    log_metrics(client, run_id, new)
    files = artifact_files(run_dir)
    for path, folder in files:
        client.log_artifact(run_id, str(path), artifact_path=folder)
    state = str(read_status(run_dir).get("state", ""))
    if state in STATES:
        client.set_terminated(run_id, status=STATES[state])
    labels = ["run", "params", *(f"round {int(r['round'])}" for r in servers), *(artifact_label(*f) for f in files)]
    update_tracking(run_dir, "mlflow", {"delivered": labels, "undelivered": [], "dropped": []})
    log.info("exported %s to MLflow run %s (%d new metric values)", run_dir.name, run_id, len(new))
    return ExportReport(run_id, len(servers), len(new), len(metrics) - len(new), len(files))


def _log_new_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    """Log the parameters the run lacks; a different value already there is kept (MLflow never changes one)."""
    existing = client.get_run(run_id).data.params
    changed = sorted(k for k, v in params.items() if k in existing and existing[k] != v[:6000])
    if changed:
        log.warning("MLflow run %s keeps its earlier values of %s", run_id, ", ".join(changed))
    log_params(client, run_id, {k: v for k, v in params.items() if k not in existing})


def _not_logged(client: MlflowClient, run_id: str, metrics: list[Metric]) -> list[Metric]:
    """The metrics whose (key, round) MLflow does not hold yet."""
    present = set(client.get_run(run_id).data.metrics)
    held: set[tuple[str, int]] = set()
    for key in present & {m.key for m in metrics}:
        held.update((key, int(m.step)) for m in client.get_metric_history(run_id, key))
    return [m for m in metrics if (m.key, int(m.step)) not in held]


def check_run_dir(run_dir: Path) -> Path:
    """``run_dir`` resolved, if it holds recorded rounds.

    Raises:
        ConfigError: if it is no run directory or has no ``metrics/server.jsonl``.
    """
    path = Path(run_dir).expanduser().resolve()
    if not RunDir(path).rows("server").is_file():
        raise ConfigError(f"{path} is not a run directory with recorded rounds (no metrics/server.jsonl)")
    return path
