"""The coordinator: a Flower SuperLink with TLS, SuperNode authentication and a state folder.

``fedward server start`` runs ``flower-superlink`` with

* TLS on all its APIs (Fleet for hospitals, Control for ``flwr``/``fedward run``, the
  Runtime API its ServerApps use), served on one port, from ``fedward certs init`` files;
* SuperNode authentication: only hospitals whose public key was registered connect;
* a persistent SQLite state database (runs, registered SuperNodes) in the state folder;
* runtime dependency installation disabled and telemetry off;
* ServerApp run directories written under ``<state>/runs``.

The state folder's layout is :mod:`fedward.server.coordinator.state`.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from fedward.common.errors import ConfigError
from fedward.common.flower.processes import quiet_environment, stop_group, tied_to_parent, tool
from fedward.common.flower.reaper import command_under_reaper
from fedward.common.security.certs import FederationCerts
from fedward.common.security.tls import Address, SuperLinkConnectionError, probe
from fedward.server.coordinator.state import RUNS_DIR_ENV, STATE_DIR_ENV, CoordinatorError, CoordinatorState

log = logging.getLogger(__name__)

DEFAULT_PORT = 9092
"""The SuperLink's port for every API (Fleet, Control, ServerApp runtime)."""
STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class SuperLinkSettings:
    """How to run the SuperLink.

    Attributes:
        state: the state folder.
        certs: the ``fedward certs init`` folder; ``None`` only with ``insecure``.
        host: address to bind (``0.0.0.0`` for every interface).
        port: TCP port of all APIs.
        insecure: plain HTTP, no SuperNode authentication (development only).
        data_dir: folder with the dataset's ``.npz`` for server-side test evaluation.
    """

    state: CoordinatorState
    certs: FederationCerts | None
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    insecure: bool = False
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.certs is None and not self.insecure:
            raise ConfigError(
                "the coordinator needs TLS: pass --certs DIR (made by 'fedward certs init'), "
                "or --insecure to run without TLS and without hospital authentication (development only)"
            )
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"--port must be in 1..65535; got {self.port}")

    @property
    def local_address(self) -> Address:
        """The address local tools dial (loopback when bound to every interface)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return Address(host, self.port)


def check_certificates(certs: FederationCerts) -> None:
    """Check a certificate folder before the SuperLink uses it.

    Raises:
        CoordinatorError: missing files, a server key readable by others, a server
            certificate not issued by the CA, expired, or without ``127.0.0.1`` (the
            SuperLink's own SuperExec dials it) among its SANs.
    """
    missing = certs.missing_for_server()
    if missing:
        folder = certs.ca_cert.parent
        raise CoordinatorError(
            f"{folder} lacks {', '.join(missing)}: create it with 'fedward certs init --out {folder}'"
        )
    mode = stat.S_IMODE(certs.server_key.stat().st_mode)
    if mode & 0o077:
        raise CoordinatorError(f"{certs.server_key} is readable by others (mode {mode:o}); chmod 600 it")
    try:
        ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
        server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    except ValueError as err:
        raise CoordinatorError(f"{certs.ca_cert.parent}: not PEM certificates ({err})") from None
    try:
        server.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as err:
        raise CoordinatorError(
            f"{certs.server_cert} was not issued by {certs.ca_cert} ({type(err).__name__})"
        ) from None
    if server.not_valid_after_utc.timestamp() < time.time():
        raise CoordinatorError(f"{certs.server_cert} expired on {server.not_valid_after_utc:%Y-%m-%d}; renew it")
    try:
        sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        ips = set()
    if "127.0.0.1" not in ips:
        raise CoordinatorError(f"{certs.server_cert} must name 127.0.0.1; recreate it with 'fedward certs init'")


def superlink_command(settings: SuperLinkSettings) -> list[str]:
    """The ``flower-superlink`` command line for ``settings``."""
    command = [tool("flower-superlink")]
    if settings.insecure:
        command.append("--insecure")
    else:
        certs = settings.certs
        if certs is None:  # pragma: no cover - excluded by SuperLinkSettings
            raise ConfigError("certificates missing")
        command += [
            "--ssl-ca-certfile",
            str(certs.ca_cert.resolve()),
            "--ssl-certfile",
            str(certs.server_cert.resolve()),
            "--ssl-keyfile",
            str(certs.server_key.resolve()),
            "--enable-supernode-auth",
        ]
    command += [
        "--isolation",
        "subprocess",
        "--database",
        str(settings.state.database.resolve()),
        "--disable-runtime-dependency-installation",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--log-file",
        str(settings.state.log_file.resolve()),
    ]
    return command


class Coordinator:
    """A running SuperLink owned by this process.

    Args:
        settings: what to run.
    """

    def __init__(self, settings: SuperLinkSettings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the SuperLink and wait until it accepts (TLS) connections.

        Raises:
            CoordinatorError: if the port is taken, the certificates are unusable, or the
                SuperLink exits or does not answer within a minute.
        """
        settings = self.settings
        if settings.certs is not None and not settings.insecure:
            check_certificates(settings.certs)
        _check_port_free(settings.host, settings.port)
        settings.state.create()
        env = quiet_environment()
        env["FLWR_HOME"] = str(settings.state.flwr_home.resolve())
        env[RUNS_DIR_ENV] = str(settings.state.runs.resolve())
        env[STATE_DIR_ENV] = str(settings.state.root.resolve())
        if settings.data_dir is not None:
            env["FEDWARD_DATA_DIR"] = str(Path(settings.data_dir).resolve())
        self.process = subprocess.Popen(
            command_under_reaper(superlink_command(settings)),  # ends ServerApps however fedward ends
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=tied_to_parent(),
            cwd=settings.state.root,
        )
        self._wait_ready()
        ca = None if settings.insecure or settings.certs is None else str(settings.certs.ca_cert.resolve())
        endpoint = {"address": str(settings.local_address), "ca": ca, "pid": self.process.pid}
        settings.state.endpoint_file.write_text(json.dumps(endpoint, indent=2) + "\n", encoding="utf-8")
        settings.state.flwr()  # writes flwr-home/config.toml for the flwr CLI

    def _wait_ready(self) -> None:
        if self.process is None:  # pragma: no cover - called after start
            raise CoordinatorError("the SuperLink was not started")
        settings = self.settings
        ca = None if settings.insecure or settings.certs is None else settings.certs.ca_cert
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CoordinatorError(
                    f"the SuperLink exited with code {self.process.returncode}; see {settings.state.log_file}"
                )
            try:
                probe(settings.local_address, ca, timeout_s=2.0)
                return
            except SuperLinkConnectionError:
                time.sleep(0.3)
        self.stop()
        raise CoordinatorError(f"the SuperLink did not answer within {STARTUP_TIMEOUT_S:.0f} s")

    def wait(self) -> int:
        """Block until the SuperLink exits or this process gets SIGTERM/SIGINT; then stop it.

        Returns:
            The SuperLink's exit code (0 after a requested stop).
        """
        if self.process is None:
            return 0
        stopping = False

        def on_signal(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not stopping and self.process.poll() is None:
                time.sleep(0.5)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        code = self.process.poll()
        self.stop()
        return 0 if stopping or code is None else code

    def stop(self) -> None:
        """Stop the SuperLink and everything it started (SuperExec, ServerApps)."""
        stop_group(self.process)


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As gRPC does: connections a crashed SuperLink left in TIME_WAIT must not block a restart.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise CoordinatorError(f"cannot listen on {host}:{port}: {err.strerror}") from None
