"""A coordinator's state folder: where its SuperLink database, hospital roster, runs and logs live.

::

    <state>/state.db            Flower's database: runs and registered SuperNodes
    <state>/coordinator.json    where this SuperLink listens and how to reach it (for later commands)
    <state>/hospitals.json      hospital name -> node id and key fingerprint (the roster)
    <state>/flwr-home/          FLWR_HOME for the flwr CLI (connection "fedward")
    <state>/runs/               one run directory per run (metrics, models, model card)
    <state>/logs/superlink.log  the SuperLink's log

The SuperLink passes the runs folder and the state folder to its ServerApps in
:data:`RUNS_DIR_ENV` and :data:`STATE_DIR_ENV`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fedward.common.errors import FedwardError
from fedward.common.fileio import read_json_object
from fedward.common.flower.flwr_cli import Connection, FlwrCli

CONNECTION = "fedward"
RUNS_DIR_ENV = "FEDWARD_RUNS_DIR"
STATE_DIR_ENV = "FEDWARD_STATE_DIR"


class CoordinatorError(FedwardError):
    """The coordinator cannot start, or its state folder is not usable."""


@dataclass(frozen=True, slots=True)
class CoordinatorState:
    """Paths inside a coordinator's state folder."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "state.db"

    @property
    def endpoint_file(self) -> Path:
        return self.root / "coordinator.json"

    @property
    def hospitals_file(self) -> Path:
        return self.root / "hospitals.json"

    @property
    def flwr_home(self) -> Path:
        return self.root / "flwr-home"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def log_file(self) -> Path:
        return self.root / "logs" / "superlink.log"

    def create(self) -> None:
        """Create the folder tree (0700: it holds the hospital roster and all runs)."""
        for folder in (self.root, self.runs, self.log_file.parent, self.flwr_home):
            folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def connection(self) -> Connection:
        """How ``flwr`` reaches the SuperLink that last started on this state folder.

        Raises:
            CoordinatorError: if no SuperLink was ever started here.
        """
        try:
            endpoint = read_json_object(self.endpoint_file)
            address, ca = str(endpoint["address"]), endpoint.get("ca")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise CoordinatorError(
                f"{self.endpoint_file} not found: start the coordinator first "
                f"(fedward server start --state {self.root})"
            ) from None
        return Connection(CONNECTION, address, Path(ca) if ca else None, insecure=not ca)

    def flwr(self) -> FlwrCli:
        """The ``flwr`` CLI bound to this coordinator's SuperLink."""
        return FlwrCli(self.flwr_home, self.connection())
