"""A reaper that ends everything a Flower process started, even in other process groups.

``python -m fedward.common.flower.reaper -- <command...>`` runs ``command`` as its child
and, every :data:`SNAPSHOT_S`, notes every process below it (Linux ``/proc``: pid, start
time, process group). When the command exits, or the reaper gets SIGTERM, SIGINT or
SIGHUP — which is what the kernel sends it when the fedward process that started it dies,
even by SIGKILL (:func:`~fedward.common.flower.processes.tied_to_parent`) — it sends the
command SIGTERM, waits up to :data:`GRACE_S`, then SIGKILLs every process it noted that
still runs, together with the process group each one leads.

Why: Flower's simulation process (``flwr-simulation``) makes itself a process-group leader
for Ray (``ray._private.services.start_reaper``), so ending the SuperLink's group misses it
and Ray's raylet, GCS and workers; they are left to Flower's parent-PID watch and Ray's
fate sharing, which on a loaded machine let them outlive a killed ``fedward simulate`` by
minutes while its ServerApp kept the run's lock. Used by the simulation SuperLink
(:mod:`fedward.simulation.local_link`) and the coordinator's SuperLink
(:mod:`fedward.server.coordinator.superlink`).

A noted process is only signalled while its start time is the one noted (no pid reuse),
and only groups that a noted process leads are signalled (never the group of whoever
started fedward). Imports nothing but the standard library: it starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SNAPSHOT_S = 0.5
"""Seconds between two snapshots of the processes below the command."""

GRACE_S = 8.0
"""Seconds the command gets to stop after SIGTERM before everything below it is SIGKILLed
(below :func:`~fedward.common.flower.processes.stop_group`'s 15 s)."""

PROC = Path("/proc")

Noted = dict[int, tuple[str, int]]
"""pid -> (start time in clock ticks since boot, process group id)."""


def _stat(pid: int) -> tuple[int, str, int] | None:
    """``(parent pid, start time, process group)`` of ``pid`` from ``/proc/<pid>/stat``, or None."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    return int(fields[1]), fields[19], int(fields[2])  # ppid, starttime, pgrp (proc(5))


def descendants(root: int) -> Noted:
    """Every process below ``root`` now, with its start time and process group."""
    children: dict[int, list[int]] = {}
    info: Noted = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
            info[int(entry.name)] = (stat[1], stat[2])
    found: Noted = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid in info and pid not in found:
            found[pid] = info[pid]
            stack.extend(children.get(pid, []))
    return found


def _same(pid: int, start: str) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] == start


def kill_noted(noted: Noted) -> None:
    """SIGKILL every noted process that still runs, and each process group it leads."""
    for pid, (start, group) in noted.items():
        if not _same(pid, start):
            continue  # gone, or its pid now belongs to another process
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group == pid:
                os.killpg(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)


class _StopError(Exception):
    """A stop signal arrived."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _StopError


def run(command: list[str]) -> int:
    """Run ``command`` under the reaper; return its exit code (``128 + signal`` if stopped)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    child = subprocess.Popen(command)
    noted: Noted = {}
    code: int | None = None
    try:
        while (code := child.poll()) is None:
            noted.update(descendants(os.getpid()))
            time.sleep(SNAPSHOT_S)
    except _StopError:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        noted.update(descendants(os.getpid()))
        child.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=GRACE_S)
        code = -signal.SIGTERM
    noted.update(descendants(os.getpid()))
    kill_noted(noted)
    return 128 - code if code < 0 else code  # a command killed by signal k: 128 + k, as a shell says


def command_under_reaper(command: list[str]) -> list[str]:
    """``command`` prefixed so that it runs under this reaper (Linux), or as it is elsewhere."""
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-m", "fedward.common.flower.reaper", "--", *command]


def main(argv: list[str]) -> int:
    """``reaper -- command...``; exits 2 on a missing command."""
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    if not argv:
        sys.stderr.write("usage: python -m fedward.common.flower.reaper -- command [args...]\n")
        return 2
    return run(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
