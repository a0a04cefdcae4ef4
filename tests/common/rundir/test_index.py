"""The run store: an SQLite index of run directories, rebuilt from them when lost or damaged."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import torch
from fixtures.cli import fedward

from fedward.common.choices import Task
from fedward.common.config import RunConfig, RunSpec
from fedward.common.rundir.index import INDEX_FILE, RunEntry, RunNotFoundError, RunStore, index_run, read_entry
from fedward.common.rundir.layout import new_run_dir
from fedward.common.rundir.recorder import RunRecorder
from fedward.common.schema import DatasetSchema

SIMULATION_INFO: dict[str, Any] = {"format": "fedward-run/1", "mode": "federated", "flower-run-id": None}


def make_run(
    runs: Path,
    name: str,
    *,
    started: str,
    state: str = "completed",
    rounds: int = 3,
    rows: list[dict[str, Any]] | None = None,
    config: dict[str, Any] | None = None,
    info: dict[str, Any] | None = SIMULATION_INFO,
) -> Path:
    """A run directory written by hand: status.json, config.toml, run.json (unless ``info`` is
    ``None``, as in run directories written before run.json existed), metrics/server.jsonl."""
    run_dir = runs / name
    (run_dir / "metrics").mkdir(parents=True)
    rows = (
        rows if rows is not None else [{"round": r, "val-auc": 0.5 + r / 10, "test-auc": 0.4 + r / 10} for r in (1, 2)]
    )
    best = max((r for r in rows if "val-auc" in r), key=lambda r: r["val-auc"], default=None)
    status = {
        "state": state,
        "mode": "federated",
        "round": max((r["round"] for r in rows), default=0),
        "rounds": rounds,
        "started": started,
        "updated": started.replace("T10", "T11"),
        "latest": rows[-1] if rows else {},
        "best": {
            "round": best["round"] if best else None,
            "metric": "val-auc",
            "value": best["val-auc"] if best else None,
        },
    }
    (run_dir / "status.json").write_text(json.dumps(status), encoding="utf-8")
    cfg = {"data": {"dataset": "pneumoniamnist"}, "model": {"name": "smallcnn"}, **(config or {})}
    (run_dir / "config.toml").write_text(tomli_w.dumps(cfg), encoding="utf-8")
    if info is not None:
        (run_dir / "run.json").write_text(json.dumps(info), encoding="utf-8")
    (run_dir / "metrics" / "server.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return run_dir


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A runs folder with three finished simulations, started on 1, 3 and 2 January."""
    folder = tmp_path / "runs"
    for day in (1, 3, 2):
        make_run(folder, f"2025010{day}-100000-sim", started=f"2025-01-0{day}T10:00:00+00:00")
    return folder


def test_recorder_indexes_every_round_and_the_end(tmp_path: Path) -> None:
    cfg = RunConfig.from_mapping({"federation": {"rounds": 3}, "run": {"output-dir": str(tmp_path / "runs")}})
    spec = RunSpec(cfg, DatasetSchema(Task.BINARY, ("normal", "pneumonia"), 1))
    run_dir = new_run_dir(tmp_path / "runs", "pneumoniamnist")
    recorder = RunRecorder(run_dir, spec, mode="federated")
    store = RunStore(tmp_path / "runs")
    assert (tmp_path / "runs" / INDEX_FILE).is_file()
    assert store.list()[0].status == "running"

    state = {"w": torch.zeros(3)}
    for server_round, val_auc in [(0, None), (1, 0.7), (2, 0.9)]:
        metrics = {"test-auc": 0.6 + server_round / 10}
        if val_auc is not None:
            metrics["val-auc"] = val_auc
        recorder.record_round(server_round, state, metrics)
    with sqlite3.connect(tmp_path / "runs" / INDEX_FILE) as conn:  # what the recorder wrote, not re-read
        indexed = conn.execute("SELECT status, rounds_done, rounds, best_round, test_auc FROM runs").fetchall()
    assert indexed == [("running", 2, 3, 2, pytest.approx(0.8))]

    recorder.finish("stopped", reason="test")
    entry = store.get(run_dir.name)
    assert (entry.status, entry.rounds_done, entry.rounds, entry.mode) == ("stopped", 2, 3, "federated")
    assert (entry.best_round, entry.best_metric, entry.best_value) == (2, "val-auc", 0.9)
    assert entry.test_auc == pytest.approx(0.8)
    assert entry.started is not None and entry.ended is not None and entry.ended >= entry.started
    assert (entry.epsilon, entry.delta, entry.flower_run_id) == (None, None, None)
    assert (entry.dataset, entry.model, entry.path) == ("pneumoniamnist", "smallcnn", run_dir)
    assert store.list() == [entry]


def test_list_is_newest_first_and_json_ready(runs: Path) -> None:
    entries = RunStore(runs).list()
    assert [e.run_id for e in entries] == ["20250103-100000-sim", "20250102-100000-sim", "20250101-100000-sim"]
    first = entries[0]
    assert (first.status, first.rounds_done, first.rounds, first.best_round, first.test_auc) == (
        "completed",
        2,
        3,
        2,
        pytest.approx(0.6),
    )
    assert first.ended == "2025-01-03T11:00:00+00:00"
    data = json.loads(json.dumps(first.to_json()))
    assert data["run-id"] == "20250103-100000-sim" and data["best-value"] == pytest.approx(0.7)
    assert data["path"] == str(runs / "20250103-100000-sim")
    assert set(data) == {f.replace("_", "-") for f in RunEntry.__dataclass_fields__}


@pytest.mark.parametrize("run_id", ["", ".", "..", "../runs", "a/b", "a\\b", "a\0b", "/etc", "no-such-run"])
def test_get_refuses_unknown_and_traversal_ids(runs: Path, run_id: str) -> None:
    (runs.parent / "b").mkdir()
    (runs.parent / "b" / "config.toml").write_text("", encoding="utf-8")
    with pytest.raises(RunNotFoundError, match="run"):
        RunStore(runs).get(run_id)
    with pytest.raises(RunNotFoundError):
        RunStore(runs / "20250101-100000-sim").get("..")


def test_a_deleted_index_is_rebuilt_identically(runs: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = RunStore(runs)
    before = store.list()
    (runs / INDEX_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="fedward.common.rundir.index"):
        assert store.list() == before
    assert "missing" in caplog.text
    assert (runs / INDEX_FILE).is_file()
    assert store.rebuild() == 3
    assert store.list() == before


def test_a_corrupt_index_is_rebuilt(runs: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = RunStore(runs)
    before = store.list()
    (runs / INDEX_FILE).write_bytes(b"not a database\n" * 500)
    with caplog.at_level(logging.WARNING, logger="fedward.common.rundir.index"):
        assert store.list() == before
    assert "corrupt" in caplog.text
    (runs / INDEX_FILE).write_bytes(b"\x00garbage")
    assert store.update(runs / "20250101-100000-sim").run_id == "20250101-100000-sim"
    assert store.list() == before


def test_an_index_of_another_schema_version_is_rebuilt(runs: Path) -> None:
    store = RunStore(runs)
    before = store.list()
    with sqlite3.connect(runs / INDEX_FILE) as conn:
        conn.execute("DELETE FROM runs")
        conn.execute("PRAGMA user_version = 99")
    assert store.list() == before


def test_directories_added_or_deleted_behind_the_index_are_picked_up(runs: Path) -> None:
    store = RunStore(runs)
    assert len(store.list()) == 3
    make_run(runs, "20250104-100000-late", started="2025-01-04T10:00:00+00:00", state="running")
    (runs / "20250101-100000-sim" / "status.json").unlink()
    (runs / "20250101-100000-sim" / "config.toml").unlink()  # no longer a run directory
    assert [e.run_id for e in store.list()] == ["20250104-100000-late", "20250103-100000-sim", "20250102-100000-sim"]
    assert store.list()[0].ended is None
    status = json.loads((runs / "20250104-100000-late" / "status.json").read_text())
    (runs / "20250104-100000-late" / "status.json").write_text(json.dumps({**status, "state": "failed"}))
    assert store.list()[0].status == "failed"  # an unfinished run is re-read, even if its writer did not index it
    store.remove("20250103-100000-sim")  # its directory is still there: it comes back
    assert len(store.list()) == 3


def test_a_half_written_run_is_unknown_but_listed(runs: Path) -> None:
    broken = make_run(runs, "20250105-100000-broken", started="2025-01-05T10:00:00+00:00")
    (broken / "status.json").write_text('{"state": "runn', encoding="utf-8")
    (broken / "config.toml").write_text("[data\ndataset =", encoding="utf-8")
    with open(broken / "metrics" / "server.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"round": 3, "val-a')
    entries = RunStore(runs).list()
    assert len(entries) == 4
    entry = RunStore(runs).get("20250105-100000-broken")
    assert entry in entries
    assert (entry.status, entry.mode, entry.ended, entry.dataset) == ("unknown", "unknown", None, "")
    assert entry.started == "2025-01-05T10:00:00+00:00"  # from the directory name
    assert entry.rounds_done == 2  # the complete metric rows still count
    (broken / "status.json").write_bytes(b"\xff\xfe")
    (broken / "metrics" / "server.jsonl").write_bytes(b"\xff\n")
    assert RunStore(runs).get("20250105-100000-broken").status == "unknown"


def test_epsilon_is_the_larger_of_client_and_record_level(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    both = make_run(
        runs,
        "20250101-100000-both",
        started="2025-01-01T10:00:00+00:00",
        rows=[
            {"round": 1, "epsilon": 0.5, "dpsgd-epsilon": 0.8},
            {"round": 2, "epsilon": 1.2, "dpsgd-epsilon": 2.0},
            {"round": 3, "epsilon": None},
        ],
        config={"privacy": {"client-dp": "server-fixed", "delta": 1e-3, "dpsgd": True, "dpsgd-delta": 1e-6}},
    )
    client = make_run(
        runs,
        "20250101-100000-client",
        started="2025-01-01T10:00:00+00:00",
        rows=[{"round": 1, "epsilon": 0.5}, {"round": 2, "epsilon": 1.25}],
        config={"privacy": {"client-dp": "server-fixed", "delta": 1e-3}},
    )
    planned = make_run(
        runs,
        "20250101-100000-planned",
        started="2025-01-01T10:00:00+00:00",
        state="running",
        rows=[],
        config={"privacy": {"dpsgd": True, "dpsgd-delta": 1e-6}},
    )
    plain = make_run(runs, "20250101-100000-plain", started="2025-01-01T10:00:00+00:00")
    assert (read_entry(both).epsilon, read_entry(both).delta) == (2.0, 1e-6)
    assert (read_entry(client).epsilon, read_entry(client).delta) == (1.25, 1e-3)
    assert (read_entry(planned).epsilon, read_entry(planned).delta) == (None, 1e-6)
    assert (read_entry(plain).epsilon, read_entry(plain).delta) == (None, None)
    assert {e.run_id: e.epsilon for e in RunStore(runs).list()}["20250101-100000-both"] == 2.0


def test_flower_run_id_only_for_coordinator_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    info = {**SIMULATION_INFO, "flower-run-id": 2**64 - 1}
    coordinator = make_run(
        runs, "20250101-100000-exp-2-18446744073709551615", started="2025-01-01T10:00:00+00:00", info=info
    )
    simulation = make_run(runs, "20250101-100000-exp-2", started="2025-01-01T10:00:00+00:00")
    named = make_run(runs, "20250101-100000-42", started="2025-01-01T10:00:00+00:00", info=None)
    legacy = make_run(runs, "20250101-100000-exp-7", started="2025-01-01T10:00:00+00:00", info=None)
    assert read_entry(legacy).flower_run_id == 7  # no run.json (an older run): the name's suffix
    assert read_entry(coordinator).flower_run_id == 2**64 - 1  # unsigned 64-bit: stored as text
    assert read_entry(simulation).flower_run_id is None
    assert read_entry(named).flower_run_id is None  # "42" is the run's name, not a Flower id
    assert RunStore(runs).get(coordinator.name).flower_run_id == 2**64 - 1
    assert {e.run_id: e.flower_run_id for e in RunStore(runs).list()}[coordinator.name] == 2**64 - 1


def test_index_run_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fedward.common.rundir.index"):
        index_run(tmp_path / "missing" / "run")
    assert "not indexed" in caplog.text
    assert RunStore(tmp_path / "missing").list() == []
    assert RunStore(tmp_path / "missing").rebuild() == 0


def test_concurrent_writers_and_readers(runs: Path) -> None:
    store = RunStore(runs)
    names = sorted(p.name for p in runs.iterdir() if p.is_dir())
    failures: list[BaseException] = []

    def work(name: str) -> None:
        try:
            for _ in range(15):
                RunStore(runs).update(runs / name)
                RunStore(runs).list()
        except BaseException as err:  # collected for the assertion below
            failures.append(err)

    threads = [threading.Thread(target=work, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(store.list()) == 3


def test_cli_lists_and_reindexes_a_runs_folder(runs: Path, tmp_path: Path) -> None:
    listed = fedward("run", "list", "--runs", str(runs), "--json", timeout=120)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["run-id"] for r in rows] == ["20250103-100000-sim", "20250102-100000-sim", "20250101-100000-sim"]
    assert rows == [e.to_json() for e in RunStore(runs).list()]

    (runs / INDEX_FILE).unlink()
    reindexed = fedward("run", "reindex", "--runs", str(runs), timeout=120)
    assert reindexed.returncode == 0, reindexed.stdout + reindexed.stderr
    assert "indexed 3 runs" in reindexed.stdout

    state = tmp_path / "state"
    (state / "runs").mkdir(parents=True)
    make_run(state / "runs", "20250101-100000-pneumoniamnist-77", started="2025-01-01T10:00:00+00:00", info=None)
    table = fedward("run", "list", "--state", str(state), timeout=120)
    assert table.returncode == 0, table.stdout + table.stderr
    assert "20250101-100000-pneumoniamnist-77" in table.stdout and "0.7000 (round 2)" in table.stdout
    assert "run store only" in table.stderr

    missing = fedward("run", "list", "--runs", str(tmp_path / "nope"), timeout=120)
    assert missing.returncode == 2 and "no such folder" in missing.stderr


def test_cli_merges_flower_live_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from fedward.cli.main import app
    from fedward.common.flower.flwr_cli import Connection
    from fedward.common.security import tls
    from fedward.server.coordinator.state import CoordinatorState

    class FakeFlwr:
        def runs(self) -> list[dict[str, Any]]:
            return [
                {"run-id": "77", "status": "finished:completed"},
                {"run-id": "78", "status": "finished:failed"},  # its ServerApp died without closing the run
                {"run-id": "99", "status": "pending"},  # no run directory yet
            ]

    state = tmp_path / "state"
    make_run(state / "runs", "20250101-100000-pneumoniamnist-77", started="2025-01-01T10:00:00+00:00", info=None)
    make_run(
        state / "runs",
        "20250102-100000-pneumoniamnist-78",
        started="2025-01-02T10:00:00+00:00",
        state="running",
        info={**SIMULATION_INFO, "flower-run-id": 78},
    )
    monkeypatch.setattr(CoordinatorState, "connection", lambda self: Connection("fedward", "127.0.0.1:9", None, True))
    monkeypatch.setattr(CoordinatorState, "flwr", lambda self: FakeFlwr())
    monkeypatch.setattr(tls, "probe", lambda *args, **kwargs: None)
    runner = CliRunner()

    result = runner.invoke(app, ["run", "list", "--state", str(state), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["run-id"], r["flower-run-id"], r["status"], r["flower-status"]) for r in rows] == [
        (None, 99, "pending", "pending"),
        ("20250102-100000-pneumoniamnist-78", 78, "running", "finished:failed"),
        ("20250101-100000-pneumoniamnist-77", 77, "completed", "finished:completed"),
    ]
    table = runner.invoke(app, ["run", "list", "--state", str(state)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "running (Flower: finished:failed)" in table.stdout
    assert "(Flower run 99, no run directory yet)" in table.stdout
