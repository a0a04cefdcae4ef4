"""Starting and stopping Flower's processes the way a hospital needs them started.

Every Flower process fedward starts (SuperLink, SuperNode, the ``flwr`` CLI, simulation
workers) gets :func:`quiet_environment`: no telemetry, no update checks, no hub access.
Long-lived ones run in their own session (process group) so that :func:`stop_group`
ends them with everything they started (SuperExec, ServerApp/ClientApp processes, Ray
workers), and are tied to fedward's process (:func:`tied_to_parent`) so that a fedward
process killed outright (SIGKILL, the OOM killer) leaves none of them behind. What a
SuperLink starts in turn (``flwr-serverapp``, ``flwr-simulation`` and Ray, which lead
process groups of their own) is ended by the reaper it runs under
(:mod:`fedward.common.flower.reaper`); Flower's and Ray's own parent watches were seen to
let them outlive a killed simulation by minutes on a loaded machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fedward.common.errors import FedwardError

QUIET_VARIABLES: dict[str, str] = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray's future default; hospitals with no GPU share are put on the CPU by the
    # ClientApp itself (see fedward.client.hospital.clientapp), so this only silences a warning.
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "0",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
}


PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal the kernel sends a process when its parent dies (Linux, prctl(2))."""


class ToolMissingError(FedwardError):
    """A console script fedward runs (``flower-superlink``, ``flwr``...) is not installed."""


def quiet_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower and Ray processes: no telemetry, no update checks, no
    runtime dependency installation, offline hubs.

    Also puts this interpreter's ``bin`` folder first on ``PATH`` so that Flower finds
    ``flwr-simulation``, ``flwr-serverapp`` and ``flwr-clientapp`` even when the virtual
    environment is not activated.
    """
    env = dict(os.environ if base is None else base)
    env.update(QUIET_VARIABLES)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str:
    """Path of a console script installed beside this interpreter (or on ``PATH``).

    Raises:
        ToolMissingError: if it is installed nowhere.
    """
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise ToolMissingError(f"{name} is not installed; reinstall fedward (it depends on flwr[simulation])")
    return found


def tied_to_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen` that ends the child when this process dies.

    On Linux the child asks the kernel (``prctl(PR_SET_PDEATHSIG)``, prctl(2)) to be sent
    ``sig`` when its parent dies, and sends it to itself if the parent died before that
    request. Elsewhere there is no such request and ``None`` is returned (the child's own
    session still lets :func:`stop_group` end it while fedward runs).

    The kernel's "parent" is the *thread* that started the child: call ``Popen`` from a
    thread that lives as long as the child (fedward starts them from the main thread).

    Args:
        sig: the signal; SIGTERM lets Flower's processes stop their own children.

    Returns:
        The function to pass as ``preexec_fn``, or ``None`` off Linux.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: the child only calls it
    parent = os.getpid()

    def tie() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), sig)

    return tie


def signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``process`` (started with ``start_new_session``)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def stop_group(process: subprocess.Popen[bytes] | None, grace_s: float = 15.0) -> int | None:
    """Terminate a process group: SIGTERM, wait ``grace_s`` seconds, then SIGKILL the group.

    The group is killed at the end even when its leader exited on SIGTERM, so that no
    straggler (a ServerApp, a Ray worker) outlives it.

    Returns:
        The leader's exit code, or ``None`` if there was no process.
    """
    if process is None:
        return None
    if process.poll() is None:
        signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            process.wait(timeout=10)
    signal_group(process, signal.SIGKILL)
    return process.returncode
