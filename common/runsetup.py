"""Run setup: the one path from a user's config (or a run directory to resume) to a run ready to start.

Every entry point goes through it: ``fedward simulate`` and ``fedward centralized`` (and
``data describe|export``), ``fedward run start`` on a coordinator, and both resumes
(``simulate --resume``, ``run resume``). It

* checks what can be checked before anything is written: hospital folders exist, the
  privacy target or budget is reachable (:class:`~fedward.common.ml.accounting.ClientDpPlan`),
  a coordinator run names no file on the submitter's machine;
* finds the dataset file when this machine has it (downloading a catalogued MedMNIST
  file once, where the setting allows), and validates it;
* finds the dataset's schema (:func:`resolve_schema`): from the file, else the MedMNIST
  catalog, else the config's declaration;
* for a resume, reads the run directory's own ``config.toml`` and ``run.json``, and refuses
  a run without a checkpoint, one still running, or one already complete.

The result, :class:`ResolvedRun`, carries the :class:`~fedward.common.config.spec.RunSpec`
every participant receives. Found values never go back into the user's config.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from fedward.common.config import RunConfig, RunSpec
from fedward.common.config.evaluation import check_operating_point
from fedward.common.config.tracking import absolute_mlflow_uri, check_tracking_installed
from fedward.common.data.catalog import lookup
from fedward.common.data.load import cache_root_for, require_lesion_masks
from fedward.common.data.locate import locate_dataset
from fedward.common.data.npz import SPLITS
from fedward.common.data.opening import OpenedDataset, open_dataset
from fedward.common.errors import ConfigError, DataError, FedwardError
from fedward.common.ml.accounting import ClientDpPlan
from fedward.common.ml.networks import check_dpsgd_network, check_network_fits
from fedward.common.rundir.checkpoint import load_checkpoint
from fedward.common.rundir.info import describe_run, read_run_config, read_run_info
from fedward.common.rundir.layout import CHECKPOINT_FILE, new_run_dir
from fedward.common.rundir.lock import check_not_running
from fedward.common.rundir.reader import read_status
from fedward.common.schema import DatasetSchema

log = logging.getLogger(__name__)


class Setting(StrEnum):
    """Where a run is set up, which decides what setup may and must do."""

    SIMULATION = "simulation"
    """This machine holds the data and trains (simulate, centralized, data commands):
    the dataset file is needed (downloaded once if catalogued) unless hospital folders are given."""
    COORDINATOR = "coordinator"
    """A run submitted to a coordinator: hospitals hold the data; the file is used only if
    it happens to be here, machine-local files are refused."""


@dataclass(frozen=True, slots=True)
class ResolvedRun:
    """A run ready to start.

    Attributes:
        spec: what every participant receives (config, schema, run directory, resume).
        dataset: the dataset file, when this machine has it.
        resumes_after: for a resumed run, the last round its checkpoint completed.
    """

    spec: RunSpec
    dataset: OpenedDataset | None = None
    resumes_after: int | None = None

    @property
    def cfg(self) -> RunConfig:
        """The user's settings."""
        return self.spec.config

    @property
    def schema(self) -> DatasetSchema:
        """The dataset's task, classes and channels."""
        return self.spec.schema


def resolve_run(cfg: RunConfig, setting: Setting, *, download: bool = False, trains: bool = True) -> ResolvedRun:
    """Check ``cfg``, find its dataset and schema.

    Args:
        cfg: the user's config.
        setting: where the run is set up.
        download: simulation only: fetch a missing catalogued MedMNIST file.
        trains: the run trains ``model.name`` (checked against the task); the data
            commands (describe, export) train nothing and skip that check.

    Raises:
        ConfigError: unreachable privacy settings, an unknown dataset, no schema to be found,
            or (coordinator) a machine-local ``model.init-weights``.
        ModelError: ``model.name`` cannot learn the data set's task (a classifier for masks).
        DataError: a missing hospital folder or data folder, an invalid dataset file, a
            ``class+mask`` run on a data set without lesion masks.
        DownloadError: the file is missing and cannot be downloaded.
    """
    ClientDpPlan.from_config(cfg)  # an unreachable target epsilon or budget fails here, not in the ServerApp
    cfg = _normalised(cfg, setting)
    dataset = _find_dataset(cfg, setting, download=download)
    schema = resolve_schema(cfg, dataset)
    if trains:
        check_network_fits(cfg.model.name, schema, cfg.data.image_size)
        check_operating_point(cfg.evaluation, schema.task)
        check_tracking_installed(cfg.tracking)
    if trains and cfg.privacy.dpsgd:
        check_dpsgd_network(cfg.model.name)
    if trains and dataset is not None and "train" in dataset.splits:
        require_lesion_masks(cfg, dataset.splits["train"], dataset.path)
    if dataset is not None and setting is Setting.SIMULATION:  # every simulated process finds the file there
        cfg = cfg.replace(data=dataclasses.replace(cfg.data, data_dir=dataset.path.parent))
    return ResolvedRun(RunSpec(cfg, schema), dataset)


def resolve_schema(cfg: RunConfig, dataset: OpenedDataset | None) -> DatasetSchema:
    """The dataset's schema: the file's (checked against the catalog), else the catalog's, else the declared one.

    A declaration must agree with the file or catalog in task, class count and channels;
    its class names are kept (they name a custom dataset's indices).

    Raises:
        ConfigError: if nothing says the schema, or the declaration disagrees with the data.
        DataError: if the file disagrees with the catalog.
    """
    declared = cfg.data.declared_schema()
    found: DatasetSchema | None = None
    if dataset is not None:
        found = dataset.schema
    elif (entry := lookup(cfg.data.dataset)) is not None:
        found = DatasetSchema(entry.task, entry.classes, entry.channels, 2, entry.modality)
    if found is None and declared is None:
        raise ConfigError(
            f"dataset {cfg.data.dataset!r} is neither on this machine nor a MedMNIST dataset: declare "
            "data.classes, data.task and data.channels in the run config"
        )
    if declared is None or found is None:
        return declared or found  # type: ignore[return-value]
    declared = dataclasses.replace(
        declared, spatial_dims=found.spatial_dims, modality=found.modality or declared.modality
    )
    if (declared.task, declared.num_outputs, declared.channels) != (found.task, found.num_outputs, found.channels):
        raise ConfigError(
            f"the declared data.task/classes/channels ({declared.task.value}, {declared.num_outputs} classes, "
            f"{declared.channels} channel(s)) do not match {cfg.data.dataset} ({found.task.value}, "
            f"{found.num_outputs} classes, {found.channels} channel(s))"
        )
    return declared


def create_run_dir(resolved: ResolvedRun, mode: str) -> ResolvedRun:
    """Make a new run directory for ``resolved`` and describe it (``config.toml``, ``run.json``).

    Returns:
        The run with ``spec.run_dir`` set.

    Raises:
        OSError: if the output folder cannot be written.
    """
    cfg = resolved.cfg
    run_dir = new_run_dir(cfg.run.output_dir, cfg.run.name or cfg.data.dataset)
    spec = dataclasses.replace(resolved.spec, run_dir=run_dir)
    describe_run(run_dir, spec, mode)
    return dataclasses.replace(resolved, spec=spec)


def resume_run(run_dir: Path, setting: Setting) -> ResolvedRun:
    """Set up the continuation of an interrupted run from its checkpoint.

    The run keeps its directory, its ``config.toml`` and its schema (``run.json``); nothing
    in the directory is changed here.

    Raises:
        ConfigError: if ``run_dir`` is not a federated run directory, has no checkpoint,
            or already completed all its rounds.
        RunBusyError: if a process still runs it.
        DataError: simulation: if its dataset file is no longer where it was.
    """
    run_dir = Path(run_dir).expanduser().resolve()
    cfg = read_run_config(run_dir)
    info = read_run_info(run_dir)
    if info.mode != "federated":
        raise ConfigError(f"{run_dir.name} is a {info.mode} run; only federated runs resume")
    if not (run_dir / CHECKPOINT_FILE).is_file():
        raise ConfigError(f"{run_dir.name} has no {CHECKPOINT_FILE}: it never completed a round to resume from")
    check_not_running(run_dir)
    done = load_checkpoint(run_dir).server_round
    if read_status(run_dir).get("state") == "completed" and done >= cfg.federation.rounds:
        raise ConfigError(f"{run_dir.name} already completed all {cfg.federation.rounds} rounds; nothing to resume")
    dataset = _find_dataset(cfg, setting, download=False) if setting is Setting.SIMULATION else None
    log.info("resuming %s after round %d of %d", run_dir.name, done, cfg.federation.rounds)
    return ResolvedRun(RunSpec(cfg, info.schema, run_dir, resume=True), dataset, done)


def find_dataset_file(cfg: RunConfig, splits: Sequence[str] = SPLITS) -> OpenedDataset | None:
    """The run's dataset file if this machine has it (never downloads), else ``None``.

    Args:
        cfg: the run's config (``data.dataset``, ``data.image-size``, ``data.data-dir``).
        splits: which splits to read and validate.

    Raises:
        DataError: if the file exists but is invalid.
    """
    try:
        path = locate_dataset(cfg.data.dataset, cfg.data.image_size, cfg.data.data_dir, download=False)
    except FedwardError as err:
        log.info("the dataset file is not on this machine (%s)", err)
        return None
    return open_dataset(path, cfg.data, splits, cache_root=cache_root_for(cfg))


def _normalised(cfg: RunConfig, setting: Setting) -> RunConfig:
    """Absolute paths (processes started elsewhere read them); a coordinator's run without local files."""
    data, model = cfg.data, cfg.model
    if setting is Setting.COORDINATOR:
        if model.init_weights is not None:
            raise ConfigError(
                "model.init-weights names a file on this machine; put it on the coordinator and "
                "start the run there (fedward run start on the coordinator)"
            )
        return cfg.replace(data=dataclasses.replace(data, hospital_dirs=()))  # each agent's --data instead
    folders = tuple(Path(d).expanduser().resolve() for d in data.hospital_dirs)
    for folder in folders:
        if not folder.is_dir():
            raise DataError(f"hospital folder {folder} does not exist")
    weights = Path(model.init_weights).resolve() if model.init_weights is not None else None
    run = dataclasses.replace(cfg.run, output_dir=Path(cfg.run.output_dir).resolve())
    tracking = dataclasses.replace(cfg.tracking, mlflow_uri=absolute_mlflow_uri(cfg.tracking.mlflow_uri))
    return cfg.replace(
        data=dataclasses.replace(data, hospital_dirs=folders),
        model=dataclasses.replace(model, init_weights=weights),
        run=run,
        tracking=tracking,
    )


def _find_dataset(cfg: RunConfig, setting: Setting, *, download: bool) -> OpenedDataset | None:
    """The dataset file: required in a simulation without hospital folders, optional otherwise.

    A coordinator reads it only when nothing else says the schema (the file is the hospitals'
    business; the catalog or the config's declaration suffices).
    """
    if setting is Setting.SIMULATION and not cfg.data.hospital_dirs:
        path = locate_dataset(cfg.data.dataset, cfg.data.image_size, cfg.data.data_dir, download=download)
        return open_dataset(path, cfg.data, cache_root=cache_root_for(cfg))
    if setting is Setting.COORDINATOR and (lookup(cfg.data.dataset) or cfg.data.declared_schema()):
        return None
    return find_dataset_file(cfg)
