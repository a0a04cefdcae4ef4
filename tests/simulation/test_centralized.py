"""The centralized baseline writes the same run directory as a federation."""

from __future__ import annotations

import json
from pathlib import Path

from fixtures.synthetic import write_npz

from fedward.common.config import RunConfig
from fedward.simulation.centralized import run_centralized
from fedward.simulation.driver import prepare


def test_centralized_run_directory(tmp_path: Path) -> None:
    write_npz(tmp_path / "data" / "tinymnist.npz", sizes=(160, 20, 60))
    cfg = RunConfig.from_mapping({
        "data": {"dataset": "tinymnist", "data-dir": str(tmp_path / "data")},
        "federation": {"hospitals": 2, "rounds": 2},
        "train": {"local-epochs": 2},
        "run": {"output-dir": str(tmp_path / "runs")},
    })
    prepared = prepare(cfg)
    seen: list[int] = []
    recorder = run_centralized(prepared, lambda status: seen.append(status["round"]))
    assert seen == [0, 1, 2]
    card = json.loads((prepared.run_dir / "model_card.json").read_text())
    assert card["run"]["mode"] == "centralized"
    assert card["hospitals"][0]["train_images"] == sum(len(h.train) for h in prepared.plan.hospitals)
    rows = recorder.server_rows
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[-1]["test-auc"] > rows[0]["test-auc"]
    assert (prepared.run_dir / "models" / "best.safetensors").is_file()
