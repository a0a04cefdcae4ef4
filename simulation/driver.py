"""Run a whole federation on one machine with Flower's simulation runtime (Ray backend).

The path of a simulation::

    RunConfig --setup----> dataset located (downloaded once if allowed), validated; its
                           schema found (fedward.common.runsetup -> RunSpec)
              --plan-----> hospital partitions (partitions.json: indices only)
              --bundle---> app bundle (pyproject.toml naming fedward's installed
                           ServerApp/ClientApp, carrying the RunSpec)
              --Flower---> private simulation SuperLink, ``flwr run`` with N simulated
                           SuperNodes and per-hospital CPU/GPU shares
              --follow---> status.json for progress, the run's log into logs/flower.log

The ServerApp and ClientApp are exactly those a deployment runs.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedward.common.config import RunConfig, RunSpec
from fedward.common.data.opening import OpenedDataset
from fedward.common.data.plan import PartitionPlan
from fedward.common.errors import ConfigError, SimulationError
from fedward.common.fileio import atomic_write
from fedward.common.flower.bundle import write_bundle
from fedward.common.ml.runtime import resolve_device
from fedward.common.rundir.layout import APP_DIR, FLOWER_LOG, LOGS_DIR, PLAN_FILE, STATUS_FILE
from fedward.common.rundir.reader import read_status
from fedward.common.runsetup import ResolvedRun, Setting, create_run_dir, resolve_run, resume_run
from fedward.simulation.local_link import LocalSimulationLink
from fedward.simulation.partition import make_plan

log = logging.getLogger(__name__)

StatusCallback = Callable[[dict[str, Any]], None]
POLL_S = 0.5
FALLBACK_POLL_S = 5.0


def _follow(
    link: LocalSimulationLink,
    run_id: int,
    follower: subprocess.Popen[bytes],
    run_dir: Path,
    since: float,
    on_status: StatusCallback | None,
) -> str:
    """Watch a simulation until it ends; Flower's status of the run, or ``completed`` (see below).

    A run whose ServerApp wrote ``completed`` into ``status.json`` (its last file: card,
    plots and weights are written before it) is over for fedward: the caller stops the
    SuperLink, Ray and the simulation process right away, without waiting seconds for
    Flower to shut its Ray actors down and report the run finished. A failed or stopped
    run is left to end on its own, so Flower's log keeps every line of how it ended.
    """
    last: dict[str, Any] = {}
    while True:
        status = read_status(run_dir)
        if status and status != last:
            last = status
            if on_status is not None:
                on_status(status)
        if status.get("state") == "completed" and _written_since(run_dir, since):
            return "finished:completed"
        if follower.poll() is not None:  # the log stream ends with the run
            flower_status = link.run_status(run_id)
            if flower_status.startswith("finished"):
                return flower_status
            time.sleep(FALLBACK_POLL_S)
        time.sleep(POLL_S)


def _written_since(run_dir: Path, since: float) -> bool:
    """Whether ``status.json`` was written at or after ``since`` (a resumed run's old status is not its end)."""
    try:
        return (run_dir / STATUS_FILE).stat().st_mtime >= since
    except OSError:
        return False


def plan_hospitals(resolved: ResolvedRun) -> PartitionPlan:
    """Partition the dataset file's training split across the configured hospitals.

    Raises:
        ConfigError: if this run has no dataset file (hospital folders), or the partition
            settings cannot be met on this dataset.
    """
    cfg, dataset = resolved.cfg, resolved.dataset
    if dataset is None:
        raise ConfigError("hospitals can only be planned from a dataset file")
    return make_plan(
        cfg.data.dataset,
        dataset.path,
        dataset.splits["train"].labels,
        cfg.federation,
        cfg.data.val_fraction,
        cfg.run.seed,
    )


def resolve_dataset(cfg: RunConfig) -> tuple[ResolvedRun, OpenedDataset]:
    """Set up a run over the dataset file (downloaded once if catalogued), for the data commands.

    Raises:
        ConfigError: with ``data.hospital-dirs`` (nothing to partition), or as
            :func:`~fedward.common.runsetup.resolve_run`.
        DataError, DownloadError: as :func:`~fedward.common.runsetup.resolve_run`.
    """
    if cfg.data.hospital_dirs:
        raise ConfigError("data.hospital-dirs: the hospitals hold their own folders; there is no dataset to split")
    resolved = resolve_run(cfg, Setting.SIMULATION, download=True, trains=False)
    if resolved.dataset is None:  # pragma: no cover - a simulation without hospital folders always has the file
        raise ConfigError(f"no dataset file for {cfg.data.dataset}")
    return resolved, resolved.dataset


@dataclass(frozen=True, slots=True)
class PreparedRun:
    """A simulation (or its centralized baseline) ready to start: run directory written.

    Attributes:
        resolved: the run, with ``spec.run_dir`` set.
        plan: the hospitals' partitions (``None`` with hospital folders).
    """

    resolved: ResolvedRun
    plan: PartitionPlan | None

    @property
    def spec(self) -> RunSpec:
        """What the ServerApp and ClientApps receive."""
        return self.resolved.spec

    @property
    def cfg(self) -> RunConfig:
        """The user's settings."""
        return self.resolved.cfg

    @property
    def run_dir(self) -> Path:
        """The run directory."""
        if self.resolved.spec.run_dir is None:  # pragma: no cover - prepare always sets it
            raise ConfigError("the run has no run directory")
        return self.resolved.spec.run_dir


def prepare(cfg: RunConfig, *, mode: str = "federated", download: bool = True) -> PreparedRun:
    """Set the run up, plan the hospitals and create the run directory.

    Every check that can fail on user input runs before the directory is created. With
    ``data.hospital-dirs`` each simulated hospital reads its own folder and nothing is
    partitioned.

    Args:
        cfg: the user's config.
        mode: ``federated`` (simulate) or ``centralized`` (the pooled baseline).
        download: fetch a missing catalogued MedMNIST file.

    Raises:
        ConfigError, DataError, DownloadError: on unusable settings or data (see
            :func:`~fedward.common.runsetup.resolve_run`, :func:`plan_hospitals`);
            ``train.device = "cuda"`` without a visible GPU.
    """
    resolve_device(cfg.train.device)  # all hospitals share this machine in simulation
    resolved = resolve_run(cfg, Setting.SIMULATION, download=download)
    plan = None if resolved.cfg.data.hospital_dirs else plan_hospitals(resolved)
    resolved = create_run_dir(resolved, mode)
    prepared = PreparedRun(resolved, plan)
    if plan is not None:
        atomic_write(prepared.run_dir / PLAN_FILE, plan.to_json())
    return prepared


def prepare_resume(run_dir: Path) -> PreparedRun:
    """Prepare to continue an interrupted simulation from its checkpoint.

    The run continues in the same directory with the configuration it was started with
    (``config.toml``, ``run.json``) and the same hospital partitions (``partitions.json``);
    nothing in the directory is overwritten until the ServerApp resumes after the
    checkpointed round.

    Raises:
        ConfigError: if ``run_dir`` is not a federated run directory, has no checkpoint,
            or already completed all its rounds.
        RunBusyError: if a simulation is still running in ``run_dir``.
        DataError: if the dataset it was trained on is no longer where it was.
    """
    resolved = resume_run(run_dir, Setting.SIMULATION)
    folder = Path(run_dir).expanduser().resolve()
    plan = None if resolved.cfg.data.hospital_dirs else PartitionPlan.read(folder / PLAN_FILE)
    return PreparedRun(resolved, plan)


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
    logs = run_dir / LOGS_DIR
    app_dir = write_bundle(run_dir / APP_DIR, prepared.spec)
    started, since = time.monotonic(), time.time()
    with LocalSimulationLink(logs) as link:
        run_id = link.submit(app_dir, cfg.federation.hospitals, cfg.simulation.client_cpus, cfg.simulation.client_gpus)
        log.info("Flower run %d started; log: %s", run_id, run_dir / FLOWER_LOG)
        follower = link.stream_logs(run_id, run_dir / FLOWER_LOG)
        try:
            flower_status = _follow(link, run_id, follower, run_dir, since, on_status)
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
        raise SimulationError(f"the simulation failed: {reason}; see {run_dir / FLOWER_LOG}")
    return outcome
