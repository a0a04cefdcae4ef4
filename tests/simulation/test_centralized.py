"""The centralized baseline writes the same run directory as a federation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.synthetic import write_npz

from fedward.common.choices import Task
from fedward.common.config import RunConfig
from fedward.simulation.centralized import run_centralized
from fedward.simulation.driver import prepare


def test_centralized_run_directory(tmp_path: Path) -> None:
    write_npz(tmp_path / "data" / "tinymnist.npz", sizes=(160, 20, 60))
    cfg = RunConfig.from_mapping(
        {
            "data": {"dataset": "tinymnist", "data-dir": str(tmp_path / "data")},
            "federation": {"hospitals": 2, "rounds": 2},
            "train": {"local-epochs": 2, "batch-size": 16},
            "run": {"output-dir": str(tmp_path / "runs")},
        }
    )
    prepared = prepare(cfg, mode="centralized")
    seen: list[int] = []
    recorder = run_centralized(prepared, lambda status: seen.append(status["round"]))
    assert seen == [0, 1, 2]
    card = json.loads((prepared.run_dir / "model_card.json").read_text())
    assert card["run"]["mode"] == "centralized"
    assert card["hospitals"][0]["train_images"] == sum(len(h.train) for h in prepared.plan.hospitals)
    assert card["hospitals"][0]["device"] in ("cpu (float32)", "cpu (bfloat16)")  # where and in what precision
    rows = recorder.server_rows
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[-1]["test-auc"] > 0.9
    assert (prepared.run_dir / "models" / "best.safetensors").is_file()


def write_multilabel(path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 160), ("val", 20), ("test", 60)):
        labels = rng.integers(0, 2, size=(n, 3)).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28, 3), dtype=np.uint8)
        for k in range(3):  # label k brightens channel k
            images[labels[:, k] == 1, :, :, k] += 180
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


@pytest.mark.parametrize("kind", ["multiclass-rgb", "multilabel-rgb"])
def test_other_tasks_train_end_to_end(tmp_path: Path, kind: str) -> None:
    if kind == "multiclass-rgb":
        write_npz(tmp_path / "data" / "tinymnist.npz", sizes=(160, 20, 60), classes=4, rgb=True)
    else:
        write_multilabel(tmp_path / "data" / "tinymnist.npz")
    cfg = RunConfig.from_mapping(
        {
            "data": {"dataset": "tinymnist", "data-dir": str(tmp_path / "data")},
            "federation": {"hospitals": 2, "rounds": 2, "partition": "iid"},
            "train": {"local-epochs": 3, "batch-size": 16},
            "run": {"output-dir": str(tmp_path / "runs")},
        }
    )
    prepared = prepare(cfg, mode="centralized")
    recorder = run_centralized(prepared)
    rows = recorder.server_rows
    expected = Task.MULTICLASS if kind == "multiclass-rgb" else Task.MULTILABEL
    assert prepared.spec.schema.task is expected and prepared.spec.schema.channels == 3
    assert rows[-1]["test-auc"] > 0.8
    assert {"test-accuracy", "test-sensitivity", "test-specificity", "test-f1", "test-loss"} <= set(rows[-1])
