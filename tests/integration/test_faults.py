"""Faults under load on 127.0.0.1: ten hospital agents, twelve rounds, TLS, every component its own process.

One module-scoped scenario through the installed ``fedward`` command:

* a hospital's agent is SIGKILLed while a round runs (its SuperNode and worker end with it):
  that round completes with the other hospitals, the lost hospital is recorded as failed
  with a reason, and the agent, started again as a site's service manager would, trains
  in a later round;
* a straggler (the hospital's worker frozen with SIGSTOP past ``federation.round-timeout``)
  is left out of that round, recorded as failed, not waited for; once it thaws it trains
  again;
* the run completes all its rounds, nothing of a completed round lost;
* a second run with ``federation.min-hospitals`` above the hospitals still connected waits
  ``min-hospitals-wait`` seconds and stops cleanly, the reason in its model card;
* every process the scenario started is gone at the end.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fixtures.cli import fedward
from fixtures.deadlines import deadline
from fixtures.deployment import (
    Processes,
    hospitals_status,
    real_subset,
    register_hospitals,
    run_scenario,
    start_coordinator,
    start_run,
    wait_for,
)
from fixtures.processes import unused_port

from fedward.common.flower.processes import free_port

psutil = pytest.importorskip("psutil")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(deadline(3600))]

HOSPITALS = tuple(f"h{i}" for i in range(10))
KILLED, STRAGGLER = "h3", "h6"
ROUNDS = 12
ROUND_TIMEOUT_S = round(deadline(120))
"""A round's replies are waited for this long: far above a normal round here (a hang guard and
the straggler's limit), so only the frozen hospital misses it."""
SUBSET = {"train": 640, "val": 160, "test": 100}
RUN_TIMEOUT_S = 2400.0


@dataclass
class Outcome:
    run_dir: Path
    killed_in: int = 0
    frozen_in: int = 0
    stopped_dir: Path | None = None
    left_behind: set[str] = field(default_factory=set)


def rows(run_dir: Path, name: str) -> list[dict[str, Any]]:
    path = run_dir / "metrics" / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def current_round(run_dir: Path) -> int:
    """The round the hospitals are training: the last ``[ROUND k/N]`` the ServerApp logged (0 before round 1).

    Not the last round in ``metrics/server.jsonl``: with evaluation carried by training, a
    round is recorded when the next round's training replies bring its validation scores.
    """
    log = run_dir / "logs" / "server.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    return max((int(m) for m in re.findall(r"\[ROUND (\d+)/\d+\]", text)), default=0)


def failed_round(run_dir: Path, name: str, after: int) -> int:
    """The first round after ``after`` in which the ServerApp logged hospital ``name`` as failed to train (0: none)."""
    log = run_dir / "logs" / "server.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    pattern = rf"round (\d+): hospital {re.escape(name)} \(node \d+\) failed to train"
    return min((int(m) for m in re.findall(pattern, text) if int(m) > after), default=0)


def worker_of(agent: subprocess.Popen[bytes]) -> Any:
    """The agent's warm worker process."""
    for child in psutil.Process(agent.pid).children(recursive=True):
        if "fedward.client.hospital.worker" in " ".join(child.cmdline()):
            return child
    raise AssertionError(f"agent {agent.pid} has no worker")


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> Iterator[Outcome]:
    tmp = tmp_path_factory.mktemp("faults")
    outcome, left_behind = run_scenario(lambda processes: _scenario(tmp, real_data_dir, processes))
    outcome.left_behind = left_behind
    yield outcome


def _start_agent(processes: Processes, tmp: Path, superlink: str, index: int) -> subprocess.Popen[bytes]:
    name = HOSPITALS[index]
    return processes.start(
        tmp / f"{name}.log", "client", "start", "--superlink", superlink, "--ca", str(tmp / "certs" / "ca.crt"),
        "--key", str(tmp / "keys" / f"{name}.key"), "--data", str(tmp / "hospitals" / f"hospital-{index}"),
        "--dataset", "pneumoniamnist", "--port", str(unused_port()), "--threads", "1",
        "--cache-dir", str(tmp / "cache" / name),
    )  # fmt: skip


def _all_online(state: Path) -> bool:
    status = hospitals_status(state)
    return len(status) == len(HOSPITALS) and all(h.get("status") == "online" for h in status.values())


def _scenario(tmp: Path, real_data_dir: Path, processes: Processes) -> Outcome:
    state, port = tmp / "state", free_port()
    superlink = f"127.0.0.1:{port}"
    data_dir = real_subset(real_data_dir / "pneumoniamnist.npz", tmp / "data", SUBSET)
    exported = fedward(
        "data", "export", "--out", str(tmp / "hospitals"), "--data-dir", str(data_dir),
        "--hospitals", str(len(HOSPITALS)), "--partition", "iid", "--seed", "0",
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert fedward("certs", "init", "--out", str(tmp / "certs")).returncode == 0
    for name in HOSPITALS:
        assert fedward("certs", "node", name, "--out", str(tmp / "keys")).returncode == 0
    start_coordinator(
        processes, tmp / "server.log", state, "server", "start", "--certs", str(tmp / "certs"), "--state", str(state),
        "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    register_hospitals(state, tmp / "keys", HOSPITALS)
    agents = {name: _start_agent(processes, tmp, superlink, i) for i, name in enumerate(HOSPITALS)}
    wait_for(lambda: _all_online(state), 600, "ten online hospitals", interval=5)

    run_id = start_run(
        state, "--dataset", "pneumoniamnist", "--hospitals", str(len(HOSPITALS)), "--rounds", str(ROUNDS),
        "--seed", "0", "--local-epochs", "1", "--set", f"federation.round-timeout={ROUND_TIMEOUT_S}",
        "--set", "federation.min-hospitals=8", "--set", "federation.min-hospitals-wait=600",
    )  # fmt: skip
    run_dir = wait_for(lambda: list((state / "runs").glob(f"*-{run_id}")), 120, "the run directory")[0]

    # Round 3 is under way: the killed hospital's agent dies with everything it started.
    wait_for(lambda: current_round(run_dir) >= 3, RUN_TIMEOUT_S, "round 3", interval=0.5)
    before_kill = current_round(run_dir) - 1
    agents[KILLED].send_signal(signal.SIGKILL)
    agents[KILLED].wait(timeout=deadline(30))
    # The round it misses: the one under way, or the next if it had already answered.
    killed_in = wait_for(
        lambda: failed_round(run_dir, KILLED, before_kill), RUN_TIMEOUT_S, "a round without the killed hospital"
    )
    agents[KILLED] = _start_agent(processes, tmp, superlink, HOSPITALS.index(KILLED))

    # Once the restarted hospital trains again (a separate point: its agent starts, checks its
    # data and enrols, which can take several of these short rounds), the straggler's worker
    # freezes for longer than the round timeout.
    wait_for(
        lambda: current_round(run_dir) >= 6 and _trained_after(run_dir, KILLED, killed_in),
        RUN_TIMEOUT_S,
        "round 6 with the restarted hospital training again",
        interval=0.5,
    )
    before_freeze = current_round(run_dir) - 1
    assert before_freeze + 1 < ROUNDS, "the restarted hospital came back too late to freeze another"
    worker = worker_of(agents[STRAGGLER])
    worker.suspend()
    try:
        frozen_in = wait_for(
            lambda: failed_round(run_dir, STRAGGLER, before_freeze), RUN_TIMEOUT_S, "a round without the straggler"
        )
    finally:
        worker.resume()

    wait_for(
        lambda: json.loads((run_dir / "status.json").read_text())["state"] != "running",
        RUN_TIMEOUT_S,
        "the run to end",
        interval=2,
    )

    # Two hospitals leave; a run that needs all ten waits briefly, then stops cleanly.
    for name in ("h0", "h1"):
        processes.stop(agents.pop(name))
    stopped_id = start_run(
        state, "--dataset", "pneumoniamnist", "--hospitals", str(len(HOSPITALS)), "--rounds", "2",
        "--set", f"federation.min-hospitals={len(HOSPITALS)}", "--set", "federation.min-hospitals-wait=20",
    )  # fmt: skip
    stopped_dir = wait_for(
        lambda: [
            p.parent
            for p in (state / "runs").glob(f"*-{stopped_id}/status.json")
            if json.loads(p.read_text())["state"] != "running"
        ],
        600,
        "the run short of hospitals to stop",
        interval=2,
    )[0]
    for agent in agents.values():
        processes.stop(agent)
    return Outcome(run_dir=run_dir, killed_in=killed_in, frozen_in=frozen_in, stopped_dir=stopped_dir)


def _trained_after(run_dir: Path, name: str, rnd: int) -> bool:
    return any(
        r["hospital"] == name and r["round"] > rnd and r["phase"] == "train" for r in rows(run_dir, "hospitals.jsonl")
    )


def _phase(run_dir: Path, rnd: int, name: str) -> set[str]:
    return {r["phase"] for r in rows(run_dir, "hospitals.jsonl") if r["round"] == rnd and r["hospital"] == name}


def test_the_run_completes_every_round(faults: Outcome) -> None:
    status = json.loads((faults.run_dir / "status.json").read_text())
    assert status["state"] == "completed", status
    assert [r["round"] for r in rows(faults.run_dir, "server.jsonl")] == list(range(ROUNDS + 1))
    for rnd in range(1, ROUNDS + 1):
        trained = {r["hospital"] for r in rows(faults.run_dir, "hospitals.jsonl") if r["round"] == rnd}
        assert len(trained) >= 8, (rnd, trained)


def test_a_killed_hospital_is_recorded_as_failed_and_rejoins(faults: Outcome) -> None:
    rnd = faults.killed_in
    assert "train" not in _phase(faults.run_dir, rnd, KILLED)
    failed = [
        r for r in rows(faults.run_dir, "hospitals.jsonl")
        if r["round"] == rnd and r["hospital"] == KILLED and r["phase"] == "failed"
    ]  # fmt: skip
    assert failed and failed[0]["reason"], failed
    others = {
        r["hospital"] for r in rows(faults.run_dir, "hospitals.jsonl") if r["round"] == rnd and r["phase"] == "train"
    }
    assert others == set(HOSPITALS) - {KILLED}
    assert any("train" in _phase(faults.run_dir, later, KILLED) for later in range(rnd + 1, ROUNDS + 1))


def test_a_straggler_is_left_out_of_its_round_not_waited_for(faults: Outcome) -> None:
    rnd = faults.frozen_in
    # Its validation of that round's model may come with the next round's training, once it thawed.
    assert _phase(faults.run_dir, rnd, STRAGGLER) - {"evaluate"} == {"failed"}
    server = {r["round"]: r for r in rows(faults.run_dir, "server.jsonl")}
    assert server[rnd]["hospitals-trained"] == len(HOSPITALS) - 1
    assert server[rnd]["hospitals-failed"] == 1
    assert any("train" in _phase(faults.run_dir, later, STRAGGLER) for later in range(rnd + 1, ROUNDS + 1))


def test_too_few_hospitals_stop_the_run_cleanly_with_the_reason(faults: Outcome) -> None:
    assert faults.stopped_dir is not None
    status = json.loads((faults.stopped_dir / "status.json").read_text())
    assert status["state"] == "stopped", status
    card = json.loads((faults.stopped_dir / "model_card.json").read_text())
    assert "min-hospitals" in json.dumps(card["run"]), card["run"]


def test_every_process_is_gone_at_the_end(faults: Outcome) -> None:
    assert not faults.left_behind
