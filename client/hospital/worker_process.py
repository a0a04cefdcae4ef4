"""Starting, watching and restarting the hospital's warm worker from the agent.

The worker (:mod:`fedward.client.hospital.worker`) serves the SuperNode's ClientApp tasks
(:mod:`fedward.client.hospital.executor`); it and the SuperNode share a SuperExec secret
kept in a folder only the agent's user can open (mode 0700, the file 0600). The worker
runs in its own session, tied to the agent
(:func:`~fedward.common.flower.processes.tied_to_parent`), and a watcher thread restarts it
when it exits: the task it was serving stops sending heartbeats and the SuperNode replies
with a failure, the next message is served by the fresh worker.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fedward.client.hospital.executor import write_secret
from fedward.client.hospital.failure import HospitalError
from fedward.client.hospital.worker import READY_LINE
from fedward.common.errors import FedwardError
from fedward.common.flower.processes import quiet_environment, stop_group, tied_to_parent

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 300.0
"""Longest wait for a starting worker (imports of torch and MONAI on a slow disk), seconds."""

WATCH_INTERVAL_S = 1.0
"""How often the watcher checks that the worker is alive, seconds."""


FOLDER_PREFIX = "fedward-worker-"
"""Temporary secret folders are ``<tmp>/fedward-worker-<agent pid>-<random>``."""


def remove_stale_folders(tmp: Path) -> list[Path]:
    """Remove this user's secret folders whose agent is gone (an agent killed outright leaves its own).

    Args:
        tmp: the temporary folder agents create theirs in.

    Returns:
        The folders removed.
    """
    removed = []
    for folder in tmp.glob(f"{FOLDER_PREFIX}*-*"):
        pid_text = folder.name.removeprefix(FOLDER_PREFIX).split("-", 1)[0]
        try:
            if not pid_text.isdigit() or folder.stat().st_uid != os.getuid() or _alive(int(pid_text)):
                continue
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerStartError(FedwardError):
    """The worker did not come up; the message says what it printed last."""


class WorkerProcess:
    """The agent's warm worker: start it, keep it running, stop it.

    Args:
        runtime_api: the SuperNode's Runtime API address, ``127.0.0.1:<port>``.
        folder: private folder for the SuperExec secret; ``None``: a fresh temporary folder
            (mode 0700), removed by :meth:`stop` (and, if the agent is killed outright, by
            the next agent of this user: :func:`remove_stale_folders`).

    Raises:
        WorkerStartError: if ``folder`` can be opened by other users.
    """

    def __init__(self, runtime_api: str, folder: Path | None = None) -> None:
        self.runtime_api = runtime_api
        self._own_folder = folder is None
        if folder is None:
            remove_stale_folders(Path(tempfile.gettempdir()))
            folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-"))
        self.folder = folder
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.secret_file = write_secret(self.folder)
        except HospitalError as err:
            raise WorkerStartError(str(err)) from None
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker and wait until it is warm; then watch it.

        Raises:
            WorkerStartError: if it exits or stays silent for :data:`READY_TIMEOUT_S`.
        """
        self._launch()
        self._watcher = threading.Thread(target=self._watch, name="fedward-worker-watch", daemon=True)
        self._watcher.start()

    def _launch(self) -> None:
        command = [sys.executable, "-m", "fedward.client.hospital.worker", "--runtime-api", self.runtime_api]
        command += ["--secret-file", str(self.secret_file)]
        process = subprocess.Popen(
            command,
            env=quiet_environment(),
            stdout=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=tied_to_parent(),
        )
        self.process = process
        ready = threading.Event()
        threading.Thread(target=_relay, args=(process, ready), daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.wait(0.2) and process.poll() is None and time.monotonic() < deadline:
            continue
        if not ready.is_set():
            stop_group(process, grace_s=5)
            raise WorkerStartError(
                f"the hospital's worker did not start (exit code {process.returncode}); see the lines above"
            )
        log.info("hospital worker ready (pid %d)", process.pid)

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_INTERVAL_S):
            process = self.process
            if process is None or process.poll() is None:
                continue
            log.warning("the hospital's worker exited with code %s; restarting it", process.returncode)
            stop_group(process, grace_s=1)  # anything it started
            try:
                self._launch()
                self.restarts += 1
            except WorkerStartError as err:
                log.error("%s; trying again", err)
                time.sleep(5)

    def stop(self) -> None:
        """Stop watching, end the worker's process group and remove an own secret folder."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        stop_group(self.process, grace_s=10)
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def _relay(process: subprocess.Popen[bytes], ready: threading.Event) -> None:
    """Set ``ready`` on the worker's ready line; copy anything else it prints to stderr."""
    if process.stdout is None:  # pragma: no cover - always piped
        return
    for raw in process.stdout:
        line = raw.decode("utf-8", "replace").rstrip()
        if line == READY_LINE:
            ready.set()
            continue
        sys.stderr.write(line + "\n")
