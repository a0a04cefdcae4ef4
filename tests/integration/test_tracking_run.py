"""A real 3-hospital simulation tracked in a real ``mlflow server`` and TensorBoard, then with the server killed.

The first run sends everything to a tracking server started here (SQLite backend, on
127.0.0.1): MLflow must hold every round's metrics, each hospital's, the config and the
model card exactly as the run directory records them, and the TensorBoard event files the
same values. The second run, with the same seed, loses its tracking server after round 1:
it must complete with the same metrics and a complete run directory, say what was not
delivered, and ``fedward run export-tracking`` must then fill a fresh server in.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from fixtures.cli import ENV, fedward, fedward_cli
from fixtures.deadlines import deadline
from fixtures.deployment import real_subset
from fixtures.tracking import MlflowServer, check_mlflow, expected_metrics, rows, start_mlflow_server

pytestmark = pytest.mark.slow

SUBSET = {"train": 480, "val": 120, "test": 80}
SETTINGS = ["--hospitals", "3", "--partition", "iid", "--seed", "0", "--rounds", "3", "--local-epochs", "1"]
VOLATILE = ("time", "elapsed-s", "train-seconds", "eval-seconds")


def simulate(data_dir: Path, out: Path, uri: str) -> list[str]:
    return [
        fedward_cli(), "simulate", "--data-dir", str(data_dir), *SETTINGS, "--output-dir", str(out),
        "--set", f"tracking.mlflow-uri={uri}", "--set", "tracking.tensorboard=true",
    ]  # fmt: skip


def only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def stable(run_dir: Path) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    server, hospitals = rows(run_dir)
    drop = (*VOLATILE, "node-id")
    return [{k: v for k, v in r.items() if k not in drop} for r in server], [
        {k: v for k, v in r.items() if k not in drop} for r in hospitals
    ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> Path:
    return real_subset(real_data_dir / "pneumoniamnist.npz", tmp_path_factory.mktemp("data"), SUBSET)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, str]:
    """A run tracked by a live server (kept running for the checks)."""
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    out = tmp_path_factory.mktemp("tracked")
    try:
        result = subprocess.run(
            simulate(data_dir, out, server.uri), capture_output=True, text=True, env=ENV, timeout=deadline(900)
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        run_dir = only_run(out)
        check_mlflow(server.uri, run_dir)  # while the server runs
    finally:
        server.stop()
    return run_dir, server.uri


def test_mlflow_holds_every_round_and_hospital_the_params_and_the_card(tracked_run: tuple[Path, str]) -> None:
    run_dir, _ = tracked_run
    server, hospitals = rows(run_dir)
    assert [int(r["round"]) for r in server] == [0, 1, 2, 3]
    assert {r["hospital"] for r in hospitals} == {"hospital-0", "hospital-1", "hospital-2"}
    record = json.loads((run_dir / "tracking.json").read_text())["mlflow"]
    assert record["undelivered"] == [] and record["dropped"] == []
    assert "tracking" not in json.loads((run_dir / "status.json").read_text())


def test_tensorboard_gives_the_same_values(tracked_run: tuple[Path, str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = tracked_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    found = {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}
    expected = expected_metrics(*rows(run_dir))
    assert set(found) == set(expected)
    assert all(found[k] == pytest.approx(v, rel=1e-6, abs=1e-9) for k, v in expected.items())
    server, _ = rows(run_dir)
    scored = [r for r in server if r.get("val-auc") is not None]
    assert [int(r["round"]) for r in scored] == [1, 2, 3]
    assert [found[("val-auc", int(r["round"]))] for r in scored] == pytest.approx([r["val-auc"] for r in scored])


def run_losing_its_server(data_dir: Path, out: Path, server: MlflowServer) -> Path:
    """Simulate; kill the tracking server once round 1 is in metrics/server.jsonl; let the run finish."""
    process = subprocess.Popen(
        simulate(data_dir, out, server.uri), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    limit = time.monotonic() + deadline(900)
    try:
        while time.monotonic() < limit and process.poll() is None:
            dirs = [p for p in out.iterdir() if p.is_dir()] if out.is_dir() else []
            table = dirs[0] / "metrics" / "server.jsonl" if dirs else None
            if table is not None and table.is_file() and len(table.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        server.stop()
        output, _ = process.communicate(timeout=max(1.0, limit - time.monotonic()))
    finally:
        server.stop()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    return only_run(out)


def test_a_killed_tracking_server_costs_nothing_and_export_fills_in(
    tracked_run: tuple[Path, str], data_dir: Path, tmp_path: Path
) -> None:
    first, _ = tracked_run
    run_dir = run_losing_its_server(data_dir, tmp_path / "out", start_mlflow_server(tmp_path / "doomed"))
    assert stable(run_dir) == stable(first), "the same metrics as the run whose tracking never failed"
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed"
    for name in ("model_card.json", "model_card.md", "models/best.safetensors", "plots/learning_curves.png"):
        assert (run_dir / name).is_file(), name
    undelivered = json.loads((run_dir / "tracking.json").read_text())["mlflow"]["undelivered"]
    assert "round 3" in undelivered and "artifact model_card.json" in undelivered
    assert "round 3" in status["tracking"]
    log = (run_dir / "logs" / "server.log").read_text()
    assert "is unreachable" in log and "not delivered to MLflow" in log and "round 3" in log
    fresh = start_mlflow_server(tmp_path / "fresh")
    try:
        result = fedward("run", "export-tracking", str(run_dir), "--mlflow-uri", fresh.uri)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "4 rounds" in result.stdout
        check_mlflow(fresh.uri, run_dir)
    finally:
        fresh.stop()
