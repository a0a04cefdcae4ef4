"""Launching, listing, following and stopping runs on a coordinator (``fedward run ...``).

A run is submitted through Flower's run machinery: the app bundle (configuration only,
see :mod:`fedward.common.flower.bundle`) goes to the SuperLink's Control API over TLS with
``flwr run``; the SuperLink starts the installed ``fedward.server.app.serverapp:app`` ServerApp,
which writes the run directory on the coordinator. The coordinator need not hold the
images: the dataset schema (task, classes, channels) comes from the config, else the
MedMNIST catalog, else the dataset file if this machine has it.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

from fedward.common.config import RunConfig
from fedward.common.data.catalog import lookup
from fedward.common.data.locate import locate_dataset
from fedward.common.data.npz import DatasetSchema, infer_schema, read_npz
from fedward.common.errors import ConfigError, FedwardError
from fedward.common.flower.bundle import write_bundle
from fedward.common.flower.flwr_cli import FlwrCli
from fedward.server.app.dp_plan import PrivacyPlan

log = logging.getLogger(__name__)


def resolve_schema(cfg: RunConfig) -> RunConfig:
    """Fill in ``data.task/classes/channels`` for a deployment run.

    Raises:
        ConfigError: if they are not in the config, the dataset is not in the MedMNIST
            catalog and its file is not on this machine.
    """
    if cfg.data.resolved:
        return cfg
    entry = lookup(cfg.data.dataset)
    if entry is not None:
        schema = DatasetSchema(entry.task, entry.classes, entry.channels)
    else:
        try:
            path = locate_dataset(cfg.data.dataset, cfg.data.image_size, cfg.data.data_dir, download=False)
        except FedwardError:
            raise ConfigError(
                f"dataset {cfg.data.dataset!r} is not a MedMNIST dataset: set data.classes, data.task and "
                "data.channels in the run config"
            ) from None
        schema = infer_schema(cfg.data.dataset, read_npz(path, ["test"]))
    return cfg.replace(data=cfg.data.with_schema(schema))


def deployment_config(cfg: RunConfig) -> RunConfig:
    """The config a coordinator's ServerApp receives: schema resolved, no machine-local paths.

    Simulation-only settings (hospital folders) are dropped: each hospital's folder is its
    own agent's ``--data``.

    Raises:
        ConfigError: see :func:`resolve_schema`; also when ``model.init-weights`` is set (the
            file is on the submitter's machine, not the coordinator's).
    """
    if cfg.model.init_weights is not None:
        raise ConfigError(
            "model.init-weights names a file on this machine; put it on the coordinator and "
            "start the run there (fedward run start on the coordinator)"
        )
    cfg = resolve_schema(cfg)
    PrivacyPlan.from_config(cfg)  # refuse an unreachable privacy target or budget before submitting
    data = dataclasses.replace(cfg.data, hospital_dirs=())
    return cfg.replace(data=data)


def start_run(flwr: FlwrCli, cfg: RunConfig) -> int:
    """Submit a run and return Flower's run id.

    Raises:
        ConfigError: see :func:`deployment_config`.
        FlowerCliError: if the SuperLink does not accept the run.
    """
    cfg = deployment_config(cfg)
    with tempfile.TemporaryDirectory(prefix="fedward-bundle-") as folder:
        app_dir = write_bundle(Path(folder) / "app", cfg)
        run_id = flwr.submit(app_dir)
    log.info("run %d submitted: %s, %d rounds", run_id, cfg.data.dataset, cfg.federation.rounds)
    return run_id


def find_run_dir(runs_root: Path, run_id: int) -> Path | None:
    """The run directory a coordinator's ServerApp wrote for ``run_id`` (``*-<run id>``)."""
    if not runs_root.is_dir():
        return None
    matches = sorted(p for p in runs_root.iterdir() if p.is_dir() and p.name.endswith(f"-{run_id}"))
    return matches[-1] if matches else None


def run_rows(flwr: FlwrCli, runs_root: Path | None) -> list[dict[str, Any]]:
    """Runs on the SuperLink with their run directory (when this machine is the coordinator)."""
    rows = []
    for run in flwr.runs():
        run_id = int(run["run-id"])
        run_dir = find_run_dir(runs_root, run_id) if runs_root is not None else None
        rows.append({**run, "run-dir": str(run_dir) if run_dir else ""})
    return sorted(rows, key=lambda r: int(r["run-id"]))


def locate_run(runs_root: Path, run: str) -> Path:
    """The run directory ``run`` names on this coordinator.

    Args:
        runs_root: the coordinator's runs folder.
        run: a Flower run id (the directory ends in ``-<id>``), a run directory's name, or
            a path to a run directory inside ``runs_root``.

    Raises:
        ConfigError: if no such run directory exists here.
    """
    root = Path(runs_root).resolve()
    if run.isdigit():
        found = find_run_dir(root, int(run))
        if found is not None:
            return found
    candidate = Path(run).expanduser()
    candidate = candidate.resolve() if candidate.is_absolute() or len(candidate.parts) > 1 else root / run
    if candidate.parent != root or not (candidate / "config.toml").is_file():
        raise ConfigError(f"no run {run!r} in {root}: give a run id, a run directory name or its path")
    return candidate


def resume_run(flwr: FlwrCli, run_dir: Path) -> int:
    """Submit a run that continues ``run_dir`` from its checkpoint; return the new Flower run id.

    The run keeps its configuration (``config.toml``) and its directory; the ServerApp
    loads the checkpoint and continues at the round after the last one completed. The
    hospitals need nothing: they receive the same run config as before.

    Raises:
        ConfigError: if the run directory has no checkpoint or already completed all rounds.
        RunBusyError: if a ServerApp is still running it (stop that run first).
        FlowerCliError: if the SuperLink does not accept the run.
    """
    from fedward.common.rundir.checkpoint import CHECKPOINT_FILE, load_checkpoint
    from fedward.common.rundir.lock import check_not_running

    if not (run_dir / CHECKPOINT_FILE).is_file():
        raise ConfigError(f"{run_dir.name} has no {CHECKPOINT_FILE}: it never completed a round to resume from")
    check_not_running(run_dir)
    done = load_checkpoint(run_dir).server_round
    cfg = RunConfig.from_toml(run_dir / "config.toml")
    if done >= cfg.federation.rounds:
        raise ConfigError(f"{run_dir.name} already completed all {cfg.federation.rounds} rounds; nothing to resume")
    cfg = cfg.replace(run=dataclasses.replace(cfg.run, dir=run_dir, resume=True))
    run_id = start_run(flwr, cfg)
    log.info("run %d resumes %s after round %d", run_id, run_dir.name, done)
    return run_id
