"""The hospital's warm worker: the forwarding ClientApp gets the same replies and failures as in-process
handlers, over a channel only the agent's user can open; a dead worker fails the message, never hangs, and
is restarted."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.deadlines import deadline
from fixtures.synthetic import write_npz
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from fedward.client.hospital.clientapp import HospitalError
from fedward.client.hospital.clientapp import app as client_app
from fedward.client.hospital.run_cache import forget_runs
from fedward.client.hospital.worker_channel import WORKER_SOCKET_KEY, forward, private_socket_path, serve
from fedward.client.hospital.worker_process import WorkerProcess
from fedward.common.choices import ModelName, Task
from fedward.common.config import RunConfig, RunSpec
from fedward.common.ml.networks import build_network
from fedward.common.schema import DatasetSchema
from fedward.common.wire import model_to_arrays

SCHEMA = DatasetSchema(Task.BINARY, ("a", "b"), 1)


def _context(data: Path, **node: str) -> Context:
    cfg = RunConfig.from_mapping(
        {"data": {"dataset": "tinymnist"}, "federation": {"rounds": 2}, "train": {"local-epochs": 1, "threads": 1}}
    )
    return Context(
        run_id=1, node_id=7, node_config={"data-dir": str(data), **node}, state=RecordDict(),
        run_config=RunSpec(cfg, SCHEMA).to_flower(),
    )  # fmt: skip


def _message(kind: str) -> Message:
    torch.manual_seed(0)
    model = build_network(ModelName.SMALL_CNN, 1, 2)
    content = RecordDict({"arrays": model_to_arrays(model), "config": ConfigRecord({"server-round": 1})})
    return Message(content=content, dst_node_id=7, message_type=kind)


@pytest.fixture
def hospital(tmp_path: Path) -> Path:
    forget_runs()
    return write_npz(tmp_path / "st-olav" / "tinymnist.npz", sizes=(64, 16, 0)).parent


@pytest.fixture
def worker(tmp_path: Path) -> object:
    process = WorkerProcess(tmp_path / "private")
    process.start()
    yield process
    process.stop()


def test_the_forwarding_clientapp_imports_neither_torch_nor_monai() -> None:
    code = "import sys, fedward.client.hospital.clientapp; print('torch' in sys.modules, 'monai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_the_worker_replies_as_the_in_process_handlers(hospital: Path, worker: WorkerProcess) -> None:
    local = _context(hospital)
    remote = _context(hospital, **{WORKER_SOCKET_KEY: str(worker.socket_path)})
    for kind in (MessageType.QUERY, MessageType.EVALUATE, MessageType.TRAIN):
        here, there = client_app(_message(kind), local), client_app(_message(kind), remote)
        assert not there.has_error()
        assert there.metadata.reply_to_message_id == here.metadata.reply_to_message_id
        for name in ("metrics", "site"):
            mine, theirs = dict(here.content[name]), dict(there.content[name])
            for timing in ("train-seconds", "eval-seconds"):
                assert (mine.pop(timing, None) is None) == (theirs.pop(timing, None) is None)
            assert mine == theirs, kind
        for name, record in here.content.array_records.items():  # same seed, same thread count
            other = there.content.array_records[name]
            assert all(np.array_equal(record[k].numpy(), other[k].numpy()) for k in record), kind


def test_a_failure_crosses_the_channel_with_its_text(hospital: Path, worker: WorkerProcess) -> None:
    broken = _context(hospital.parent / "nowhere", **{WORKER_SOCKET_KEY: str(worker.socket_path)})
    with pytest.raises(HospitalError, match="does not exist"):
        client_app(_message(MessageType.TRAIN), broken)


def test_a_killed_worker_fails_the_message_and_the_agent_restarts_it(hospital: Path, worker: WorkerProcess) -> None:
    remote = _context(hospital, **{WORKER_SOCKET_KEY: str(worker.socket_path)})
    assert not client_app(_message(MessageType.QUERY), remote).has_error()
    first = worker.process
    assert first is not None
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    with pytest.raises(HospitalError, match="worker is not running"):
        client_app(_message(MessageType.QUERY), remote)
    ends = time.monotonic() + deadline(120)
    while worker.restarts < 1 and time.monotonic() < ends:
        time.sleep(0.2)
    assert worker.restarts == 1 and worker.process is not first
    assert not client_app(_message(MessageType.QUERY), remote).has_error()


def test_only_the_owner_can_open_the_channel(tmp_path: Path) -> None:
    path = private_socket_path(tmp_path / "private")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    listening = threading.Event()
    threading.Thread(target=serve, args=(path, lambda k, m, c: m), kwargs={"ready": listening.set}, daemon=True).start()
    assert listening.wait(deadline(30))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(HospitalError, match="mode 700"):
        private_socket_path(shared)


def test_a_worker_that_drops_the_request_gives_a_failure_not_a_hang(tmp_path: Path) -> None:
    path = private_socket_path(tmp_path / "private")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def drop() -> None:
        connection, _ = server.accept()
        connection.recv(16)
        connection.close()  # a worker dying mid-request

    threading.Thread(target=drop, daemon=True).start()
    context = _context(tmp_path)
    with pytest.raises(HospitalError, match="stopped while serving"):
        forward(path, "train", _message(MessageType.TRAIN), context)
    server.close()
    with pytest.raises(HospitalError, match="not running"):
        forward(tmp_path / "private" / "absent.sock", "train", _message(MessageType.TRAIN), context)


def test_a_stalled_client_does_not_block_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fedward.client.hospital.worker_channel.REQUEST_TIMEOUT_S", 0.5)
    path = private_socket_path(tmp_path / "private")
    listening = threading.Event()
    echo = threading.Thread(target=serve, args=(path, lambda k, m, c: m), kwargs={"ready": listening.set}, daemon=True)
    echo.start()
    assert listening.wait(deadline(30))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stalled:
        stalled.connect(str(path))  # connects, never sends
        reply = forward(path, "query", _message(MessageType.QUERY), _context(tmp_path))
    assert reply.metadata.message_type == MessageType.QUERY
