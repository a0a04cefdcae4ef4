"""The ``flwr`` command line, driven with a fedward-owned ``FLWR_HOME``.

``flwr`` is Flower's supported interface to a SuperLink's Control API: submitting runs,
listing and stopping them, streaming their logs, registering SuperNodes. fedward never
touches the user's ``~/.flwr``: every call gets ``FLWR_HOME`` pointing at a folder fedward
owns (a run's temporary folder in simulation, ``<state>/flwr-home`` on a coordinator),
whose ``config.toml`` names one connection. Replies are read with ``--format json``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fedward.common.errors import FedwardError
from fedward.common.flower.processes import quiet_environment, tied_to_parent, tool


class FlowerCliError(FedwardError):
    """A ``flwr`` command failed; the message carries Flower's own last line."""


@dataclass(frozen=True, slots=True)
class Connection:
    """A named SuperLink connection for ``$FLWR_HOME/config.toml``.

    Attributes:
        name: the connection's name (``[superlink.<name>]``).
        address: ``host:port`` of the SuperLink (its Control API).
        root_certificates: CA certificate that signed the SuperLink's (PEM); ``None``
            with ``insecure``.
        insecure: plain HTTP, for loopback simulation and explicit ``--insecure`` only.
    """

    name: str
    address: str
    root_certificates: Path | None = None
    insecure: bool = False

    def toml(self) -> str:
        """The ``config.toml`` text declaring this connection as the default."""
        lines = [f'[superlink]\ndefault = "{self.name}"\n', f"[superlink.{self.name}]", f'address = "{self.address}"']
        if self.insecure:
            lines.append("insecure = true")
        elif self.root_certificates is not None:
            lines.append(f'root-certificates = "{Path(self.root_certificates).resolve()}"')
        return "\n".join(lines) + "\n"


class FlwrCli:
    """Run ``flwr`` commands against one connection.

    Args:
        home: the ``FLWR_HOME`` folder (created; its ``config.toml`` is rewritten).
        connection: the SuperLink to talk to.
    """

    def __init__(self, home: Path, connection: Connection) -> None:
        self.home = Path(home)
        self.connection = connection
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.toml").write_text(connection.toml(), encoding="utf-8")
        self.env = quiet_environment()
        self.env["FLWR_HOME"] = str(self.home)

    # ------------------------------------------------------------------ plumbing
    def call(self, *args: str, timeout: float = 120.0) -> str:
        """Run ``flwr <args>`` and return its stdout.

        Raises:
            FlowerCliError: if it exits non-zero or does not finish within ``timeout`` seconds.
        """
        try:
            result = subprocess.run(
                [tool("flwr"), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise FlowerCliError(
                f"flwr {args[0]} got no answer from {self.connection.address} in {timeout:.0f} s"
            ) from None
        if result.returncode != 0:
            raise FlowerCliError(f"flwr {' '.join(args[:2])} failed: {_last_line(result.stdout, result.stderr)}")
        return result.stdout

    def call_json(self, *args: str, timeout: float = 120.0) -> dict[str, Any]:
        """Run ``flwr <args> --format json`` and return the reply object.

        Raises:
            FlowerCliError: if the command fails or Flower reports ``success: false``.
        """
        payload = json_tail(self.call(*args, "--format", "json", timeout=timeout))
        if payload.get("success") is False:
            raise FlowerCliError(f"flwr {' '.join(args[:2])} failed: {payload.get('error-message', payload)}")
        return payload

    # ------------------------------------------------------------------ runs
    def submit(self, app_dir: Path, *, federation_config: str | None = None, run_config: str | None = None) -> int:
        """Submit the app bundle in ``app_dir`` (``flwr run``) and return the run id.

        Raises:
            FlowerCliError: if Flower does not accept the run.
        """
        args = ["run", str(app_dir), self.connection.name]
        if federation_config:
            args += ["--federation-config", federation_config]
        if run_config:
            args += ["--run-config", run_config]
        payload = self.call_json(*args)
        if payload.get("run-id") is None:
            raise FlowerCliError(f"Flower did not start the run: {payload}")
        return int(payload["run-id"])

    def runs(self, run_id: int | None = None) -> list[dict[str, Any]]:
        """Runs on the SuperLink (``flwr list``): dicts with ``run-id``, ``status``, times."""
        args = ["list", self.connection.name] + (["--run-id", str(run_id)] if run_id is not None else [])
        return list(self.call_json(*args).get("runs") or [])

    def run_status(self, run_id: int) -> str:
        """Flower's status of a run, e.g. ``finished:completed``, ``running``, or ``unknown``."""
        runs = self.runs(run_id)
        return str(runs[0].get("status", "unknown")) if runs else "unknown"

    def stop(self, run_id: int) -> None:
        """Stop a run (``flwr stop``).

        Raises:
            FlowerCliError: if Flower refuses (unknown run, already finished).
        """
        self.call("stop", str(run_id), self.connection.name, timeout=60)

    def log_process(
        self, run_id: int, *, follow: bool, stdout: IO[bytes] | int | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``flwr log`` for a run; with ``follow`` it streams until the run ends."""
        return subprocess.Popen(
            [tool("flwr"), "log", str(run_id), self.connection.name, "--stream" if follow else "--show"],
            env=self.env,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
            preexec_fn=tied_to_parent(),
        )

    # ------------------------------------------------------------------ SuperNodes
    def register_supernode(self, public_key: Path, name: str) -> int:
        """Register a SuperNode's public key (``flwr supernode register``); return its node id.

        Raises:
            FlowerCliError: if Flower refuses the key (e.g. already registered).
        """
        payload = self.call_json("supernode", "register", str(public_key), self.connection.name, "--name", name)
        if payload.get("node-id") is None:
            raise FlowerCliError(f"Flower did not register the key: {payload}")
        return int(payload["node-id"])

    def supernodes(self) -> list[dict[str, Any]]:
        """Registered SuperNodes: dicts with ``node-id``, ``status``, ``online-at``, ``offline-at``."""
        return list(self.call_json("supernode", "list", self.connection.name).get("nodes") or [])

    def unregister_supernode(self, node_id: int) -> None:
        """Unregister a SuperNode (``flwr supernode unregister``).

        Raises:
            FlowerCliError: if Flower does not know the node.
        """
        self.call("supernode", "unregister", str(node_id), self.connection.name, timeout=60)


def json_tail(text: str) -> dict[str, Any]:
    """The JSON object in a ``flwr --format json`` output (ignoring lines before it)."""
    start = text.find("{")
    if start < 0:
        return {}
    try:
        value = json.loads(text[start:])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _last_line(stdout: str, stderr: str) -> str:
    payload = json_tail(stdout)
    if payload.get("error-message"):
        return str(payload["error-message"]).strip().splitlines()[-1]
    lines = [line.strip() for line in (stderr + "\n" + stdout).splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
