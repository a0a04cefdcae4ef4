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
import logging
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from fedward.common.errors import SimulationError
from fedward.common.flower.flwr_cli import Connection, FlowerCliError, FlwrCli
from fedward.common.flower.processes import free_port, stop_group, tied_to_parent, tool
from fedward.common.flower.reaper import command_under_reaper

log = logging.getLogger(__name__)

CONNECTION = "fedward-sim"
STARTUP_TIMEOUT_S = 60.0


class LocalSimulationLink:
    """Context manager running a private simulation SuperLink.

    Args:
        log_dir: folder for ``superlink.log``.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="fedward-flower-"))
        self.cli = FlwrCli(self.home, Connection(CONNECTION, f"127.0.0.1:{self.port}", insecure=True))
        self.env = self.cli.env
        self.process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalSimulationLink:
        self.log_dir.mkdir(parents=True, exist_ok=True)
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
            command_under_reaper(command),  # ends flwr-simulation and Ray however fedward ends
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=tied_to_parent(),
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
        stop_group(self.process)  # the SuperLink, its simulation process and Ray workers
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
    def submit(self, app_dir: Path, num_supernodes: int, client_cpus: float, client_gpus: float) -> int:
        """Start a run of the app in ``app_dir`` on ``num_supernodes`` simulated hospitals.

        Returns:
            The Flower run id.

        Raises:
            SimulationError: if Flower does not accept the run.
        """
        federation = (
            f"num-supernodes={num_supernodes} client-resources-num-cpus={client_cpus:g} "
            f"client-resources-num-gpus={client_gpus:g}"
        )
        try:
            return self.cli.submit(app_dir, federation_config=federation)
        except FlowerCliError as err:
            raise SimulationError(str(err)) from None

    def stream_logs(self, run_id: int, target: Path) -> subprocess.Popen[bytes]:
        """Follow the run's log into ``target``; the process ends when the run ends."""
        handle = open(target, "ab")  # noqa: SIM115 - owned by the child process's lifetime
        return self.cli.log_process(run_id, follow=True, stdout=handle)

    def run_status(self, run_id: int) -> str:
        """Flower's status of a run, e.g. ``finished:completed``, ``finished:failed``, ``running``.

        Raises:
            SimulationError: if the SuperLink does not answer.
        """
        try:
            return self.cli.run_status(run_id)
        except FlowerCliError as err:
            raise SimulationError(str(err)) from None

    def stop(self, run_id: int) -> None:
        """Ask Flower to stop a run (best effort)."""
        with contextlib.suppress(FlowerCliError):
            self.cli.stop(run_id)
