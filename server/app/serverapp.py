"""The fedward ServerApp: Flower's entry point on the coordinator, one federated run per call.

The same ServerApp runs in simulation (Flower's simulation runtime) and in deployment
(a SuperLink started by ``fedward server start``). It parses the run once
(:meth:`~fedward.common.config.spec.RunSpec.from_flower`), decides the run directory,
locks it and hands the run to a :class:`~fedward.server.app.session.RunSession`. Per round::

    global model --train--> hospitals (sampled by the strategy, ordered by name)
    replies --validate--> accepted updates --strategy--> new global model
    new global model --evaluate--> hospitals' local validation metrics (weighted mean)
    new global model --> server test split (when this machine has it)
    --> run directory: metrics, weights, best model, status, checkpoint

A resumed run (``resolved.resume``) continues its run directory from the checkpoint at the
round after the last one completed; on a CPU the result is the same, bit for bit, as an
uninterrupted run.

Component string for Flower: ``fedward.server.app.serverapp:app``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.superlink.grid import http_grid

from fedward.common.config import RunSpec
from fedward.common.errors import ConfigError
from fedward.common.flower.object_pulls import bound_object_pulls
from fedward.common.rundir.layout import new_run_dir
from fedward.common.rundir.lock import RunLock
from fedward.server.app.sites import SiteDirectory
from fedward.server.coordinator.admission import read_registered_names
from fedward.server.coordinator.state import RUNS_DIR_ENV, STATE_DIR_ENV, CoordinatorState

log = logging.getLogger(__name__)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower entry point: parse the run once, announce it to the hospitals, run the federation."""
    bound_object_pulls(http_grid)  # a reply whose upload never completed fails its hospital, not the run
    spec = RunSpec.from_flower(context.run_config)
    directory = SiteDirectory(timeout=spec.config.federation.round_timeout, registered=registered_hospitals())
    directory.announce(grid)
    run_federation(grid, spec, run_id=context.run_id, directory=directory)


def run_federation(
    grid: Grid, spec: RunSpec, run_id: int | None = None, directory: SiteDirectory | None = None
) -> None:
    """Run all rounds of ``spec`` on ``grid`` and write its run directory.

    PyTorch and MONAI are loaded here, not when Flower loads this module: seconds in
    which the hospitals, asked who they are by :meth:`SiteDirectory.announce`, load
    theirs (in simulation the same two cores do both, in deployment other machines).

    Args:
        grid: Flower's grid to the hospitals.
        spec: the run.
        run_id: Flower's run id.
        directory: the hospitals, possibly already asked to enrol; default: a new one
            with the coordinator's roster.

    Raises:
        ConfigError: if a run to resume is not a run directory of this coordinator.
        RunBusyError: if another ServerApp is running the same run directory (a resume of
            a run that has not stopped).
        CheckpointError: if a run to resume has no usable checkpoint.
        Exception: whatever ends the run early is re-raised after the run directory
            records the failure.
    """
    from fedward.server.app.session import RunSession  # PyTorch and MONAI: loaded here, see above

    spec, created = place_run(spec, run_id)
    if spec.run_dir is None:  # pragma: no cover - place_run always sets it
        raise ConfigError("no run directory")
    if directory is None:
        directory = SiteDirectory(timeout=spec.config.federation.round_timeout, registered=registered_hospitals())
    with RunLock(spec.run_dir):  # released by the OS however this process ends
        RunSession(spec, run_id if created else None, directory).run(grid)


def place_run(spec: RunSpec, run_id: int | None) -> tuple[RunSpec, bool]:
    """The spec with its run directory, and whether this ServerApp created it.

    On a coordinator (``$FEDWARD_RUNS_DIR``, set by ``fedward server start``) new runs go
    into its runs folder, named with Flower's run id; the submitter's ``run.output-dir``
    names a folder on another machine. A run to resume must be one of its run directories.

    Raises:
        ConfigError: if a run to resume is not directly inside the coordinator's runs folder.
    """
    runs = os.environ.get(RUNS_DIR_ENV)
    if spec.run_dir is not None:
        if runs and Path(spec.run_dir).resolve().parent != Path(runs).resolve():
            raise ConfigError(f"{spec.run_dir} is not a run directory of this coordinator ({runs})")
        return spec, False
    cfg = spec.config
    output = Path(runs) if runs else cfg.run.output_dir
    run_dir = new_run_dir(output, cfg.run.name or cfg.data.dataset, suffix=str(run_id) if run_id else "")
    return dataclasses.replace(spec, run_dir=run_dir), True


def registered_hospitals() -> dict[int, str]:
    """Node id -> name from the coordinator's roster (``$FEDWARD_STATE_DIR``), if any."""
    state = os.environ.get(STATE_DIR_ENV)
    if not state:
        return {}
    return read_registered_names(CoordinatorState(Path(state)).hospitals_file)
