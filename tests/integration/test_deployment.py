"""A real deployment on 127.0.0.1: every component a separate process, talking over TLS.

One module-scoped scenario, through the installed ``fedward`` command only:
``certs init`` -> ``server start`` -> three hospitals registered -> three ``client start``
on DICOM folders made by ``data export`` -> ``run start`` with 2 rounds -> the run
finishes and the coordinator's run directory holds both rounds from all three hospitals.
Around it: a never-registered key is refused, an agent without TLS and an agent trusting
another CA fail with clear messages, a coordinator without certificates refuses to start,
plain connections to every port the coordinator listens on get no application data; a
third run (the first one's settings) is killed with SIGKILL with the whole coordinator in
round 2, the coordinator restarts, the agents reconnect by themselves, ``fedward run
resume`` continues the run from its checkpoint and it ends with exactly the first run's
model. Every process started here is stopped in
a ``finally``, pass or fail, and the test checks none is left.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fixtures.cli import fedward
from fixtures.deadlines import deadline
from fixtures.deployment import (
    Processes,
    finished_run,
    hospitals_status,
    real_subset,
    register_hospitals,
    run_scenario,
    start_coordinator,
    start_run,
    wait_for,
)
from fixtures.processes import kill_tree, unused_port
from fixtures.weights import weights_digest

from fedward.common.flower.processes import free_port

psutil = pytest.importorskip("psutil")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(deadline(2400))]

HOSPITALS = ("h0", "h1", "h2")
RUN_TIMEOUT_S = 900.0
"""A hang guard for one run, not a performance target (benchmarks/deployment_chain.py times runs)."""
SUBSET = {"train": 960, "val": 160, "test": 200}
RUN_SETTINGS = (
    "--dataset", "pneumoniamnist", "--hospitals", "3", "--rounds", "2", "--seed", "0", "--local-epochs", "1",
)  # fmt: skip
"""The first run and the run killed and resumed: the same settings, so the same model."""


def listening_ports(root_pid: int) -> set[int]:
    """TCP ports in LISTEN state held by ``root_pid`` or any of its descendants."""
    try:
        root = psutil.Process(root_pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return set()
    ports = set()
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    ports.add(conn.laddr.port)
    return ports


def plain_reply(port: int) -> bytes:
    """What a plain-text client gets back after sending HTTP/1.1 and HTTP/2 requests."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := sock.recv(4096):
                chunks.append(chunk)
        return b"".join(chunks)


def checkpointed_round(run_dir: Path) -> int:
    from fedward.common.rundir.checkpoint import load_checkpoint

    try:
        return load_checkpoint(run_dir).server_round
    except Exception:
        return -1


@dataclass
class Outcome:
    tmp: Path
    state: Path
    run_id: int
    run_dir: Path
    failed_agents: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> (exit code, output)
    stopped_status: dict[str, object] = field(default_factory=dict)
    no_certs: subprocess.CompletedProcess[str] | None = None
    plain_replies: dict[int, bytes] = field(default_factory=dict)
    registered_status: dict[str, dict[str, str]] = field(default_factory=dict)
    after_restart: dict[str, dict[str, str]] = field(default_factory=dict)
    killed_round: int = -1
    resumed_dir: Path | None = None
    resumed_id: int = 0
    exit_codes: dict[str, int] = field(default_factory=dict)
    left_behind: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> Iterator[Outcome]:
    tmp = tmp_path_factory.mktemp("deploy")
    outcome, left_behind = run_scenario(lambda processes: _scenario(tmp, real_data_dir, processes))
    outcome.left_behind = left_behind
    yield outcome


def _scenario(tmp: Path, real_data_dir: Path, processes: Processes) -> Outcome:
    certs, keys, state = tmp / "certs", tmp / "keys", tmp / "state"
    # Real chest X-rays, a fifth of them: the processes and protocol are what is tested here.
    data_dir = real_subset(real_data_dir / "pneumoniamnist.npz", tmp / "data", SUBSET)
    port = free_port()
    superlink = f"127.0.0.1:{port}"

    exported = fedward(
        "data", "export", "--out", str(tmp / "hospitals"), "--data-dir", str(data_dir),
        "--hospitals", "3", "--partition", "iid", "--seed", "0",
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert fedward("certs", "init", "--out", str(certs)).returncode == 0
    assert fedward("certs", "init", "--out", str(tmp / "other-ca")).returncode == 0
    for name in (*HOSPITALS, "rogue"):
        assert fedward("certs", "node", name, "--out", str(keys)).returncode == 0

    no_certs = fedward("server", "start", "--state", str(tmp / "nostate"), "--port", str(free_port()), timeout=60)

    server = start_coordinator(
        processes, tmp / "server.log", state, "server", "start", "--certs", str(certs), "--state", str(state),
        "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
    )  # fmt: skip

    register_hospitals(state, keys, HOSPITALS)
    registered = hospitals_status(state)

    agents = {}
    for index, name in enumerate(HOSPITALS):
        agents[name] = processes.start(
            tmp / f"{name}.log", "client", "start", "--superlink", superlink, "--ca", str(certs / "ca.crt"),
            "--key", str(keys / f"{name}.key"), "--data", str(tmp / "hospitals" / f"hospital-{index}"),
            "--dataset", "pneumoniamnist", "--port", str(unused_port()), "--threads", "1",
            "--cache-dir", str(tmp / "cache" / name),
        )  # fmt: skip
    # Three agents that must fail, each with its own message, while the real ones connect.
    rogue_data = str(tmp / "hospitals" / "hospital-0")
    refused = {
        "rogue": processes.start(
            tmp / "rogue.log", "client", "start", "--superlink", superlink, "--ca", str(certs / "ca.crt"),
            "--key", str(keys / "rogue.key"), "--data", rogue_data, "--port", str(unused_port()),
        ),
        "insecure": processes.start(
            tmp / "insecure.log", "client", "start", "--superlink", superlink, "--insecure", "--name", "h9",
            "--data", rogue_data, "--port", str(unused_port()),
        ),
        "wrong-ca": processes.start(
            tmp / "wrong-ca.log", "client", "start", "--superlink", superlink,
            "--ca", str(tmp / "other-ca" / "ca.crt"), "--key", str(keys / "h0.key"), "--data", rogue_data,
            "--port", str(unused_port()),
        ),
    }  # fmt: skip
    plain = {p: plain_reply(p) for p in listening_ports(server.pid)}

    wait_for(
        lambda: all(h.get("status") == "online" for h in hospitals_status(state).values()),
        180,
        "three online hospitals",
        interval=3,
    )
    run_id = start_run(state, *RUN_SETTINGS)
    row = wait_for(lambda: finished_run(state, run_id), RUN_TIMEOUT_S, f"run {run_id} to finish", interval=5)
    assert row["flower-status"] == "finished:completed" and row["status"] == "completed", row
    run_dir = Path(row["path"])
    failed_agents = {}
    for name, process in refused.items():
        code = process.wait(timeout=120)
        failed_agents[name] = (code, (tmp / f"{name}.log").read_text(errors="replace"))

    # A second run is stopped as soon as its ServerApp has written its run directory.
    stopped_id = start_run(state, "--hospitals", "3", "--rounds", "3", "--local-epochs", "1")
    wait_for(lambda: list((state / "runs").glob(f"*-{stopped_id}/status.json")), 120, "the second run to start")
    stop = fedward("run", "stop", str(stopped_id), "--state", str(state), timeout=60)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    stopped_status = wait_for(
        lambda: [
            status
            for path in (state / "runs").glob(f"*-{stopped_id}/status.json")
            if (status := json.loads(path.read_text()))["state"] != "running"
        ],
        60,
        "the stopped run's directory to say so",
    )[0]

    # A third run with the first one's settings; the whole coordinator dies (SIGKILL) in round 2.
    third_id = start_run(state, *RUN_SETTINGS)
    third_dir = wait_for(
        lambda: [p.parent for p in (state / "runs").glob(f"*-{third_id}/checkpoint.safetensors")
                 if checkpointed_round(p.parent) >= 1],
        RUN_TIMEOUT_S, "the third run to checkpoint round 1", interval=0.3,
    )[0]  # fmt: skip
    kill_tree(server.pid)
    killed_round = checkpointed_round(third_dir)

    # The coordinator restarts on the same state folder; the agents reconnect by themselves.
    exit_codes = {}
    server = processes.start(
        tmp / "server-2.log", "server", "start", "--certs", str(certs), "--state", str(state),
        "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    after_restart = wait_for(
        lambda: (s := hospitals_status(state)) and all(h.get("status") == "online" for h in s.values()) and s,
        120,
        "the agents to reconnect after the restart",
        interval=3,
    )
    resumed_id = start_run(state, str(third_id), command="resume")
    wait_for(
        lambda: json.loads((third_dir / "status.json").read_text())["state"] != "running",
        RUN_TIMEOUT_S,
        "the resumed run to finish",
        interval=2,
    )
    for name, agent in agents.items():
        exit_codes[name] = processes.stop(agent)
    exit_codes["server-2"] = processes.stop(server)
    return Outcome(
        tmp=tmp,
        state=state,
        run_id=run_id,
        run_dir=run_dir,
        failed_agents=failed_agents,
        no_certs=no_certs,
        stopped_status=stopped_status,
        plain_replies=plain,
        registered_status=registered,
        after_restart=after_restart,
        exit_codes=exit_codes,
        killed_round=killed_round,
        resumed_dir=third_dir,
        resumed_id=resumed_id,
    )


def test_run_finishes_with_both_rounds_from_all_hospitals(deployment: Outcome) -> None:
    run_dir = deployment.run_dir
    assert run_dir.parent == (deployment.state / "runs").resolve()
    server_rows = [json.loads(line) for line in (run_dir / "metrics" / "server.jsonl").read_text().splitlines()]
    assert [r["round"] for r in server_rows] == [0, 1, 2]
    hospital_rows = [json.loads(line) for line in (run_dir / "metrics" / "hospitals.jsonl").read_text().splitlines()]
    seen = {(r["round"], r["phase"], r["hospital"]) for r in hospital_rows}
    assert seen == {(r, p, h) for r in (1, 2) for p in ("train", "evaluate") for h in HOSPITALS}
    card = json.loads((run_dir / "model_card.json").read_text())
    assert card["run"]["status"] == "completed"
    assert [h["name"] for h in card["hospitals"]] == list(HOSPITALS)
    assert (run_dir / "models" / "best.safetensors").is_file()


def test_unregistered_key_is_refused_and_left_out(deployment: Outcome) -> None:
    code, output = deployment.failed_agents["rogue"]
    assert code == 2
    assert "refused this hospital's key" in output
    assert "fedward server register rogue" in output
    rows = (deployment.run_dir / "metrics" / "hospitals.jsonl").read_text()
    assert "rogue" not in rows


def test_agent_without_tls_fails_clearly(deployment: Outcome) -> None:
    code, output = deployment.failed_agents["insecure"]
    assert code == 2
    assert "requires TLS" in output and "--ca" in output


def test_agent_trusting_another_ca_fails_clearly(deployment: Outcome) -> None:
    code, output = deployment.failed_agents["wrong-ca"]
    assert code == 2
    assert "does not vouch for" in output


def test_coordinator_without_certificates_refuses_to_start(deployment: Outcome) -> None:
    result = deployment.no_certs
    assert result is not None and result.returncode == 2
    assert "--certs" in result.stderr and "--insecure" in result.stderr


def test_plain_connections_get_no_application_data(deployment: Outcome) -> None:
    assert deployment.plain_replies, "the coordinator listens on no port"
    for port, reply in deployment.plain_replies.items():
        assert b"HTTP/" not in reply and b"{" not in reply, (port, reply[:200])
        # nothing, or a TLS alert record (content type 21)
        assert reply == b"" or reply[0] == 0x15, (port, reply[:50])


def test_a_stopped_run_says_so_in_its_run_directory(deployment: Outcome) -> None:
    assert deployment.stopped_status["state"] == "stopped"
    assert "stopped by the coordinator" in str(deployment.stopped_status["reason"])


def test_registration_persists_and_agents_reconnect_after_a_restart(deployment: Outcome) -> None:
    assert set(deployment.registered_status) == set(HOSPITALS)
    assert {h["status"] for h in deployment.registered_status.values()} == {"registered"}
    assert set(deployment.after_restart) == set(HOSPITALS)
    assert all(h["status"] == "online" and h["last-seen"] == "now" for h in deployment.after_restart.values())


def test_sigkill_mid_run_and_resume_ends_with_the_uninterrupted_model(deployment: Outcome) -> None:
    resumed = deployment.resumed_dir
    assert resumed is not None and deployment.killed_round == 1, "killed in round 2, after round 1's checkpoint"
    status = json.loads((resumed / "status.json").read_text())
    assert status["state"] == "completed" and [r["after-round"] for r in status["resumed"]] == [1]
    for name in ("round-001.safetensors", "round-002.safetensors"):
        assert weights_digest(resumed / "models" / name) == weights_digest(deployment.run_dir / "models" / name), name
    rows = [json.loads(line)["round"] for line in (resumed / "metrics" / "server.jsonl").read_text().splitlines()]
    assert rows == [0, 1, 2]
    card = json.loads((resumed / "model_card.json").read_text())
    assert card["run"]["resumed_after_rounds"] == [1]
    assert [h["name"] for h in card["hospitals"]] == list(HOSPITALS)


def test_every_process_stops_cleanly(deployment: Outcome) -> None:
    assert deployment.exit_codes == {"h0": 0, "h1": 0, "h2": 0, "server-2": 0}
    assert not deployment.left_behind
