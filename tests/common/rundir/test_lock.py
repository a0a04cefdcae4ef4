"""One ServerApp per run directory: the lock is held while running and freed however the process ends."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedward.common.rundir.lock import LOCK_FILE, RunBusyError, RunLock, check_not_running

HOLDER = """
import sys, time
from pathlib import Path
from fedward.common.rundir.lock import RunLock
lock = RunLock(Path(sys.argv[1]))
lock.acquire()
sys.stdout.write("locked\\n")
sys.stdout.flush()
time.sleep(120)
"""


def test_a_live_holder_makes_the_run_busy_and_sigkill_frees_it(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunBusyError, match=rf"in use by a running ServerApp \(pid {holder.pid}\)"):
            check_not_running(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    deadline = time.monotonic() + 10
    while True:  # the kernel frees the lock with the process
        try:
            check_not_running(tmp_path)
            break
        except RunBusyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_lock_is_exclusive_within_a_process_too(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        with pytest.raises(RunBusyError):
            RunLock(tmp_path).acquire()
        assert (tmp_path / LOCK_FILE).read_text().strip().isdigit()
    with RunLock(tmp_path):
        pass
