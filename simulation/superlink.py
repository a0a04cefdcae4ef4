"""A private Flower SuperLink in simulation mode, owned by one ``fedward simulate``.

This is what ``flwr run`` does with its ``local`` connection, made explicit so that a
simulation never touches the user's ``~/.flwr`` nor a SuperLink someone else started:

* ``flower-superlink --simulation`` on a free loopback port (plain HTTP on 127.0.0.1
  only: nothing leaves the machine), its log in the run directory;
* a fresh ``FLWR_HOME`` in a temporary folder holding the connection;
* telemetry, update checks and runtime dependency installation off;
* runs submitted and followed with the ``flwr`` CLI (``flwr run``, ``flwr log``,
  ``flwr list``, ``flwr stop``), Flower's supported interface;
* on exit the SuperLink's whole process group (simulation process, Ray workers) is
  terminated, then killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from fedward.common.errors import SimulationError

log = logging.getLogger(__name__)

CONNECTION = "fedward-sim"
STARTUP_TIMEOUT_S = 60.0


def quiet_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower and Ray processes: no telemetry, no update checks, offline.

    Also puts this interpreter's ``bin`` folder first on ``PATH`` so that Flower finds
    ``flwr-simulation`` even when the virtual environment is not activated.
    """
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            # Ray's future default; hospitals with no GPU share are put on the CPU by the
            # ClientApp itself (see fedward.client.app), so this only silences a warning.
            "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
            "RAY_DEDUP_LOGS": "0",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str:
    """Path of a console script installed beside this interpreter (or on PATH)."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise SimulationError(f"{name} is not installed; reinstall fedward (it depends on flwr[simulation])")
    return found


class LocalSimulationLink:
    """Context manager running a private simulation SuperLink.

    Args:
        log_dir: folder for ``superlink.log``.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="fedward-flower-"))
        self.env = quiet_environment()
        self.env["FLWR_HOME"] = str(self.home)
        self.process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalSimulationLink:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n',
            encoding="utf-8",
        )
        command = [
            tool("flower-superlink"),
            "--simulation",
            "--insecure",
            "--isolation",
            "subprocess",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
            "--log-file",
            str(self.log_dir / "superlink.log"),
        ]
        self.process = subprocess.Popen(
            command,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_healthy()
        log.info("simulation SuperLink on 127.0.0.1:%d (pid %d)", self.port, self.process.pid)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the SuperLink and everything it started; remove the temporary FLWR_HOME."""
        if self.process is not None and self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self.process is not None:
            _signal_group(self.process, signal.SIGKILL)  # stragglers in the group (Ray workers)
        shutil.rmtree(self.home, ignore_errors=True)

    def _wait_healthy(self) -> None:
        if self.process is None:
            raise SimulationError("the simulation SuperLink was not started")
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SimulationError(
                    f"the simulation SuperLink exited with code {self.process.returncode}; "
                    f"see {self.log_dir / 'superlink.log'}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.close()
        raise SimulationError(f"the simulation SuperLink did not start within {STARTUP_TIMEOUT_S:.0f} s")

    # ------------------------------------------------------------------ flwr CLI
    def flwr(self, *args: str, timeout: float = 120.0) -> str:
        """Run ``flwr <args>`` against this SuperLink and return its stdout.

        Raises:
            SimulationError: if the command fails.
        """
        result = subprocess.run(
            [tool("flwr"), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise SimulationError(f"flwr {args[0]} failed: {detail[-1] if detail else result.returncode}")
        return result.stdout

    def submit(self, app_dir: Path, num_supernodes: int, client_cpus: float, client_gpus: float) -> int:
        """Start a run of the app in ``app_dir`` on ``num_supernodes`` simulated hospitals.

        Returns:
            The Flower run id.
        """
        federation = (
            f"num-supernodes={num_supernodes} client-resources-num-cpus={client_cpus:g} "
            f"client-resources-num-gpus={client_gpus:g}"
        )
        out = self.flwr("run", str(app_dir), CONNECTION, "--federation-config", federation, "--format", "json")
        payload = _json_tail(out)
        if not payload.get("success") or payload.get("run-id") is None:
            raise SimulationError(f"Flower did not start the run: {out.strip()[:300]}")
        return int(payload["run-id"])

    def stream_logs(self, run_id: int, target: Path) -> subprocess.Popen[bytes]:
        """Follow the run's log into ``target``; the process ends when the run ends."""
        handle = open(target, "ab")  # noqa: SIM115 - owned by the child process's lifetime
        return subprocess.Popen(
            [tool("flwr"), "log", str(run_id), CONNECTION, "--stream"],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )

    def run_status(self, run_id: int) -> str:
        """Flower's status of a run, e.g. ``finished:completed``, ``finished:failed``, ``running``."""
        payload = _json_tail(self.flwr("list", CONNECTION, "--run-id", str(run_id), "--format", "json"))
        runs = payload.get("runs") or []
        return str(runs[0].get("status", "unknown")) if runs else "unknown"

    def stop(self, run_id: int) -> None:
        """Ask Flower to stop a run (best effort)."""
        with contextlib.suppress(SimulationError, subprocess.TimeoutExpired):
            self.flwr("stop", str(run_id), CONNECTION, timeout=30)


def _json_tail(text: str) -> dict[str, Any]:
    """The JSON object in a ``flwr --format json`` output (ignoring lines before it)."""
    start = text.find("{")
    if start < 0:
        return {}
    try:
        value = json.loads(text[start:])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
