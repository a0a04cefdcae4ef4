"""Checkpoint and resume of the ServerApp, in process, against a scripted grid of hospitals.

The grid answers like fedward's ClientApp would (enrolment, training updates, evaluation
metrics) with updates that depend only on (round, hospital, global model), so the
server side is the only state: strategy moments, adaptive clipping norm, Python's and
NumPy's generators (hospital sampling, DP noise). A run that crashes and is resumed
from its checkpoint must end with exactly the bytes of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures.flower import AnsweringGrid
from fixtures.weights import weights_digest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam

from fedward.common import wire
from fedward.common.choices import Task
from fedward.common.config import RunConfig, RunSpec
from fedward.common.errors import ConfigError
from fedward.common.fileio import sha256_of
from fedward.common.flower.packing import pack_arrays, unpack_arrays
from fedward.common.rundir.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    CheckpointError,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from fedward.common.rundir.lock import RunBusyError, RunLock
from fedward.common.rundir.manifest import read_manifest
from fedward.common.schema import DatasetSchema
from fedward.common.version import fedward_version
from fedward.server.app.serverapp import place_run, run_federation
from fedward.server.app.strategy_state import restore_strategy_state, strategy_state

HOSPITALS = {11: "alpha", 22: "bravo", 33: "charlie"}


class CrashError(RuntimeError):
    """The coordinator dies in the middle of a round."""


class ScriptedGrid(AnsweringGrid):
    """Hospitals that train deterministically; optionally the server 'dies' in round ``crash_in``."""

    def __init__(self, crash_in: int | None = None) -> None:
        super().__init__()
        self.crash_in = crash_in
        self.trained: list[tuple[int, str]] = []
        self.evaluated: list[int] = []

    def get_node_ids(self) -> Iterable[int]:
        return list(HOSPITALS)

    def answer(self, message: Message) -> Message:
        node = message.metadata.dst_node_id
        name = HOSPITALS[node]
        kind = message.metadata.message_type
        if kind == MessageType.QUERY:
            site = ConfigRecord({wire.SITE_NAME: name, wire.SITE_VERSION: fedward_version(), wire.SITE_DEVICE: "cpu"})
            counts = MetricRecord({wire.TRAIN_EXAMPLES: 100 + node, wire.VAL_EXAMPLES: 20})
            return Message(RecordDict({wire.SITE: site, "metrics": counts}), reply_to=message)
        server_round = int(message.content["config"]["server-round"])  # type: ignore[arg-type]
        if kind == MessageType.TRAIN:
            if server_round == self.crash_in:
                raise CrashError(f"coordinator killed in round {server_round}")
            self.trained.append((server_round, name))
            generator = np.random.default_rng([server_round, node])  # independent of the server's generators
            arrays = unpack_arrays(message.content["arrays"])  # as the hospital's ClientApp does
            update = ArrayRecord(
                {
                    k: Array((a.numpy() + generator.normal(0, 0.05, a.shape)).astype(a.numpy().dtype))
                    if a.numpy().dtype.kind == "f"
                    else Array(a.numpy())
                    for k, a in arrays.items()  # type: ignore[union-attr]
                }
            )
            metrics = MetricRecord({wire.NUM_EXAMPLES: 100 + node, "train-loss": 1.0 / server_round})
            content = RecordDict(
                {"arrays": pack_arrays(update), "metrics": metrics, wire.SITE: ConfigRecord({wire.SITE_NAME: name})}
            )
            if message.content["config"].get(wire.EVALUATE_FIRST):  # the received model: round - 1's
                content[wire.VALIDATION] = self._validation(server_round - 1, node)
            return Message(content, reply_to=message)
        self.evaluated.append(server_round)
        site = ConfigRecord({wire.SITE_NAME: name})
        return Message(RecordDict({"metrics": self._validation(server_round, node), wire.SITE: site}), reply_to=message)

    @staticmethod
    def _validation(server_round: int, node: int) -> MetricRecord:
        return MetricRecord({wire.NUM_EXAMPLES: 20, "val-auc": 0.5 + 0.1 * server_round + 0.001 * node})


def make_config(out: Path, **sections: dict[str, Any]) -> RunSpec:
    raw: dict[str, dict[str, Any]] = {
        "data": {"dataset": "pneumoniamnist", "data-dir": str(out / "no-data")},
        "federation": {"hospitals": 3, "rounds": 4, "round-timeout": 30.0},
        "run": {"seed": 7, "output-dir": str(out)},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return RunSpec(RunConfig.from_mapping(raw), DatasetSchema(Task.BINARY, ("normal", "pneumonia"), 1))


def resumed_spec(spec: RunSpec, run_dir: Path) -> RunSpec:
    return dataclasses.replace(spec, run_dir=run_dir, resume=True)


def run_dir_of(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and p.name != "no-data"]
    return run_dir


SCENARIOS = {
    "fedadam+server-adaptive-dp+sampling": {
        "strategy": {"name": "fedadam", "server-lr": 0.05},
        "federation": {"fraction-train": 0.67},
        "privacy": {"client-dp": "server-adaptive", "noise-multiplier": 0.5, "clipping-norm": 5.0, "delta": 1e-3},
    },
    "fedavgm": {"strategy": {"name": "fedavgm", "server-momentum": 0.9}},  # evaluation carried by training
    "fedavg, evaluation messages": {"federation": {"evaluate-in-train": False}},
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path: Path, scenario: str) -> None:
    sections = SCENARIOS[scenario]
    straight = make_config(tmp_path / "straight", **sections)
    run_federation(ScriptedGrid(), straight)
    reference = run_dir_of(tmp_path / "straight")

    crashed = make_config(tmp_path / "crashed", **sections)
    with pytest.raises(CrashError):
        run_federation(ScriptedGrid(crash_in=3), crashed)
    run_dir = run_dir_of(tmp_path / "crashed")
    assert load_checkpoint(run_dir).server_round == 2
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"

    # Whatever else happened in the process meanwhile, the checkpoint restores the generators.
    random.seed(12345)
    np.random.seed(54321)
    resumed_grid = ScriptedGrid()
    resumed = resumed_spec(crashed, run_dir)
    run_federation(resumed_grid, resumed)

    assert sorted({r for r, _ in resumed_grid.trained}) == [3, 4], "rounds 1-2 are not trained again"
    for round_number in range(5):
        name = f"round-{round_number:03d}.safetensors"
        assert weights_digest(run_dir / "models" / name) == weights_digest(reference / "models" / name), name
    assert weights_digest(run_dir / "models" / "best.safetensors") == weights_digest(
        reference / "models" / "best.safetensors"
    )
    volatile = {"time", "elapsed-s"}
    rows = [
        {k: v for k, v in json.loads(line).items() if k not in volatile}
        for line in (run_dir / "metrics/server.jsonl").read_text().splitlines()
    ]
    expected = [
        {k: v for k, v in json.loads(line).items() if k not in volatile}
        for line in (reference / "metrics/server.jsonl").read_text().splitlines()
    ]
    assert rows == expected  # one row per round, none doubled, same metrics (epsilon included)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed" and status["round"] == 4
    assert [r["after-round"] for r in status["resumed"]] == [2]
    card = json.loads((run_dir / "model_card.json").read_text())
    assert card["run"]["resumed_after_rounds"] == [2]
    assert "Resumed from its checkpoint after round(s) 2" in (run_dir / "model_card.md").read_text()
    manifest = read_manifest(run_dir)
    assert manifest["round-004.safetensors"]["sha256"] == sha256_of(run_dir / "models" / "round-004.safetensors")


def _rows(path: Path) -> list[dict[str, Any]]:
    volatile = {"time", "elapsed-s", "eval-seconds"}
    return [{k: v for k, v in json.loads(line).items() if k not in volatile} for line in path.read_text().splitlines()]


def test_evaluation_carried_by_training_records_what_evaluation_messages_record(tmp_path: Path) -> None:
    carried, separate = ScriptedGrid(), ScriptedGrid()
    run_federation(carried, make_config(tmp_path / "carried"))
    run_federation(separate, make_config(tmp_path / "separate", federation={"evaluate-in-train": False}))
    assert carried.evaluated == [4, 4, 4], "only the last round needs evaluation messages"
    assert separate.evaluated == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    ours, theirs = run_dir_of(tmp_path / "carried"), run_dir_of(tmp_path / "separate")
    for table in ("server", "hospitals"):
        assert _rows(ours / f"metrics/{table}.jsonl") == _rows(theirs / f"metrics/{table}.jsonl"), table
    rows = _rows(ours / "metrics/server.jsonl")
    assert [r["hospitals-evaluated"] for r in rows[1:]] == [3, 3, 3, 3]
    for round_number in range(5):
        name = f"round-{round_number:03d}.safetensors"
        assert weights_digest(ours / "models" / name) == weights_digest(theirs / "models" / name), name
    assert "evaluation-owed" not in load_checkpoint(ours).extra


def test_a_crash_between_metrics_and_checkpoint_leaves_no_duplicate_round(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    with pytest.raises(CrashError):
        run_federation(ScriptedGrid(crash_in=3), cfg)
    run_dir = run_dir_of(tmp_path)
    # Simulate a kill after round 3's metrics and weights were written but before its checkpoint:
    with open(run_dir / "metrics" / "server.jsonl", "a") as handle:
        handle.write(json.dumps({"round": 3, "val-auc": 0.99}) + "\n" + '{"round": 4, "val-a')
    (run_dir / "models" / "round-003.safetensors").write_bytes(b"partial")
    resumed = resumed_spec(cfg, run_dir)
    run_federation(ScriptedGrid(), resumed)
    rounds = [json.loads(line)["round"] for line in (run_dir / "metrics" / "server.jsonl").read_text().splitlines()]
    assert rounds == [0, 1, 2, 3, 4]
    assert json.loads((run_dir / "models" / "best.json").read_text())["round"] == 4


def test_a_run_directory_in_use_is_not_resumed(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    with pytest.raises(CrashError):
        run_federation(ScriptedGrid(crash_in=2), cfg)
    run_dir = run_dir_of(tmp_path)
    resumed = resumed_spec(cfg, run_dir)
    with RunLock(run_dir), pytest.raises(RunBusyError, match="in use by a running ServerApp"):
        run_federation(ScriptedGrid(), resumed)  # e.g. a second resume while the first still runs
    assert load_checkpoint(run_dir).server_round == 1, "nothing was written by the refused ServerApp"
    run_federation(ScriptedGrid(), resumed)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"


def test_checkpoint_round_trips_strategy_and_generators(tmp_path: Path) -> None:
    strategy = FedAdam()
    strategy.m_t = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    strategy.v_t = {"w": np.full((2, 3), 0.25, np.float32)}
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    rng = capture_rng()
    expected = (random.random(), np.random.normal(), torch.rand(1).item())
    model = {"layer.weight": np.ones((2, 2), np.float32), "layer.num_batches_tracked": np.array(4, np.int64)}
    save_checkpoint(tmp_path, Checkpoint(5, model, strategy_state(strategy), rng, {"dpsgd-epsilon": 1.5}))

    loaded = load_checkpoint(tmp_path)
    assert loaded.server_round == 5 and loaded.extra == {"dpsgd-epsilon": 1.5}
    assert list(loaded.model) == list(model)
    assert loaded.model["layer.num_batches_tracked"].dtype == np.int64
    fresh = FedAdam()
    restore_strategy_state(fresh, loaded.strategy)
    assert fresh.m_t is not None and fresh.v_t is not None
    np.testing.assert_array_equal(fresh.m_t["w"], strategy.m_t["w"])
    np.testing.assert_array_equal(fresh.v_t["w"], strategy.v_t["w"])
    random.seed(99)
    restore_rng(loaded.rng)
    assert (random.random(), np.random.normal(), torch.rand(1).item()) == expected
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


def test_resume_without_or_with_a_broken_checkpoint_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"has no checkpoint\.safetensors"):
        load_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(tmp_path)


def test_a_checkpoint_for_another_strategy_is_refused(tmp_path: Path) -> None:
    strategy = FedAdam()
    strategy.m_t = {"w": np.zeros(2, np.float32)}
    state = {f"root.strategy.{k.split('.', 1)[1]}": v for k, v in strategy_state(strategy).items()}
    with pytest.raises(CheckpointError, match="does not have"):
        restore_strategy_state(FedAdam(), state)


def test_a_coordinator_resumes_only_its_own_run_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    (runs / "20260101-000000-x-1").mkdir(parents=True)
    monkeypatch.setenv("FEDWARD_RUNS_DIR", str(runs))
    cfg = make_config(tmp_path)
    inside = resumed_spec(cfg, runs / "20260101-000000-x-1")
    assert place_run(inside, 5) == (inside, False)
    outside = resumed_spec(cfg, tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="not a run directory of this coordinator"):
        place_run(outside, 5)
    new, created = place_run(cfg, 5)  # a new run goes into the coordinator's runs folder, named with its run id
    assert (
        created and new.run_dir is not None and new.run_dir.parent == runs.resolve() and new.run_dir.name.endswith("-5")
    )
