"""A fedward process killed outright (SIGKILL, the OOM killer) leaves none of its own processes behind.

Each entry point that starts long-lived processes — ``fedward simulate`` (a SuperLink, the
simulation's ``flwr log`` stream, Flower's simulation process and Ray), ``fedward server
start`` (the SuperLink and its ServerApp processes) and ``fedward client start`` (the
SuperNode) — is SIGKILLed alone, without a chance to clean up; the processes it started
must then end by itself (a generous deadline against hangs, not a speed target): every
process below it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fixtures.cli import ENV, fedward, fedward_cli
from fixtures.deadlines import deadline
from fixtures.deployment import wait_for
from fixtures.processes import unused_port
from fixtures.synthetic import write_npz

from fedward.common.flower.processes import free_port

psutil = pytest.importorskip("psutil")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(deadline(900))]

GONE_WITHIN_S = 180.0
"""How long the killed entry point's processes may take to notice and exit (a hang guard: Ray's
agents poll for their raylet's death, which takes a while on a loaded machine)."""


def _start(log: Path, *args: str) -> subprocess.Popen[bytes]:
    handle = open(log, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [fedward_cli(), *args], stdout=handle, stderr=subprocess.STDOUT, env=ENV, start_new_session=True
    )


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def _commands(processes: list[psutil.Process]) -> str:
    names = []
    for process in processes:
        try:
            names.append(" ".join(process.cmdline())[:120])
        except psutil.Error:
            continue
    return "\n".join(names)


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    return alive


def _kill_and_expect_no_orphans(entry: subprocess.Popen[bytes], started: list[psutil.Process]) -> None:
    """SIGKILL ``entry`` alone; every process in ``started`` must be gone within the deadline."""
    os.kill(entry.pid, signal.SIGKILL)
    entry.wait(timeout=30)
    with contextlib.suppress(AssertionError):  # reported below, naming what is left
        wait_for(lambda: not _alive(started), GONE_WITHIN_S, "the killed entry point's processes to end")
    left = _alive(started)
    for process in left:  # do not leave them to the next test either
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert not left, f"left behind:\n{_commands(left)}"


def _wait_for_children(entry: subprocess.Popen[bytes], log: Path, markers: tuple[str, ...]) -> list[psutil.Process]:
    def ready() -> list[psutil.Process] | None:
        if entry.poll() is not None:
            raise AssertionError(log.read_text()[-3000:])
        tree = _descendants(entry.pid)
        commands = _commands(tree)
        return tree if all(marker in commands for marker in markers) else None

    return wait_for(ready, 300, f"{', '.join(markers)} under fedward", interval=0.5)  # type: ignore[no-any-return]


def test_a_killed_simulation_leaves_no_process_behind(tmp_path: Path, real_data_dir: Path) -> None:
    """The SuperLink, ``flwr log --stream``, Flower's simulation process and Ray all end with it.

    ``flwr-simulation`` leads a process group of its own (Ray's driver does ``setpgrp``),
    so ending the SuperLink's group is not enough: the reaper the SuperLink runs under
    (:mod:`fedward.common.flower.reaper`) ends them.
    """
    entry = _start(
        tmp_path / "simulate.log", "simulate", "--data-dir", str(real_data_dir), "--hospitals", "2",
        "--rounds", "50", "--local-epochs", "1", "--seed", "0", "--output-dir", str(tmp_path / "runs"),
    )  # fmt: skip
    _wait_for_children(entry, tmp_path / "simulate.log", ("flower-superlink", "flwr log", "flwr-simulation", "raylet"))
    time.sleep(1.0)  # the reaper notes what runs below the SuperLink every 0.5 s
    _kill_and_expect_no_orphans(entry, _descendants(entry.pid))


def test_a_killed_agent_leaves_no_supernode_and_a_killed_coordinator_no_superlink(tmp_path: Path) -> None:
    certs, keys, state = tmp_path / "certs", tmp_path / "keys", tmp_path / "state"
    assert fedward("certs", "init", "--out", str(certs)).returncode == 0
    assert fedward("certs", "node", "h0", "--out", str(keys)).returncode == 0
    port = free_port()
    server = _start(
        tmp_path / "server.log", "server", "start", "--certs", str(certs), "--state", str(state),
        "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    try:
        link = _wait_for_children(server, tmp_path / "server.log", ("flower-superlink",))
        wait_for(lambda: (state / "coordinator.json").is_file(), 120, "the coordinator's state")
        registered = fedward("server", "register", "h0", str(keys / "h0.pub"), "--state", str(state), timeout=60)
        assert registered.returncode == 0, registered.stdout + registered.stderr
        agent = _start(
            tmp_path / "agent.log", "client", "start", "--superlink", f"127.0.0.1:{port}",
            "--ca", str(certs / "ca.crt"), "--key", str(keys / "h0.key"),
            "--data", str(write_npz(tmp_path / "hospital" / "site.npz").parent), "--port", str(unused_port()),
        )  # fmt: skip
        supernode = _wait_for_children(agent, tmp_path / "agent.log", ("fedward.client.hospital.supernode",))
        _kill_and_expect_no_orphans(agent, supernode)
        _kill_and_expect_no_orphans(server, link)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
