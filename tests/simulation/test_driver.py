"""Preparing a simulation: data resolved, hospitals planned, run directory and app bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.synthetic import write_npz

from fedward.common.choices import Task
from fedward.common.config import RunConfig, RunSpec
from fedward.common.data.plan import PartitionPlan
from fedward.common.errors import ConfigError, DataError
from fedward.common.flower.bundle import CLIENT_APP, SERVER_APP, read_bundle_config, write_bundle
from fedward.common.rundir.info import read_run_info
from fedward.common.schema import DatasetSchema
from fedward.simulation.driver import prepare, resolve_dataset


def config(tmp_path: Path, **federation: object) -> RunConfig:
    write_npz(tmp_path / "data" / "tinymnist.npz", sizes=(200, 40, 40))
    return RunConfig.from_mapping(
        {
            "data": {"dataset": "tinymnist", "data-dir": str(tmp_path / "data")},
            "federation": {"hospitals": 3, **federation},
            "run": {"output-dir": str(tmp_path / "runs")},
        }
    )


def test_resolve_finds_the_schema(tmp_path: Path) -> None:
    resolved, found = resolve_dataset(config(tmp_path))
    assert resolved.schema == DatasetSchema(Task.BINARY, ("0", "1"), 1)
    assert resolved.cfg.data.declared_schema() is None  # found, not written into the user's config
    assert resolved.cfg.data.data_dir is not None and resolved.cfg.data.data_dir.is_absolute()
    assert found.path == (tmp_path / "data" / "tinymnist.npz").resolve()


def test_prepare_writes_the_run_directory(tmp_path: Path) -> None:
    prepared = prepare(config(tmp_path))
    run_dir = prepared.run_dir
    assert run_dir.parent == (tmp_path / "runs").resolve()
    assert RunConfig.from_toml(run_dir / "config.toml") == prepared.cfg
    assert prepared.spec.run_dir == run_dir and not prepared.spec.resume
    info = read_run_info(run_dir)
    assert (info.mode, info.schema, info.flower_run_id) == ("federated", prepared.spec.schema, None)
    plan = PartitionPlan.read(run_dir / "partitions.json")
    assert [h.name for h in plan.hospitals] == ["hospital-0", "hospital-1", "hospital-2"]
    assert sum(len(h.train) + len(h.val) for h in plan.hospitals) == 200


def test_bundle_carries_config_not_code(tmp_path: Path) -> None:
    prepared = prepare(config(tmp_path))
    app_dir = write_bundle(tmp_path / "app", prepared.spec)
    assert [p.name for p in app_dir.iterdir()] == ["pyproject.toml"]
    text = (app_dir / "pyproject.toml").read_text()
    assert SERVER_APP in text and CLIENT_APP in text
    assert RunSpec.from_flower(read_bundle_config(app_dir)) == prepared.spec


def test_impossible_partitions_fail_before_a_run_directory_exists(tmp_path: Path) -> None:
    cfg = config(tmp_path, hospitals=500)
    with pytest.raises(ConfigError):
        prepare(cfg)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    path = tmp_path / "data" / "tinymnist.npz"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="truncated"):
        prepare(cfg)
