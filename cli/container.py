"""Commands containers run besides the services: health checks and secret copying.

``fedward server health``, ``fedward registry health`` and ``fedward client health`` are the
``HEALTHCHECK`` of the images, the healthchecks of the compose files and the probes of the
Helm charts; ``fedward certs copy`` prepares certificates mounted from a Kubernetes Secret.
Every command a container runs is a ``fedward`` command, so these live in the CLI too.

Exit codes of the health commands follow Docker's ``HEALTHCHECK``: 0 healthy, 1 unhealthy
(one line on stderr says why); a misconfigured check (an unreadable ``--ca``) exits 2 like
every other fedward error. They import nothing heavy: a check runs every few seconds.
"""

from __future__ import annotations

import functools
import logging
import shutil
import socket
import stat
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from fedward.common.errors import ConfigError
from fedward.common.fileio import write_atomically
from fedward.common.registry_api import DEFAULT_PORT, HEALTH_PATH, is_healthy

log = logging.getLogger(__name__)

console = Console()
err_console = Console(stderr=True)

UNHEALTHY = 1
Ca = Annotated[Path | None, typer.Option("--ca", help="The federation's CA certificate (ca.crt).")]
Insecure = Annotated[bool, typer.Option("--insecure", help="The service runs without TLS (development only).")]
Timeout = Annotated[float, typer.Option("--timeout", help="Connect and handshake timeout, seconds.")]


def _unhealthy(message: str) -> typer.Exit:
    err_console.print(f"[bold red]unhealthy:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(UNHEALTHY)


def _check_trust(ca: Path | None, insecure: bool) -> None:
    if (ca is None) == (not insecure):
        raise ConfigError("pass --ca ca.crt (or --insecure for a development service without TLS)")


def server_health(
    superlink: Annotated[
        str, typer.Option("--superlink", help="HOST:PORT of the SuperLink to check.")
    ] = "127.0.0.1:9092",
    ca: Ca = None,
    insecure: Insecure = False,
    timeout: Timeout = 5.0,
) -> None:
    """Check that a SuperLink accepts connections and completes a TLS handshake trusted by --ca.

    Exit code 0 when healthy, 1 when not, 2 on bad arguments.
    """
    from fedward.common.security.tls import SuperLinkConnectionError, parse_address, probe

    _check_trust(ca, insecure)
    address = parse_address(superlink)
    try:
        probe(address, ca, timeout_s=timeout)
    except SuperLinkConnectionError as err:
        raise _unhealthy(str(err)) from None
    console.print(f"SuperLink at {address} is up", highlight=False)


def registry_health(
    url: Annotated[
        str, typer.Option("--url", help="The registry, https://HOST:PORT.")
    ] = f"https://127.0.0.1:{DEFAULT_PORT}",
    ca: Ca = None,
    insecure: Insecure = False,
    timeout: Timeout = 5.0,
) -> None:
    """Check that a model registry answers GET /v1/health over TLS trusted by --ca.

    Exit code 0 when healthy, 1 when not, 2 on bad arguments.
    """
    import ssl

    import httpx

    from fedward.common.security.tls import client_context, https_url

    _check_trust(ca, insecure)
    base = https_url(url, insecure=insecure, option="--url")
    if insecure and base.lower().startswith("https://"):
        raise ConfigError(f"--url {url!r}: with --insecure the registry serves plain http://")
    verify: ssl.SSLContext | bool = client_context(ca) if ca is not None else False
    try:
        response = httpx.get(f"{base}{HEALTH_PATH}", verify=verify, timeout=timeout)
    except httpx.HTTPError as err:
        raise _unhealthy(f"{base}: {err or type(err).__name__}") from None
    try:
        answer = response.json() if response.status_code == 200 else None
    except ValueError:
        answer = None
    if not is_healthy(answer):
        raise _unhealthy(f"{base}{HEALTH_PATH} answered HTTP {response.status_code}, not a healthy fedward registry")
    console.print(f"model registry at {base} is up", highlight=False)


def client_health(
    port: Annotated[
        int, typer.Option("--port", help="The agent's --port (its SuperNode's ClientApp API on 127.0.0.1).")
    ] = 9094,
    timeout: Timeout = 5.0,
) -> None:
    """Check that the hospital agent's SuperNode runs (its local ClientApp API accepts connections).

    While the agent waits for the coordinator (backoff) no SuperNode runs and the check fails.
    Exit code 0 when healthy, 1 when not, 2 on bad arguments.
    """
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be in 1..65535; got {port}")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise _unhealthy(f"no SuperNode on 127.0.0.1:{port} ({reason}); is the agent connected?") from None
    console.print(f"SuperNode on 127.0.0.1:{port} is up", highlight=False)


def copy_credentials(source: Path, out: Path) -> list[Path]:
    """Copy certificate and key files into ``out``, owned by this user, keys readable by it only.

    Kubernetes mounts Secrets owned by root, or group-readable with an ``fsGroup``; fedward
    refuses private keys that others can read. This makes the copies the agent and the
    coordinator accept. Entries starting with ``.`` (a Secret volume's ``..data`` links) and
    sub-folders are skipped; symbolic links are followed.

    Args:
        source: folder of PEM/OpenSSH files (a mounted Secret).
        out: folder to write (created 0700 if missing); existing files are replaced.

    Returns:
        The written files, sorted; ``*.key`` files have mode 0600, the others 0644.

    Raises:
        ConfigError: if ``source`` is not a readable folder, holds no file, or ``out``
            cannot be written.
    """
    if not source.is_dir():
        raise ConfigError(f"{source}: not a folder; mount the Secret there")
    try:
        files = sorted(p for p in source.iterdir() if not p.name.startswith(".") and p.is_file())
    except OSError as err:
        raise ConfigError(f"{source}: cannot list it ({err.strerror or err})") from None
    if not files:
        raise ConfigError(f"{source} holds no file; put ca.crt and the keys in the Secret")
    written = []
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        for file in files:
            target = out / file.name
            mode = stat.S_IRUSR | stat.S_IWUSR if file.suffix == ".key" else 0o644
            write_atomically(target, functools.partial(_copy_into, file), mode=mode, durable=True)
            written.append(target)
    except OSError as err:
        raise ConfigError(f"copying {source} into {out} failed: {err.strerror or err}") from None
    log.info("copied %d files from %s to %s", len(written), source, out)
    return written


def _copy_into(source: Path, target: Path) -> None:
    """Copy ``source``'s bytes into ``target`` (created with its mode by the atomic writer, which keeps it)."""
    with source.open("rb") as src, target.open("wb") as handle:
        shutil.copyfileobj(src, handle)


def certs_copy(
    source: Annotated[Path, typer.Argument(help="Folder of certificates and keys (a mounted Secret).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write; keys get mode 0600.")],
) -> None:
    """Copy mounted certificates and keys into a folder of this user, keys 0600 (Kubernetes init containers)."""
    written = copy_credentials(source, out)
    for path in written:
        console.print(f"{path} ({stat.S_IMODE(path.stat().st_mode):o})", highlight=False)
