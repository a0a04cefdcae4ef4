"""Run setup: the one path from a config, or a run directory to resume, to a run ready to start."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.synthetic import write_npz

from fedward.common.choices import Task
from fedward.common.config import RunConfig
from fedward.common.errors import ConfigError, DataError
from fedward.common.rundir.checkpoint import Checkpoint, save_checkpoint
from fedward.common.rundir.info import read_run_info
from fedward.common.rundir.lock import RunBusyError, RunLock
from fedward.common.runsetup import Setting, create_run_dir, resolve_run, resume_run
from fedward.common.schema import DatasetSchema


def config(tmp_path: Path, **data: object) -> RunConfig:
    write_npz(tmp_path / "data" / "tinymnist.npz", sizes=(60, 10, 10))
    return RunConfig.from_mapping(
        {
            "data": {"dataset": "tinymnist", "data-dir": str(tmp_path / "data"), **data},
            "federation": {"hospitals": 2, "rounds": 3},
            "run": {"output-dir": str(tmp_path / "runs")},
        }
    )


def checkpointed_run(tmp_path: Path, done: int, state: str) -> Path:
    resolved = create_run_dir(resolve_run(config(tmp_path), Setting.SIMULATION), "federated")
    run_dir = resolved.spec.run_dir
    assert run_dir is not None
    save_checkpoint(run_dir, Checkpoint(done, {"w": np.zeros(2, np.float32)}))
    (run_dir / "status.json").write_text(json.dumps({"state": state, "mode": "federated"}))
    return run_dir


def test_a_new_run_finds_its_file_and_schema_and_describes_its_directory(tmp_path: Path) -> None:
    resolved = resolve_run(config(tmp_path), Setting.SIMULATION)
    assert resolved.dataset is not None and set(resolved.dataset.splits) == {"train", "val", "test"}
    assert resolved.schema == DatasetSchema(Task.BINARY, ("0", "1"), 1)
    assert resolved.spec.run_dir is None and resolved.resumes_after is None
    made = create_run_dir(resolved, "centralized")
    assert made.spec.run_dir is not None and made.spec.run_dir.parent == (tmp_path / "runs").resolve()
    assert RunConfig.from_toml(made.spec.run_dir / "config.toml") == made.cfg
    info = read_run_info(made.spec.run_dir)
    assert (info.mode, info.schema, info.flower_run_id) == ("centralized", resolved.schema, None)


def test_a_declared_schema_names_the_classes_and_must_agree(tmp_path: Path) -> None:
    named = config(tmp_path, task="binary", classes=["normal", "pneumonia"], channels=1)
    assert resolve_run(named, Setting.SIMULATION).schema.classes == ("normal", "pneumonia")
    wrong = config(tmp_path, task="binary", classes=["normal", "pneumonia"], channels=3)
    with pytest.raises(ConfigError, match="do not match tinymnist"):
        resolve_run(wrong, Setting.SIMULATION)


def test_missing_hospital_folders_and_unreachable_privacy_fail_before_anything_is_written(tmp_path: Path) -> None:
    folders = config(tmp_path).to_mapping()
    folders["data"]["hospital-dirs"] = [str(tmp_path / "a"), str(tmp_path / "b")]
    with pytest.raises(DataError, match=r"hospital folder .* does not exist"):
        resolve_run(RunConfig.from_mapping(folders), Setting.SIMULATION)
    private = config(tmp_path).to_mapping()
    private["privacy"] = {"client-dp": "server-fixed", "target-epsilon": 1e-9, "delta": 1e-5}
    with pytest.raises(ConfigError):
        resolve_run(RunConfig.from_mapping(private), Setting.SIMULATION)
    assert not (tmp_path / "runs").exists()


def test_resume_continues_with_the_runs_own_config_and_schema(tmp_path: Path) -> None:
    run_dir = checkpointed_run(tmp_path, done=1, state="failed")
    resolved = resume_run(run_dir, Setting.SIMULATION)
    assert resolved.spec.resume and resolved.spec.run_dir == run_dir.resolve()
    assert resolved.resumes_after == 1
    assert resolved.schema == read_run_info(run_dir).schema


def test_resume_refuses_what_cannot_continue(tmp_path: Path) -> None:
    done = checkpointed_run(tmp_path / "done", done=3, state="completed")
    with pytest.raises(ConfigError, match="already completed all 3 rounds"):
        resume_run(done, Setting.SIMULATION)
    busy = checkpointed_run(tmp_path / "busy", done=1, state="running")
    with RunLock(busy), pytest.raises(RunBusyError):
        resume_run(busy, Setting.COORDINATOR)
    fresh = create_run_dir(resolve_run(config(tmp_path / "fresh"), Setting.SIMULATION), "federated").spec.run_dir
    assert fresh is not None
    with pytest.raises(ConfigError, match="never completed a round"):
        resume_run(fresh, Setting.SIMULATION)
    (fresh / "run.json").unlink()
    with pytest.raises(ConfigError, match=r"run\.json is missing"):
        resume_run(fresh, Setting.SIMULATION)
    with pytest.raises(ConfigError, match="not a run directory"):
        resume_run(tmp_path / "nothing", Setting.SIMULATION)
