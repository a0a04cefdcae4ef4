"""An agent killed outright leaves its secret folder behind; the next agent of the user removes it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fedward.client.hospital.worker_process import FOLDER_PREFIX, remove_stale_folders


def test_only_folders_of_agents_that_are_gone_are_removed(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os, sys; sys.stdout.write(str(os.getpid()))"], capture_output=True, text=True
    )
    dead_pid = int(gone.stdout)
    stale = tmp_path / f"{FOLDER_PREFIX}{dead_pid}-abc"
    live = tmp_path / f"{FOLDER_PREFIX}{os.getpid()}-def"
    unrelated = tmp_path / f"{FOLDER_PREFIX}notapid-x"
    for folder in (stale, live, unrelated):
        folder.mkdir(mode=0o700)
        (folder / "superexec.secret").write_text("secret")
    assert remove_stale_folders(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and unrelated.exists()
