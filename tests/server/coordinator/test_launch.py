"""Submitting deployment runs: schema resolution, the shipped config, the bundle, run folders."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from fixtures.synthetic import write_npz

from fedward.common import runsetup
from fedward.common.choices import Modality, Task
from fedward.common.config import RunConfig, RunSpec
from fedward.common.errors import ConfigError
from fedward.common.flower.bundle import read_bundle_config
from fedward.common.runsetup import ResolvedRun, Setting, resolve_run
from fedward.common.schema import DatasetSchema
from fedward.server.coordinator.launch import find_run_dir, run_rows, start_run


@pytest.fixture(autouse=True)
def no_shared_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty default data folder, so nothing is found (or downloaded) by accident."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("FEDWARD_DATA_DIR", str(empty))
    return empty


class FakeFlwr:
    """Records what ``flwr run`` would have shipped (the bundle folder is temporary)."""

    def __init__(self, run_id: int = 17) -> None:
        self.run_id = run_id
        self.app_dirs: list[Path] = []
        self.pyproject: dict[str, Any] = {}
        self.config: dict[str, Any] = {}
        self.files: list[str] = []

    def submit(self, app_dir: Path, **kwargs: Any) -> int:
        self.app_dirs.append(Path(app_dir))
        self.files = sorted(p.name for p in Path(app_dir).iterdir())
        self.pyproject = tomllib.loads((Path(app_dir) / "pyproject.toml").read_text(encoding="utf-8"))
        self.config = read_bundle_config(app_dir)
        return self.run_id

    def runs(self) -> list[dict[str, Any]]:
        return [{"run-id": "9", "status": "running"}, {"run-id": "3", "status": "finished:completed"}]


# ---------------------------------------------------------------------- schema
def coordinator_run(cfg: RunConfig) -> ResolvedRun:
    return resolve_run(cfg, Setting.COORDINATOR)


def test_default_dataset_resolves_from_the_catalog_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_file(*args: object, **kwargs: object) -> Path:
        raise AssertionError("the catalog must be enough")

    monkeypatch.setattr(runsetup, "locate_dataset", no_file)
    cfg = RunConfig()
    assert cfg.data.declared_schema() is None
    resolved = coordinator_run(cfg)
    assert resolved.schema == DatasetSchema(Task.BINARY, ("normal", "pneumonia"), 1, 2, Modality.DX)
    assert resolved.cfg.data.dataset == "pneumoniamnist"
    assert resolved.cfg.train == cfg.train
    assert resolved.cfg.data.declared_schema() is None  # found values never go back into the config


def test_rgb_catalog_dataset() -> None:
    schema = coordinator_run(RunConfig.from_mapping({"data": {"dataset": "DermaMNIST"}})).schema
    assert schema.task is Task.MULTICLASS
    assert schema.channels == 3
    assert len(schema.classes) == 7


def test_schema_given_in_the_config_is_kept() -> None:
    cfg = RunConfig.from_mapping(
        {"data": {"dataset": "private-xrays", "task": "multiclass", "classes": ["a", "b", "c"], "channels": 1}}
    )
    assert coordinator_run(cfg).schema == DatasetSchema(Task.MULTICLASS, ("a", "b", "c"), 1)


def test_unknown_dataset_without_a_file(tmp_path: Path) -> None:
    cfg = RunConfig.from_mapping({"data": {"dataset": "foo"}})
    with pytest.raises(ConfigError, match="'foo' is neither on this machine nor a MedMNIST dataset") as info:
        coordinator_run(cfg)
    assert "data.classes" in str(info.value)
    cfg = RunConfig.from_mapping({"data": {"dataset": "foo", "data-dir": str(tmp_path / "missing")}})
    with pytest.raises(ConfigError, match="nor a MedMNIST dataset"):
        coordinator_run(cfg)


def test_unknown_dataset_with_its_file_here(tmp_path: Path) -> None:
    write_npz(tmp_path / "data" / "tinymnist.npz", sizes=(10, 4, 6))
    cfg = RunConfig.from_mapping({"data": {"dataset": "tinymnist", "data-dir": str(tmp_path / "data")}})
    assert coordinator_run(cfg).schema == DatasetSchema(Task.BINARY, ("0", "1"), 1)


def test_a_declaration_that_contradicts_the_data_is_refused() -> None:
    cfg = RunConfig.from_mapping({"data": {"task": "multiclass", "classes": ["a", "b", "c"], "channels": 1}})
    with pytest.raises(ConfigError, match="do not match pneumoniamnist"):
        coordinator_run(cfg)


# ---------------------------------------------------------------------- what a coordinator run ships
def test_a_coordinator_run_drops_hospital_dirs(tmp_path: Path) -> None:
    cfg = RunConfig.from_mapping(
        {
            "data": {"hospital-dirs": [str(tmp_path / "a"), str(tmp_path / "b")]},
            "federation": {"hospitals": 2, "rounds": 3},
        }
    )
    assert len(cfg.data.hospital_dirs) == 2
    shipped = coordinator_run(cfg)
    assert shipped.cfg.data.hospital_dirs == ()
    assert shipped.schema.num_outputs == 2
    assert shipped.cfg.federation == cfg.federation
    assert shipped.cfg.model == cfg.model


def test_a_coordinator_run_refuses_init_weights(tmp_path: Path) -> None:
    cfg = RunConfig.from_mapping({"model": {"init-weights": str(tmp_path / "w.safetensors")}})
    with pytest.raises(ConfigError, match="init-weights"):
        coordinator_run(cfg)


def test_a_coordinator_run_propagates_schema_errors() -> None:
    with pytest.raises(ConfigError, match="nor a MedMNIST dataset"):
        coordinator_run(RunConfig.from_mapping({"data": {"dataset": "foo"}}))


# ---------------------------------------------------------------------- start_run
def test_start_run_submits_a_config_only_bundle(tmp_path: Path) -> None:
    flwr = FakeFlwr(run_id=42)
    cfg = RunConfig.from_mapping(
        {
            "data": {"hospital-dirs": [str(tmp_path / "a"), str(tmp_path / "b")]},
            "federation": {"hospitals": 2, "rounds": 3},
        }
    )
    assert start_run(flwr, cfg) == 42  # type: ignore[arg-type]
    assert len(flwr.app_dirs) == 1
    assert flwr.files == ["pyproject.toml"]
    app = flwr.pyproject["tool"]["flwr"]["app"]
    assert app["components"] == {
        "serverapp": "fedward.server.app.serverapp:app",
        "clientapp": "fedward.client.hospital.clientapp:app",
    }
    assert flwr.pyproject["project"]["dependencies"] == []
    assert flwr.config["federation.rounds"] == 3
    assert flwr.config["data.dataset"] == "pneumoniamnist"
    assert flwr.config["resolved.task"] == "binary"
    assert flwr.config["resolved.channels"] == 1
    assert flwr.config["data.hospital-dirs"] == "[]"
    assert str(tmp_path) not in str(flwr.config)
    assert RunSpec.from_flower(flwr.config).schema.classes == ("normal", "pneumonia")
    assert not flwr.app_dirs[0].exists()  # the temporary bundle is removed


def test_start_run_does_not_submit_a_bad_config(tmp_path: Path) -> None:
    flwr = FakeFlwr()
    with pytest.raises(ConfigError):
        start_run(flwr, RunConfig.from_mapping({"data": {"dataset": "foo"}}))  # type: ignore[arg-type]
    assert flwr.app_dirs == []


# ---------------------------------------------------------------------- run folders
def test_find_run_dir(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    (root / "20260101-000000-x-42").mkdir(parents=True)
    (root / "20260101-000000-x-142").mkdir()
    (root / "20260101-000000-x-4").mkdir()
    (root / "notes-43").write_text("a file, not a run")
    assert find_run_dir(root, 42) == root / "20260101-000000-x-42"
    assert find_run_dir(root, 142) == root / "20260101-000000-x-142"
    assert find_run_dir(root, 2) is None
    assert find_run_dir(root, 43) is None
    assert find_run_dir(tmp_path / "missing", 42) is None


def test_find_run_dir_prefers_the_latest(tmp_path: Path) -> None:
    (tmp_path / "20260101-000000-x-7").mkdir()
    (tmp_path / "20260301-120000-x-7").mkdir()
    assert find_run_dir(tmp_path, 7) == tmp_path / "20260301-120000-x-7"


def test_run_rows_add_run_dirs_and_sort(tmp_path: Path) -> None:
    (tmp_path / "20260101-000000-x-9").mkdir()
    rows = run_rows(FakeFlwr(), tmp_path)  # type: ignore[arg-type]
    assert [r["run-id"] for r in rows] == ["3", "9"]
    assert rows[0]["run-dir"] == ""
    assert rows[1]["run-dir"] == str(tmp_path / "20260101-000000-x-9")
    assert rows[1]["status"] == "running"
    assert all(r["run-dir"] == "" for r in run_rows(FakeFlwr(), None))  # type: ignore[arg-type]
