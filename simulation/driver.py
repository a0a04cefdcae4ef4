"""Run a whole federation on one machine with Flower's simulation runtime (Ray backend).

The path of a simulation::

    RunConfig --resolve--> dataset located (downloaded once if allowed), validated,
                           schema (task, classes, channels) filled in
              --plan-----> hospital partitions (partitions.json: indices only)
              --bundle---> app bundle (pyproject.toml naming fedward's installed
                           ServerApp/ClientApp, carrying the resolved config)
              --Flower---> private simulation SuperLink, ``flwr run`` with N simulated
                           SuperNodes and per-hospital CPU/GPU shares
              --follow---> status.json for progress, the run's log into logs/flower.log

The ServerApp and ClientApp are exactly those a deployment runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedward.common.config import RunConfig
from fedward.common.data.hospital import PLAN_FILE, PartitionPlan
from fedward.common.data.locate import locate_dataset
from fedward.common.data.npz import ArraySplit, DatasetSchema, infer_schema, read_npz
from fedward.common.errors import ConfigError, DataError, FedwardError, SimulationError
from fedward.common.flower.bundle import write_bundle
from fedward.common.ml.runtime import resolve_device
from fedward.common.rundir.recorder import atomic_write, new_run_dir
from fedward.server.app.dp_plan import PrivacyPlan
from fedward.simulation.local_link import LocalSimulationLink
from fedward.simulation.partition import make_plan

log = logging.getLogger(__name__)

StatusCallback = Callable[[dict[str, Any]], None]
POLL_S = 0.5
FALLBACK_POLL_S = 5.0


@dataclass(frozen=True, slots=True)
class ResolvedData:
    """A run config resolved against its dataset file.

    Attributes:
        cfg: the config with ``data.task/classes/channels`` and absolute paths.
        path: the ``.npz`` file (``None`` for hospital folders without one).
        splits: its validated train/val/test arrays (empty without a file).
        schema: task, classes, channels.
    """

    cfg: RunConfig
    path: Path | None
    splits: dict[str, ArraySplit]
    schema: DatasetSchema


def resolve_data(cfg: RunConfig, *, download: bool = True) -> ResolvedData:
    """Find, validate and describe the run's dataset.

    Raises:
        DataError: missing folder, unreadable or malformed file.
        DownloadError: file absent and not downloadable.
        ConfigError: unknown dataset name.
    """
    path = locate_dataset(cfg.data.dataset, cfg.data.image_size, cfg.data.data_dir, download=download)
    splits = read_npz(path)
    schema = infer_schema(cfg.data.dataset, splits)
    data = dataclasses.replace(cfg.data.with_schema(schema), data_dir=path.parent.resolve())
    return ResolvedData(cfg.replace(data=data), path.resolve(), splits, schema)


def resolve_folders(cfg: RunConfig) -> ResolvedData:
    """Resolve a simulation over hospital folders (``data.hospital-dirs``).

    The schema comes from ``<data-dir>/<dataset>.npz`` when this machine has it (its test
    split then scores the global model), else from ``data.classes``/``task``/``channels``.

    Raises:
        DataError: if a hospital folder does not exist.
        ConfigError: if neither the dataset file nor the classes are given.
    """
    dirs = tuple(Path(d).expanduser().resolve() for d in cfg.data.hospital_dirs)
    for folder in dirs:
        if not folder.is_dir():
            raise DataError(f"hospital folder {folder} does not exist")
    data = dataclasses.replace(cfg.data, hospital_dirs=dirs)
    try:
        path = locate_dataset(cfg.data.dataset, cfg.data.image_size, cfg.data.data_dir, download=False)
    except FedwardError:
        if not cfg.data.resolved:
            raise ConfigError(
                "with data.hospital-dirs, set data.classes, data.task and data.channels, or give a "
                f"data-dir holding {cfg.data.dataset}.npz"
            ) from None
        return ResolvedData(cfg.replace(data=data), None, {}, cfg.data.schema())
    splits = read_npz(path)
    schema = infer_schema(cfg.data.dataset, splits)
    data = dataclasses.replace(data.with_schema(schema), data_dir=path.parent.resolve())
    return ResolvedData(cfg.replace(data=data), path.resolve(), splits, schema)


def plan_hospitals(resolved: ResolvedData) -> PartitionPlan:
    """Partition the training split across the configured hospitals.

    Raises:
        ConfigError: if the partition settings cannot be met on this dataset.
    """
    cfg = resolved.cfg
    if resolved.path is None:
        raise ConfigError("hospitals can only be planned from a dataset file")
    return make_plan(
        cfg.data.dataset,
        resolved.path,
        resolved.splits["train"].labels,
        cfg.federation,
        cfg.data.val_fraction,
        cfg.run.seed,
    )


@dataclass(frozen=True, slots=True)
class PreparedRun:
    """A simulation ready to start: run directory written, config final."""

    cfg: RunConfig
    run_dir: Path
    plan: PartitionPlan | None
    resolved: ResolvedData


def prepare(cfg: RunConfig, *, download: bool = True) -> PreparedRun:
    """Resolve the data, plan the hospitals and create the run directory.

    Every check that can fail on user input runs before the directory is created. With
    ``data.hospital-dirs`` each simulated hospital reads its own folder and nothing is
    partitioned.

    Raises:
        ConfigError, DataError, DownloadError: on unusable settings or data (see
            :func:`resolve_data`, :func:`plan_hospitals`); ``train.device = "cuda"``
            without a visible GPU; a privacy target or budget no noise can meet.
    """
    resolve_device(cfg.train.device)  # all hospitals share this machine in simulation
    PrivacyPlan.from_config(cfg)  # an unreachable target epsilon or budget fails here, not in the ServerApp
    if cfg.data.hospital_dirs:
        resolved, plan = resolve_folders(cfg), None
    else:
        resolved = resolve_data(cfg, download=download)
        plan = plan_hospitals(resolved)
    cfg = resolved.cfg
    run_dir = new_run_dir(cfg)
    run = dataclasses.replace(cfg.run, dir=run_dir, output_dir=Path(cfg.run.output_dir).resolve())
    model = cfg.model
    if model.init_weights is not None:
        model = dataclasses.replace(model, init_weights=Path(model.init_weights).resolve())
    cfg = cfg.replace(run=run, model=model)
    if plan is not None:
        plan.write(run_dir / PLAN_FILE)
    atomic_write(run_dir / "config.toml", cfg.to_toml())
    return PreparedRun(cfg, run_dir, plan, dataclasses.replace(resolved, cfg=cfg))


def prepare_resume(run_dir: Path) -> PreparedRun:
    """Prepare to continue an interrupted simulation from its checkpoint.

    The run continues in the same directory with the configuration it was started with
    (``config.toml``) and the same hospital partitions (``partitions.json``); nothing in
    the directory is overwritten until the ServerApp resumes after the checkpointed round.

    Args:
        run_dir: a run directory written by ``fedward simulate``.

    Raises:
        ConfigError: if ``run_dir`` is not a simulation run directory, has no checkpoint,
            or already completed all its rounds.
        RunBusyError: if a simulation is still running in ``run_dir``.
        DataError: if the dataset it was trained on is no longer where it was.
    """
    from fedward.common.rundir.checkpoint import CHECKPOINT_FILE, load_checkpoint
    from fedward.common.rundir.lock import check_not_running

    run_dir = Path(run_dir).expanduser().resolve()
    config_file = run_dir / "config.toml"
    if not config_file.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.toml)")
    status = read_status(run_dir)
    if status.get("mode", "federated") != "federated":
        raise ConfigError(f"{run_dir} is a {status.get('mode')} run; only federated runs resume")
    if not (run_dir / CHECKPOINT_FILE).is_file():
        raise ConfigError(f"{run_dir} has no {CHECKPOINT_FILE}: the run never completed a round to resume from")
    check_not_running(run_dir)
    done = load_checkpoint(run_dir).server_round
    cfg = RunConfig.from_toml(config_file)
    if status.get("state") == "completed" and done >= cfg.federation.rounds:
        raise ConfigError(f"{run_dir.name} already completed all {cfg.federation.rounds} rounds; nothing to resume")
    resolved = resolve_folders(cfg) if cfg.data.hospital_dirs else resolve_data(cfg, download=False)
    plan = None if cfg.data.hospital_dirs else PartitionPlan.read(run_dir / PLAN_FILE)
    cfg = cfg.replace(run=dataclasses.replace(cfg.run, dir=run_dir, resume=True))
    log.info("resuming %s after round %d of %d", run_dir.name, done, cfg.federation.rounds)
    return PreparedRun(cfg, run_dir, plan, dataclasses.replace(resolved, cfg=cfg))


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a simulation ended.

    Attributes:
        run_dir: the run directory.
        status: ``status.json`` as written by the ServerApp.
        flower_status: Flower's run status (``finished:completed`` ...).
        seconds: wall time of the Flower run, seconds.
    """

    run_dir: Path
    status: dict[str, Any]
    flower_status: str
    seconds: float


def read_status(run_dir: Path) -> dict[str, Any]:
    """``status.json`` of a run (empty dict if absent or being replaced)."""
    try:
        return dict(json.loads((run_dir / "status.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def simulate(prepared: PreparedRun, on_status: StatusCallback | None = None) -> Outcome:
    """Run the prepared federation on Flower's simulation runtime and wait for the end.

    Args:
        prepared: from :func:`prepare`.
        on_status: called with ``status.json`` whenever it changes (progress displays).

    Returns:
        The outcome; the run directory holds metrics, weights and the model card.

    Raises:
        SimulationError: if Flower cannot start or the run fails.
        KeyboardInterrupt: after stopping the run, when interrupted.
    """
    cfg, run_dir = prepared.cfg, prepared.run_dir
    logs = run_dir / "logs"
    app_dir = write_bundle(run_dir / "app", cfg)
    started = time.monotonic()
    with LocalSimulationLink(logs) as link:
        run_id = link.submit(app_dir, cfg.federation.hospitals, cfg.simulation.client_cpus, cfg.simulation.client_gpus)
        log.info("Flower run %d started; log: %s", run_id, logs / "flower.log")
        follower = link.stream_logs(run_id, logs / "flower.log")
        last: dict[str, Any] = {}
        try:
            flower_status = "running"
            while True:
                status = read_status(run_dir)
                if status and status != last:
                    last = status
                    if on_status is not None:
                        on_status(status)
                if follower.poll() is not None:  # the log stream ends with the run
                    flower_status = link.run_status(run_id)
                    if flower_status.startswith("finished"):
                        break
                    time.sleep(FALLBACK_POLL_S)
                time.sleep(POLL_S)
        except BaseException:
            link.stop(run_id)
            follower.kill()
            raise
        finally:
            if follower.poll() is None:
                follower.terminate()
    status = read_status(run_dir)
    if on_status is not None and status:
        on_status(status)
    outcome = Outcome(run_dir, status, flower_status, time.monotonic() - started)
    if flower_status != "finished:completed" or status.get("state") != "completed":
        reason = status.get("reason") or f"Flower reports {flower_status}"
        raise SimulationError(f"the simulation failed: {reason}; see {logs / 'flower.log'}")
    return outcome
