"""The reaper ends everything below its command, even processes that left its process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.deadlines import deadline

from fedward.common.flower.reaper import command_under_reaper, descendants, main

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the reaper reads /proc")

# A command that starts a grandchild in a session of its own (as Ray's driver does), writes
# its pid, then waits; with "exit" it exits right after, leaving the grandchild behind.
SCRIPT = """
import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
open(sys.argv[1], "w").write(str(grandchild.pid))
time.sleep(1.5)  # the reaper notes the grandchild
if sys.argv[2] == "wait":
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] != "Z"


def _wait(condition: object, seconds: float) -> bool:
    ends = time.monotonic() + deadline(seconds)
    while time.monotonic() < ends:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("how", ["exit", "wait"])
def test_the_grandchild_in_its_own_session_ends_with_the_command(tmp_path: Path, how: str) -> None:
    pid_file = tmp_path / "grandchild.pid"
    reaper = subprocess.Popen(
        command_under_reaper([sys.executable, "-c", SCRIPT, str(pid_file), how]), start_new_session=True
    )
    try:
        assert _wait(lambda: pid_file.is_file() and pid_file.read_text(), 60), "the command did not start"
        grandchild = int(pid_file.read_text())
        assert grandchild in descendants(reaper.pid)
        time.sleep(1.0)
        if how == "wait":
            reaper.send_signal(signal.SIGTERM)  # what the kernel sends when fedward dies
        assert reaper.wait(timeout=deadline(60)) == (128 + signal.SIGTERM if how == "wait" else 0)
        assert _wait(lambda: not _alive(grandchild), 30), "the grandchild outlived the reaper"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(reaper.pid, signal.SIGKILL)


def test_a_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--"]) == 2
    assert "usage" in capsys.readouterr().err
