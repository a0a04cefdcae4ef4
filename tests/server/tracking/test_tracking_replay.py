"""Tracking against a real ``mlflow server`` (killed mid-run too) and the replay of run directories into MLflow."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from fixtures.tracking import MlflowServer, check_mlflow, mlflow_server, record_run, start_mlflow_server, tracked  # noqa: F401

from fedward.common.config import RunSpec
from fedward.common.errors import ConfigError
from fedward.server.tracking import mlflow_sink
from fedward.server.tracking.replay import export_run
from fedward.server.tracking.tracker import Tracker


def test_export_fills_mlflow_and_a_second_export_adds_nothing(tmp_path: Path) -> None:
    uri = str(tmp_path / "mlruns")
    run_dir = record_run(tmp_path / "runs" / "untracked")
    first = export_run(run_dir, uri)
    assert first.rounds == 4 and first.metrics > 0 and first.skipped == 0 and first.artifacts >= 5
    assert check_mlflow(uri, run_dir) == first.run_id
    again = export_run(run_dir, uri)
    assert again.run_id == first.run_id and again.metrics == 0 and again.skipped == first.metrics
    check_mlflow(uri, run_dir)  # no metric logged twice for a round


def test_export_refuses_a_folder_that_is_no_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run directory"):
        export_run(tmp_path, str(tmp_path / "mlruns"))


@pytest.mark.slow
def test_a_real_tracking_server_receives_the_run(tmp_path: Path, mlflow_server: MlflowServer) -> None:  # noqa: F811
    run_dir = record_run(tmp_path / "runs" / "served", tracked(mlflow_server.uri, tensorboard=True))
    check_mlflow(mlflow_server.uri, run_dir)
    assert json.loads((run_dir / "tracking.json").read_text())["mlflow"]["undelivered"] == []


class KillAfterRound:
    """Forwards to a tracker; kills the tracking server once round ``after`` is recorded."""

    def __init__(self, tracker: Tracker, server: MlflowServer, after: int) -> None:
        self.tracker, self.server, self.after = tracker, server, after

    def round_recorded(self, server_round: int, row: Mapping[str, Any], hospitals: Sequence[Mapping[str, Any]]) -> None:
        self.tracker.round_recorded(server_round, row, hospitals)
        if server_round == self.after:
            self.server.stop()

    def run_finished(self, run_dir: Path, state: str) -> str:
        return self.tracker.run_finished(run_dir, state)


@pytest.mark.slow
def test_a_tracking_server_killed_mid_run_then_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlflow_sink, "CLOSE_WAIT", 2.0)
    monkeypatch.setattr(mlflow_sink, "BACKOFF", (0.2, 1.0))
    server = start_mlflow_server(tmp_path / "first")
    try:

        def listener(spec: RunSpec) -> KillAfterRound:
            tracker = tracked(server.uri)(spec)
            assert tracker is not None
            return KillAfterRound(tracker, server, after=1)

        run_dir = record_run(tmp_path / "runs" / "interrupted", listener)
    finally:
        server.stop()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed"
    assert "round 3" in status["tracking"] and "artifact model_card.json" in status["tracking"]
    assert "round 3" in json.loads((run_dir / "tracking.json").read_text())["mlflow"]["undelivered"]
    assert (run_dir / "model_card.md").is_file() and len(
        (run_dir / "metrics" / "server.jsonl").read_text().splitlines()
    ) == 4
    fresh = start_mlflow_server(tmp_path / "second")
    try:
        report = export_run(run_dir, fresh.uri)
        assert report.rounds == 4
        check_mlflow(fresh.uri, run_dir)
        assert json.loads((run_dir / "tracking.json").read_text())["mlflow"]["undelivered"] == []
    finally:
        fresh.stop()
