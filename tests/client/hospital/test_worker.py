"""The hospital's warm worker: it serves each ClientApp task in its own process with fedward's ClientApp
(same replies and failures as Flower's per-message process), refuses other apps, keeps its secret
private, and is restarted by the agent when it dies.

The worker against a real SuperNode and SuperLink is exercised by the deployment integration tests.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fixtures.deadlines import deadline
from fixtures.synthetic import write_npz
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode, SubStatus

from fedward.client.hospital import executor
from fedward.client.hospital.clientapp import app as client_app
from fedward.client.hospital.executor import TaskLoop, write_secret
from fedward.client.hospital.failure import HospitalError
from fedward.client.hospital.run_cache import forget_runs
from fedward.client.hospital.worker_process import WorkerProcess
from fedward.common.choices import Task
from fedward.common.config import RunConfig, RunSpec
from fedward.common.schema import DatasetSchema

SCHEMA = DatasetSchema(Task.BINARY, ("a", "b"), 1)


def _context(data: Path) -> Context:
    cfg = RunConfig.from_mapping({"data": {"dataset": "tinymnist"}, "federation": {"rounds": 2}})
    return Context(
        run_id=1, node_id=7, node_config={"data-dir": str(data)}, state=RecordDict(),
        run_config=RunSpec(cfg, SCHEMA).to_flower(),
    )  # fmt: skip


def _query() -> Message:
    content = RecordDict({"config": ConfigRecord({"version": "0"})})
    return Message(content=content, dst_node_id=7, message_type=MessageType.QUERY)


class NoHeartbeat:
    """No SuperNode to beat to."""

    is_running = False

    def __init__(self, beat: object) -> None:
        pass

    def start(self) -> None:
        pass


@dataclass
class FakeRuntime:
    """Stands in for the SuperNode's Runtime API: hands out one task, records what comes back."""

    message: Message
    context: Context
    fab_id: str = "fedward/fedward-run"
    pushed: list[Message] = field(default_factory=list)
    status: list[tuple[str, str]] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        run = type("Run", (), {"run_id": 1, "fab_id": self.fab_id})()
        monkeypatch.setattr(executor, "HeartbeatSender", NoHeartbeat)
        monkeypatch.setattr(executor, "pull_task_input", lambda client: (self.message, self.context, run))
        monkeypatch.setattr(executor, "push_message", lambda client, reply, context: self.pushed.append(reply))
        monkeypatch.setattr(
            executor,
            "push_task_output",
            lambda client, context, sub_status, details: self.status.append((sub_status, details)),
        )


@pytest.fixture
def hospital(tmp_path: Path) -> Path:
    forget_runs()
    return write_npz(tmp_path / "st-olav" / "tinymnist.npz", sizes=(64, 16, 0)).parent


def _loop(app: Any = None) -> TaskLoop:
    return TaskLoop("127.0.0.1:1", b"s" * 32, app=app or (lambda m, c: client_app(message=m, context=c)))


def test_a_task_gets_the_reply_of_fedwards_clientapp(hospital: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = FakeRuntime(_query(), _context(hospital))
    runtime.install(monkeypatch)
    _loop().serve("token")
    expected = client_app(message=_query(), context=_context(hospital))
    (reply,) = runtime.pushed
    assert not reply.has_error()
    assert dict(reply.content["site"]) == dict(expected.content["site"])
    assert runtime.status == [(SubStatus.COMPLETED, "")]


def test_a_failing_handler_replies_with_its_text_and_the_task_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = FakeRuntime(_query(), _context(tmp_path / "nowhere"))
    runtime.install(monkeypatch)
    with pytest.raises(HospitalError, match="does not exist"):
        client_app(message=_query(), context=_context(tmp_path / "nowhere"))
    _loop().serve("token")
    (reply,) = runtime.pushed
    assert reply.has_error() and "does not exist" in reply.error.reason


def test_an_unexpected_exception_replies_with_its_type_only(hospital: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = FakeRuntime(_query(), _context(hospital))
    runtime.install(monkeypatch)

    def broken(message: Message, context: Context) -> Message:
        raise ValueError("patient 0042 in /data/secret.dcm")

    _loop(broken).serve("token")
    (reply,) = runtime.pushed
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "ValueError" in reply.error.reason and "0042" not in reply.error.reason
    assert runtime.status[0][0] == SubStatus.FAILED


def test_a_run_of_another_app_is_refused(hospital: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = FakeRuntime(_query(), _context(hospital), fab_id="mallory/exfiltrate")
    runtime.install(monkeypatch)
    called: list[Message] = []
    _loop(lambda m, c: called.append(m) or m).serve("token")
    (reply,) = runtime.pushed
    assert not called
    assert reply.has_error() and "fedward's ClientApp only" in reply.error.reason


def test_the_secret_is_private_and_a_shared_folder_is_refused(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    secret = write_secret(private)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_bytes()) == 32
    assert write_secret(private).read_bytes() != b""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    with pytest.raises(HospitalError, match="open to other users"):
        write_secret(shared)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess("127.0.0.1:9", tmp_path / "private")  # no SuperNode there: it waits
    process.start()
    yield process
    process.stop()


def test_a_killed_worker_is_restarted(worker: WorkerProcess) -> None:
    first = worker.process
    assert first is not None and first.poll() is None
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=deadline(30))
    ends = time.monotonic() + deadline(180)
    while worker.restarts < 1 and time.monotonic() < ends:
        time.sleep(0.2)
    assert worker.restarts == 1 and worker.process is not first
    assert worker.process is not None and worker.process.poll() is None
