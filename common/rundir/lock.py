"""One writer per run directory: an exclusive OS lock held while a run is being written.

A resumed run must never share its directory with a ServerApp that is still running
(``fedward run resume`` on a run that did not crash, or a second ``simulate --resume``).
The ServerApp holds an exclusive ``flock`` on ``<run_dir>/.lock`` for as long as it runs;
the operating system releases it when the process ends, however it ends (SIGKILL and
power loss included), so a crashed run never looks busy and a live one always does.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from types import TracebackType

from fedward.common.errors import FedwardError
from fedward.common.rundir.layout import LOCK_FILE

log = logging.getLogger(__name__)


class RunBusyError(FedwardError):
    """Another process is running this run directory."""


class RunLock:
    """Exclusive lock on a run directory (``<run_dir>/.lock``, holding the owner's PID).

    Use as a context manager, or :meth:`acquire` / :meth:`release`.

    Args:
        run_dir: the run directory (it must exist).
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting.

        Raises:
            RunBusyError: if another process holds it; the message names its PID.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunBusyError(
                f"run directory {self.run_dir.name} is in use by a running ServerApp (pid {owner}); "
                "stop that run first (fedward run stop RUN_ID, or Ctrl+C in its simulate)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the operating system also does when the process ends)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


def check_not_running(run_dir: Path) -> None:
    """Make sure no process is running ``run_dir`` right now.

    Raises:
        RunBusyError: if a ServerApp holds the run directory's lock.
    """
    with RunLock(run_dir):
        pass
