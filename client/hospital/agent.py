"""The hospital agent: a Flower SuperNode next to the hospital's images.

``fedward client start`` does, in order:

1. checks the data folder exactly as ``fedward client check-data`` does and refuses to
   start on a folder training could not use (nothing has left the hospital yet);
2. checks the coordinator's address with a TLS handshake against the federation's CA
   (:func:`fedward.common.security.tls.probe`): a wrong CA, a certificate not naming the host, or
   TLS on one side only stop the agent with a message saying which; an unreachable
   coordinator is retried with exponential backoff;
3. starts the hospital's warm worker (:mod:`fedward.client.hospital.worker_process`): one
   long-lived process that owns the device, the decoded images and the model, listening
   on a Unix socket in a folder only this user can open, restarted if it dies;
4. runs ``flower-supernode`` with TLS, the hospital's authentication key, the data folder
   and the worker's socket in its node config, telemetry and runtime dependency
   installation off (each message's ``flwr-clientapp`` process only forwards to the worker);
5. if the SuperNode exits on its own (coordinator gone for good, network), starts again
   from step 2 with backoff; Flower's exit code 305 right after a successful TLS check
   means the coordinator refused the hospital's key, which is reported, not retried.

Only model updates and counts leave through the SuperNode (see :mod:`fedward.client.hospital.clientapp`).
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from fedward.client.hospital.check import CheckReport, check_folder
from fedward.client.hospital.site import CACHE_KEY, DATA_DIR_KEY, NAME_KEY, THREADS_KEY
from fedward.client.hospital.worker_process import WorkerProcess
from fedward.common.choices import FrameMode, Task
from fedward.common.errors import ConfigError, DataError, FedwardError
from fedward.common.flower.processes import quiet_environment, stop_group, tied_to_parent
from fedward.common.security.certs import check_name
from fedward.common.security.tls import Address, SuperLinkUnreachableError, probe

log = logging.getLogger(__name__)

EXIT_CONNECTION_REFUSED = 305  # Flower's SUPERNODE_CONNECTION_ERROR: activation refused
# Flower 1.41 logs the 305 but its process exits with 1 (the exit happens inside its
# HTTP server's lifespan), so the log line is what tells a refusal apart.
REFUSAL_MARK = f"Exit Code: {EXIT_CONNECTION_REFUSED}"
DEFAULT_RUNTIME_PORT = 9094


class AgentError(FedwardError):
    """The hospital agent cannot (or must not) run; the message says what to do."""


class UnusableDataError(AgentError):
    """The data folder failed ``check-data``; :attr:`report` says why (``None`` when the
    folder could not be read at all, then the message does)."""

    def __init__(self, folder: Path, report: CheckReport | None = None, reason: str = "") -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(f"{folder} is not usable for training{detail}; fix it before joining the federation")
        self.report = report


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """How to run a hospital agent.

    Attributes:
        superlink: the coordinator's address.
        data_dir: the hospital's data folder.
        name: the hospital's name (also in its log lines on the coordinator).
        ca_cert: the federation's CA certificate; ``None`` only with ``insecure``.
        key: the hospital's OpenSSH private key (``fedward certs node``); ``None`` only
            with ``insecure``.
        insecure: plain HTTP without authentication (development against an insecure
            coordinator only).
        runtime_port: local port of the SuperNode's ClientApp runtime API (127.0.0.1).
        cache_dir: decoded-image cache folder (default: inside the data folder's parent).
        classes: the federation's classes to check labels against (``None``: accept found).
        task: classification task, for label checking.
        frames: multi-frame handling, as training will do it.
        threads: CPU threads PyTorch may use for training (0: PyTorch's default, all cores).
        max_backoff_s: longest wait between reconnection attempts, seconds.
        warm_worker: serve messages in one long-lived worker process; ``False``: in each
            message's own ``flwr-clientapp`` process (Flower's default: slower, every
            message re-imports, re-reads the config and the cached images).
    """

    superlink: Address
    data_dir: Path
    name: str
    ca_cert: Path | None = None
    key: Path | None = None
    insecure: bool = False
    runtime_port: int = DEFAULT_RUNTIME_PORT
    cache_dir: Path | None = None
    classes: tuple[str, ...] | None = None
    task: Task = Task.BINARY
    frames: FrameMode = FrameMode.MIDDLE
    threads: int = 0
    max_backoff_s: float = 60.0
    warm_worker: bool = True

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.insecure and (self.ca_cert is not None or self.key is not None):
            raise ConfigError("--insecure cannot be combined with --ca or --key")
        if not self.insecure and (self.ca_cert is None or self.key is None):
            raise ConfigError(
                "the agent connects with TLS and its key: pass --ca ca.crt and --key <hospital>.key "
                "(or --insecure against a development coordinator)"
            )
        if not 1 <= self.runtime_port <= 65535:
            raise ConfigError(f"--port must be in 1..65535; got {self.runtime_port}")
        if any('"' in str(p) for p in (self.data_dir, self.cache_dir) if p is not None):
            raise ConfigError("data and cache folder paths cannot contain '\"': Flower's node config cannot carry it")
        if self.threads < 0:
            raise ConfigError(f"--threads must be >= 0; got {self.threads}")
        if self.max_backoff_s <= 0:
            raise ConfigError("the maximum backoff must be positive")


def check_key(key: Path) -> None:
    """Refuse a private key that is missing or readable by other users (as OpenSSH does).

    Raises:
        AgentError: if it is missing or its mode grants group/other access.
    """
    if not key.is_file():
        raise AgentError(f"{key} not found: create the hospital's key with 'fedward certs node NAME'")
    mode = stat.S_IMODE(key.stat().st_mode)
    if mode & 0o077:
        raise AgentError(f"{key} is readable by others (mode {mode:o}); run: chmod 600 {key}")


def supernode_command(settings: AgentSettings, worker_secret: Path | None = None) -> list[str]:
    """The ``flower-supernode`` command line for ``settings``.

    Args:
        settings: the agent's settings.
        worker_secret: the warm worker's SuperExec secret file: the SuperNode then runs
            with ``--isolation process`` and leaves every ClientApp task to the worker;
            ``None``: ``--isolation subprocess`` (a ``flwr-clientapp`` process per message).
    """
    node_config: dict[str, str | int] = {
        DATA_DIR_KEY: str(settings.data_dir.resolve()),
        NAME_KEY: settings.name,
    }
    if settings.cache_dir is not None:
        node_config[CACHE_KEY] = str(settings.cache_dir.resolve())
    if settings.threads:
        node_config[THREADS_KEY] = settings.threads
    command = [sys.executable, "-m", "fedward.client.hospital.supernode", "--superlink", str(settings.superlink)]
    if settings.insecure:
        command.append("--insecure")
    else:
        if settings.ca_cert is None or settings.key is None:  # pragma: no cover - excluded by AgentSettings
            raise ConfigError("TLS material missing")
        command += [
            "--root-certificates",
            str(settings.ca_cert.resolve()),
            "--auth-supernode-private-key",
            str(settings.key.resolve()),
        ]
    command += [
        "--node-config",
        " ".join(f"{key}={_toml_value(value)}" for key, value in node_config.items()),
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.runtime_port),
    ]
    if worker_secret is None:
        return [*command, "--isolation", "subprocess"]
    return [*command, "--isolation", "process", "--superexec-auth-secret-file", str(worker_secret)]


def _toml_value(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class HospitalAgent:
    """Runs (and re-runs) the SuperNode of one hospital.

    Args:
        settings: what to run.
        sleep: waits between attempts (replaceable in tests).
    """

    def __init__(self, settings: AgentSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.sleep = sleep
        self.process: subprocess.Popen[bytes] | None = None
        self.worker: WorkerProcess | None = None
        self._stopping = False
        self._tail: collections.deque[str] = collections.deque(maxlen=30)

    def check_data(self) -> CheckReport:
        """Run ``check-data`` on the folder.

        Raises:
            UnusableDataError: if training could not use it.
        """
        s = self.settings
        try:
            report = check_folder(s.data_dir, list(s.classes) if s.classes else None, s.task, s.frames)
        except DataError as err:
            raise UnusableDataError(s.data_dir, reason=str(err)) from None
        if not report.usable:
            raise UnusableDataError(s.data_dir, report)
        return report

    def wait_for_coordinator(self) -> None:
        """Probe the coordinator until it answers, backing off 1, 2, 4... up to the maximum.

        Raises:
            UntrustedSuperLinkError, TransportMismatchError: at once (retrying cannot help).
        """
        delay = 1.0
        while not self._stopping:
            try:
                probe(self.settings.superlink, None if self.settings.insecure else self.settings.ca_cert)
                return
            except SuperLinkUnreachableError as err:
                log.warning("%s; retrying in %.0f s", err, delay)
                self.sleep(delay)
                delay = min(delay * 2, self.settings.max_backoff_s)

    def run(self) -> int:
        """Check, connect and keep the SuperNode running until SIGTERM/SIGINT.

        Returns:
            0 after a requested stop.

        Raises:
            UnusableDataError: if the data folder is unusable.
            AgentError: if the key is unusable or the coordinator refuses it.
            UntrustedSuperLinkError, TransportMismatchError: on TLS problems.
        """
        s = self.settings
        if s.key is not None:
            check_key(s.key)
        report = self.check_data()
        log.info(
            "data folder usable: %d files (%d problems); connecting to %s as %s",
            report.usable_files,
            len(report.problems),
            s.superlink,
            s.name,
        )
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            if s.warm_worker:
                self.worker = WorkerProcess(f"127.0.0.1:{s.runtime_port}")
                self.worker.start()
            return self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            stop_group(self.process, grace_s=10)
            if self.worker is not None:
                self.worker.stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def _loop(self) -> int:
        delay = 1.0
        while not self._stopping:
            self.wait_for_coordinator()
            if self._stopping:
                break
            started = time.monotonic()
            code = self._run_supernode()
            if self._stopping:
                break
            if code == EXIT_CONNECTION_REFUSED or any(REFUSAL_MARK in line for line in self._tail):
                raise AgentError(self._refusal_message())
            if time.monotonic() - started > 60:
                delay = 1.0
            log.warning("the SuperNode exited with code %s; reconnecting in %.0f s", code, delay)
            self.sleep(delay)
            delay = min(delay * 2, self.settings.max_backoff_s)
        return 0

    def _run_supernode(self) -> int:
        self._tail.clear()
        env = quiet_environment()
        env["FLWR_HOME"] = str(Path(os.environ.get("FLWR_HOME", Path.home() / ".fedward" / "flwr-home")))
        self.process = subprocess.Popen(
            supernode_command(self.settings, self.worker.secret_file if self.worker else None),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=tied_to_parent(),
        )
        relay = threading.Thread(target=self._relay, args=(self.process,), daemon=True)
        relay.start()
        code = self.process.wait()
        relay.join(timeout=5)
        stop_group(self.process, grace_s=5)  # ClientApp processes it may have left
        return code

    def _relay(self, process: subprocess.Popen[bytes]) -> None:
        """Copy the SuperNode's output, line for line and unprefixed, to the agent's stderr (the
        operator's console or the container log), keeping the last lines for errors."""
        if process.stdout is None:  # pragma: no cover - always piped
            return
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self._tail.append(line)
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def _refusal_message(self) -> str:
        reason = next((line for line in self._tail if "[code:" in line), "")
        return (
            f"the coordinator at {self.settings.superlink} refused this hospital's key "
            f"({reason.strip() or 'Flower exit code 305'}). Send {self.settings.name}.pub to the coordinator "
            f"and ask them to run: fedward server register {self.settings.name} {self.settings.name}.pub"
        )
