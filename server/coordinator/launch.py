"""Launching, listing and resuming runs on a coordinator (``fedward run start|list|resume``).

A run is submitted through Flower's run machinery: the app bundle (configuration only,
see :mod:`fedward.common.flower.bundle`) goes to the SuperLink's Control API over TLS with
``flwr run``; the SuperLink starts the installed ServerApp, which writes the run directory
on the coordinator. The run is set up by :mod:`fedward.common.runsetup` like every other:
the coordinator need not hold the images, the dataset schema comes from the dataset file
if this machine has it, else the MedMNIST catalog, else the config's declaration.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from fedward.common.config import RunConfig, RunSpec
from fedward.common.errors import ConfigError
from fedward.common.flower.bundle import write_bundle
from fedward.common.flower.flwr_cli import FlwrCli
from fedward.common.rundir.layout import CONFIG_FILE
from fedward.common.runsetup import Setting, resolve_run, resume_run

log = logging.getLogger(__name__)


def start_run(flwr: FlwrCli, cfg: RunConfig) -> int:
    """Set a run up for this coordinator and submit it; return Flower's run id.

    Raises:
        ConfigError: see :func:`~fedward.common.runsetup.resolve_run` (unreachable privacy
            settings, no schema, a machine-local ``model.init-weights``).
        FlowerCliError: if the SuperLink does not accept the run.
    """
    spec = resolve_run(cfg, Setting.COORDINATOR).spec
    run_id = submit(flwr, spec)
    log.info("run %d submitted: %s, %d rounds", run_id, cfg.data.dataset, cfg.federation.rounds)
    return run_id


def submit(flwr: FlwrCli, spec: RunSpec) -> int:
    """Submit a set-up run as a Flower app bundle; return Flower's run id.

    Raises:
        FlowerCliError: if the SuperLink does not accept the run.
    """
    with tempfile.TemporaryDirectory(prefix="fedward-bundle-") as folder:
        app_dir = write_bundle(Path(folder) / "app", spec)
        return flwr.submit(app_dir)


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
    if candidate.parent != root or not (candidate / CONFIG_FILE).is_file():
        raise ConfigError(f"no run {run!r} in {root}: give a run id, a run directory name or its path")
    return candidate


def resume(flwr: FlwrCli, run_dir: Path) -> int:
    """Submit a run that continues ``run_dir`` from its checkpoint; return the new Flower run id.

    The run keeps its configuration and its directory; the ServerApp loads the checkpoint
    and continues at the round after the last one completed. The hospitals need nothing:
    they receive the same run config as before.

    Raises:
        ConfigError: if the run directory has no checkpoint or already completed all rounds.
        RunBusyError: if a ServerApp is still running it (stop that run first).
        FlowerCliError: if the SuperLink does not accept the run.
    """
    resolved = resume_run(run_dir, Setting.COORDINATOR)
    run_id = submit(flwr, resolved.spec)
    log.info("run %d resumes %s after round %d", run_id, Path(run_dir).name, resolved.resumes_after or 0)
    return run_id
