"""MLflow calls shared by the live sink and the replay: the client, the run of a run directory, batches, artifacts.

Only :class:`mlflow.MlflowClient` with explicit run ids is used, never MLflow's global
"active run" (``mlflow.start_run``), so nothing leaks between runs in one process. The
client is set to fail fast (no HTTP retries, a short timeout): retrying is the delivery
thread's job. ``mlflow`` is imported here only, when a run is tracked.

An MLflow run is tagged ``fedward.run`` with its run directory's name; the run's
``tracking.json`` keeps its id. Metrics are logged with the round as step and the row's
recorded time as timestamp, so the same record logged twice is the same MLflow metric.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from fedward.common.config.tracking import INSTALL_HINT, mlflow_scheme
from fedward.common.errors import ConfigError
from fedward.common.rundir.layout import BEST_RECORD, BEST_WEIGHTS, CARD_JSON, CARD_MD, CONFIG_FILE, PLOTS_DIR
from fedward.server.tracking.names import round_metrics, row_time

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

RUN_TAG = "fedward.run"
"""Tag holding the run directory's name."""

HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""A dead tracking server fails a call at once (or after 10 s when it hangs); set unless already set."""

PERMANENT = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST"})
"""MLflow error codes that retrying cannot cure (a changed parameter, a deleted run)."""

STATES = {"completed": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}
"""A fedward run's final state as an MLflow run status."""

METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100


class NoRunError(RuntimeError):
    """The MLflow run could not be created or found, so nothing else can be logged."""


def mlflow_client(uri: str) -> MlflowClient:
    """A client of the tracking store at ``uri``; contacts nothing yet.

    Raises:
        ConfigError: naming ``tracking.mlflow-uri`` when mlflow is not installed.
    """
    for key, value in HTTP_SETTINGS.items():
        os.environ.setdefault(key, value)
    if mlflow_scheme(uri) in ("", "file"):  # MLflow 3 keeps its file store only on request
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ConfigError(f"tracking.mlflow-uri needs the mlflow package (not installed): {INSTALL_HINT}") from None
    return MlflowClient(tracking_uri=uri)


def is_permanent(err: Exception) -> bool:
    """Whether MLflow refused for good (retrying cannot help)."""
    return isinstance(err, NoRunError) or getattr(err, "error_code", None) in PERMANENT


def find_or_create_run(client: MlflowClient, experiment: str, run_dir: Path, known: str | None) -> str:
    """The MLflow run of ``run_dir``: ``known`` if it still exists, else the one tagged with its name, else a new one.

    Raises:
        MlflowException: when the store cannot be reached or refuses.
    """
    from mlflow.exceptions import MlflowException

    if known:
        try:
            if client.get_run(known).info.lifecycle_stage == "active":
                return known
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
    found = client.get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage == "active":
        experiment_id = str(found.experiment_id)
    else:
        experiment_id = client.create_experiment(experiment, artifact_location=_artifact_root(client, experiment))
    name = run_dir.name.replace("'", "")
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{name}'", max_results=1)
    if runs:
        return str(runs[0].info.run_id)
    run = client.create_run(experiment_id, run_name=run_dir.name, tags={RUN_TAG: run_dir.name})
    return str(run.info.run_id)


def _artifact_root(client: MlflowClient, experiment: str) -> str | None:
    """Artifacts of a SQLite store go beside the database (MLflow would use the working directory)."""
    uri = client.tracking_uri
    if mlflow_scheme(uri) != "sqlite":
        return None
    database = Path(urlparse(uri).netloc + uri.split(":///", 1)[-1].split("?", 1)[0])  # sqlite:////abs, sqlite:///rel
    return (database.resolve().parent / "mlartifacts" / experiment).as_uri()


def chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of at most ``size``."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def round_batch(
    server_round: int, row: Mapping[str, Any], hospitals: Sequence[Mapping[str, Any]], default_time: float
) -> list[Metric]:
    """A round's metrics as MLflow metrics: step = round, timestamp = the row's recorded time (ms)."""
    from mlflow.entities import Metric

    stamp = int(row_time(row, default_time) * 1000)
    return [Metric(key, value, stamp, server_round) for key, value in round_metrics(row, hospitals).items()]


def log_metrics(client: MlflowClient, run_id: str, metrics: Sequence[Metric]) -> None:
    """Log ``metrics`` in as few calls as MLflow allows."""
    for batch in chunks(metrics, METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch, synchronous=True)


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    """Log ``params`` (MLflow keeps a parameter's first value; the same value again is accepted)."""
    from mlflow.entities import Param

    items = [Param(key, value[:6000]) for key, value in params.items()]
    for batch in chunks(items, PARAMS_PER_BATCH):
        client.log_batch(run_id, params=batch, synchronous=True)


def artifact_files(run_dir: Path) -> list[tuple[Path, str | None]]:
    """The files a finished run uploads and the artifact folder of each (model card, config, plots, best weights)."""
    root = Path(run_dir)
    files: list[tuple[Path, str | None]] = [(root / name, None) for name in (CARD_JSON, CARD_MD, CONFIG_FILE)]
    files += [(path, PLOTS_DIR) for path in sorted((root / PLOTS_DIR).glob("*.png"))]
    files += [(root / name, Path(name).parent.as_posix()) for name in (BEST_WEIGHTS, BEST_RECORD)]
    return [(path, folder) for path, folder in files if path.is_file()]


def artifact_label(path: Path, folder: str | None) -> str:
    """How an artifact is named in reports (``artifact plots/learning_curves.png``)."""
    return f"artifact {folder + '/' if folder else ''}{path.name}"
