"""Every reply a hospital sends in a federated run holds weights, counts, metrics and bin sums only.

The ServerApp runs in process against a grid whose three hospitals are the real ClientApp,
each on its own synthetic data folder; every reply is inspected. The operating point and
the temperature are chosen from statistics over fixed bins (never a per-image score,
label or file name), and end up in ``metrics/server.jsonl`` and the model card.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures.flower import AnsweringGrid
from fixtures.privacy import HISTOGRAM_KEYS, SITE_KEYS, check_statistic, is_hospital_metric_key
from fixtures.synthetic import write_npz
from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedward.client.hospital.clientapp import app as client_app
from fedward.common.choices import Task
from fedward.common.config import RunConfig, RunSpec
from fedward.common.schema import DatasetSchema
from fedward.server.app.serverapp import run_federation

SCHEMA = DatasetSchema(Task.BINARY, ("a", "b"), 1)
NODES = (11, 22, 33)


@dataclass(frozen=True)
class Sent:
    """The records of one reply, copied when the hospital sent it."""

    metrics: list[dict[str, Any]]
    configs: list[dict[str, Any]]


class ClientAppGrid(AnsweringGrid):
    """Hospitals that are fedward's ClientApp, called in process; every reply is kept."""

    def __init__(self, contexts: dict[int, Context]) -> None:
        super().__init__()
        self.contexts = contexts
        self.replies: list[Sent] = []

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def answer(self, message: Message) -> Message:
        reply = client_app(message, self.contexts[message.metadata.dst_node_id])
        assert not reply.has_error(), reply.error.reason
        content = reply.content  # as sent: the server later takes records out of the message
        self.replies.append(
            Sent(
                [dict(r) for r in content.metric_records.values()],
                [dict(r) for r in content.config_records.values()],
            )
        )
        return reply


@pytest.fixture(scope="module")
def federated_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ClientAppGrid]:
    out = tmp_path_factory.mktemp("reply-privacy")
    raw = {
        "data": {"dataset": "tinymnist", "data-dir": str(out / "no-data"), "val-fraction": 0.3},
        "federation": {"hospitals": 3, "rounds": 2, "round-timeout": 60.0},
        "train": {"local-epochs": 1},
        "evaluation": {"operating-point": "sensitivity", "target": 0.9},
        "run": {"seed": 3, "output-dir": str(out)},
    }
    spec = RunSpec(RunConfig.from_mapping(raw), SCHEMA)
    contexts = {}
    for index, node in enumerate(NODES):
        folder = out / f"hospital-{node}"
        write_npz(folder / "tinymnist.npz", sizes=(60 + 10 * index, 4, 0), seed=index)
        contexts[node] = Context(
            run_id=1,
            node_id=node,
            node_config={"data-dir": str(folder)},
            state=RecordDict(),
            run_config=spec.to_flower(),
        )
    grid = ClientAppGrid(contexts)
    # Flower sets who is sending in its ServerApp process; here the coordinator is node 0 of run 1.
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    try:
        run_federation(grid, spec)
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and p.name.endswith("tinymnist")]
    return run_dir, grid


def test_every_reply_holds_only_weights_counts_metrics_and_bin_sums(
    federated_run: tuple[Path, ClientAppGrid],
) -> None:
    _, grid = federated_run
    assert len(grid.replies) >= 3 * 3, "enrolment, training and evaluation replies were all seen"
    with_statistics = 0
    for reply in grid.replies:
        for record in reply.metrics:
            assert all(is_hospital_metric_key(k) for k in record), [k for k in record if not is_hospital_metric_key(k)]
            for key, value in record.items():
                if isinstance(value, list):
                    check_statistic(key, value, int(record["num-examples"]))
            histograms = [record[k] for k in HISTOGRAM_KEYS if k in record]
            if histograms:
                with_statistics += 1
                assert sum(map(sum, histograms)) == record["num-examples"]  # type: ignore[arg-type]
        for record in reply.configs:
            assert set(record) <= SITE_KEYS
    assert with_statistics >= 3 * 2, "every hospital sent its validation statistics every round"


def test_the_operating_point_is_chosen_from_them_and_recorded(federated_run: tuple[Path, ClientAppGrid]) -> None:
    run_dir, _ = federated_run
    rows = [json.loads(line) for line in (run_dir / "metrics" / "server.jsonl").read_text().splitlines()]
    last = rows[-1]
    assert last["operating-hospitals"] == 3
    assert 0.0 <= last["val-threshold"] <= 1.0 and last["val-temperature"] > 0
    assert last["val-sensitivity"] >= 0.9, "the sensitivity rule holds on the validation split it was chosen on"
    card = json.loads((run_dir / "model_card.json").read_text())
    point = card["operating_point"]
    assert point["rule"] == "sensitivity" and point["target"] == 0.9
    selected = next(r for r in rows if r["round"] == card["selection"]["round"])
    assert point["thresholds"] == [selected["val-threshold"]] and point["temperature"] == selected["val-temperature"]
    assert "never on test" in point["note"]
    hospital_keys = set().union(*(json.loads(line) for line in (run_dir / "metrics/hospitals.jsonl").open()))
    assert not any(k.startswith("val-stats-") for k in hospital_keys), "statistics are not recorded per hospital"
    enrolled = json.loads((run_dir / "hospitals.json").read_text())["hospitals"]
    assert [h["name"] for h in enrolled] == sorted(h["name"] for h in enrolled) and len(enrolled) == 3
    assert all(set(h) == {"name", "train_images", "val_images", "class_counts", "files_skipped", "fedward", "device"}
               for h in enrolled), "counts and versions only"  # fmt: skip
    assert (run_dir / "plots" / "reliability.png").read_bytes().startswith(b"\x89PNG")
