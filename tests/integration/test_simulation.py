"""A real simulated federation on the real chest X-rays, through the installed CLI.

Flower's simulation runtime (a SuperLink in simulation mode, Ray) runs the same
ServerApp/ClientApp as deployment: 3 hospitals x 2 rounds, twice with the same seed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fixtures.privacy import HOSPITAL_METRIC_KEYS, RECORD_COLUMNS

pytestmark = pytest.mark.slow

VOLATILE = ("time", "elapsed-s", "train-seconds", "eval-seconds")


def fedward_cli() -> str:
    found = shutil.which("fedward")
    if found is None:
        pytest.skip("the fedward console script is not installed")
    return found


def run_simulation(out: Path, data_dir: Path) -> Path:
    result = subprocess.run(
        [
            fedward_cli(),
            "simulate",
            "--data-dir",
            str(data_dir),
            "--hospitals",
            "3",
            "--rounds",
            "2",
            "--partition",
            "dirichlet",
            "--alpha",
            "1.0",
            "--seed",
            "0",
            "--output-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = list(out.iterdir())
    return run_dir


def server_rows(run_dir: Path) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in (run_dir / "metrics" / "server.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]


def flower_processes() -> set[str]:
    result = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return {
        line.split()[0]
        for line in result.stdout.splitlines()
        if "flower-superlink" in line or "flwr-simulation" in line
    }


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> tuple[Path, Path]:
    before = flower_processes()
    first = run_simulation(tmp_path_factory.mktemp("first"), real_data_dir)
    second = run_simulation(tmp_path_factory.mktemp("second"), real_data_dir)
    assert flower_processes() <= before, "the simulation SuperLink and its workers are gone"
    return first, second


def test_run_directory_is_complete(two_runs: tuple[Path, Path]) -> None:
    run_dir = two_runs[0]
    for name in (
        "config.toml",
        "partitions.json",
        "status.json",
        "model_card.json",
        "model_card.md",
        "metrics/server.jsonl",
        "metrics/server.csv",
        "metrics/hospitals.jsonl",
        "metrics/hospitals.csv",
        "models/round-000.safetensors",
        "models/round-001.safetensors",
        "models/round-002.safetensors",
        "models/best.safetensors",
        "plots/learning_curves.png",
        "logs/flower.log",
    ):
        assert (run_dir / name).is_file(), name
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed"
    card = json.loads((run_dir / "model_card.json").read_text())
    assert [h["name"] for h in card["hospitals"]] == ["hospital-0", "hospital-1", "hospital-2"]
    assert card["dataset"]["name"] == "pneumoniamnist" and card["run"]["status"] == "completed"
    hospitals = [json.loads(line) for line in (run_dir / "metrics" / "hospitals.jsonl").read_text().splitlines()]
    assert {(h["round"], h["phase"]) for h in hospitals} == {(r, p) for r in (1, 2) for p in ("train", "evaluate")}
    assert len(hospitals) == 12


def test_only_counts_losses_and_metrics_reached_the_server(two_runs: tuple[Path, Path]) -> None:
    run_dir = two_runs[0]
    rows = [json.loads(line) for line in (run_dir / "metrics" / "hospitals.jsonl").read_text().splitlines()]
    assert set().union(*rows) <= HOSPITAL_METRIC_KEYS | RECORD_COLUMNS
    logs = (run_dir / "logs" / "server.log").read_text() + (run_dir / "logs" / "flower.log").read_text()
    assert "tensor(" not in logs and "array(" not in logs


def test_the_global_model_beats_round_zero(two_runs: tuple[Path, Path]) -> None:
    rows = server_rows(two_runs[0])
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[2]["test-auc"] > rows[0]["test-auc"] + 0.2  # type: ignore[operator]
    assert rows[2]["val-auc"] > 0.85  # type: ignore[operator]
    assert rows[2]["hospitals-trained"] == 3 and rows[2]["hospitals-rejected"] == 0


def test_same_seed_same_per_round_metrics(two_runs: tuple[Path, Path]) -> None:
    assert server_rows(two_runs[0]) == server_rows(two_runs[1])
