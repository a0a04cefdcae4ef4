"""Run the model registry: its app under uvicorn, over TLS, on a checked port, until SIGINT/SIGTERM.

``fedward registry serve`` calls :func:`serve`. TLS uses the coordinator certificate of
``fedward certs init`` (TLS 1.2 or newer, Python's default cipher suites); plain HTTP only
with an explicit ``insecure``. Everything that keeps the registry from starting (store,
certificates, port) is a :class:`RegistryError` naming what to fix.
"""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from fedward.common.errors import ConfigError, FedwardError
from fedward.common.registry_api import DEFAULT_PORT
from fedward.common.security.certs import FederationCerts
from fedward.server.registry.dashboard.sessions import DEFAULT_SESSION_SECONDS
from fedward.server.registry.service import create_app

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)


class RegistryError(FedwardError):
    """The registry cannot start (store, certificates, port)."""


def serve(
    store: Path,
    certs_dir: Path | None,
    host: str = "0.0.0.0",
    port: int = DEFAULT_PORT,
    *,
    insecure: bool = False,
    session_seconds: float = DEFAULT_SESSION_SECONDS,
) -> None:
    """Serve the registry with uvicorn until SIGINT/SIGTERM.

    Args:
        store: the runs folder to serve.
        certs_dir: a ``fedward certs init`` folder; ``server.crt`` and ``server.key`` are used
            (TLS 1.2 or newer, Python's default cipher suites).
        host: address to listen on (``0.0.0.0``: every interface).
        port: TCP port, 1..65535.
        insecure: serve plain HTTP without ``certs_dir`` (tokens and weights travel in clear).
        session_seconds: how long a dashboard sign-in lasts, > 0.

    Raises:
        ConfigError: if neither or both of ``certs_dir`` and ``insecure`` are given, or the port
            is out of range, or ``session_seconds`` is not positive.
        RegistryError: if the store is not a folder, a certificate file is missing or
            unusable, or the port is taken.
    """
    import uvicorn

    if (certs_dir is None) == (not insecure):
        raise ConfigError("pass --certs (a folder made by 'fedward certs init') or, for development only, --insecure")
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be 1..65535; got {port}")
    if not session_seconds > 0:
        raise ConfigError(f"--session-hours must be > 0; got {session_seconds / 3600:g}")
    store = Path(store)
    if not store.is_dir():
        raise RegistryError(f"{store} is not a folder; --store takes a runs folder (or --state a coordinator's state)")
    tls = _tls_files(certs_dir) if certs_dir is not None else {}
    _check_port_free(host, port)
    config = uvicorn.Config(
        create_app(store, session_seconds=session_seconds),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        **tls,
    )
    _load_tls(config, certs_dir)
    scheme = "https" if config.ssl is not None else "http"
    log.info("model registry for %s on %s://%s:%d", store.resolve(), scheme, host, port)
    _run_until_signal(uvicorn.Server(config))


def _tls_files(certs_dir: Path) -> dict[str, Any]:
    """uvicorn's TLS options for the server certificate and key of a ``fedward certs init`` folder.

    Raises:
        RegistryError: if ``server.crt`` or ``server.key`` is missing.
    """
    certs = FederationCerts.in_folder(certs_dir)
    missing = [p.name for p in (certs.server_cert, certs.server_key) if not p.is_file()]
    if missing:
        raise RegistryError(f"{', '.join(missing)} missing in {certs_dir}; create them with 'fedward certs init'")
    # An empty cipher string keeps Python's default suites (uvicorn's default would widen them).
    return {"ssl_certfile": str(certs.server_cert), "ssl_keyfile": str(certs.server_key), "ssl_ciphers": ""}


def _load_tls(config: uvicorn.Config, certs_dir: Path | None) -> None:
    """Load uvicorn's config (its TLS context among it), TLS 1.2 at least.

    Raises:
        RegistryError: if the certificate or key cannot be loaded.
    """
    try:
        config.load()
    except (OSError, ssl.SSLError) as err:
        raise RegistryError(f"cannot load the TLS certificate and key from {certs_dir}: {err}") from None
    if config.ssl is not None:
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2


def _check_port_free(host: str, port: int) -> None:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as err:
        raise RegistryError(
            f"cannot listen on {host}:{port} ({err.strerror or err}); pick another --port or stop what uses it"
        ) from None


def _run_until_signal(server: Any) -> None:
    """Run a uvicorn server; a SIGINT/SIGTERM it shut down for gracefully ends with a normal return.

    uvicorn re-raises the signal to the handler that was installed before it once it has
    shut down; a recording handler is put there so that an operator's stop exits 0.
    """
    received: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, remember) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        log.info("model registry stopped (%s)", signal.Signals(received[0]).name)
