"""The commands containers run besides the services: health checks against real local servers
(TLS and plain), and copying a mounted Secret into files fedward accepts."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedward.cli.container import copy_credentials
from fedward.cli.main import app
from fedward.common.security.certs import FederationCerts, init_federation

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> FederationCerts:
    return init_federation(tmp_path_factory.mktemp("certs"), hosts=[], ips=[])


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> FederationCerts:
    return init_federation(tmp_path_factory.mktemp("other"), hosts=[], ips=[])


@contextlib.contextmanager
def tcp_server(context: ssl.SSLContext | None = None) -> Iterator[int]:
    """A server on 127.0.0.1 that accepts connections (and TLS handshakes with ``context``)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError), conn:
                conn.settimeout(5)
                if context is not None:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def server_context(certs: FederationCerts) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    return context


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------ server health
def test_server_health_passes_against_a_tls_server_the_ca_signed(certs: FederationCerts) -> None:
    with tcp_server(server_context(certs)) as port:
        code, output = invoke("server", "health", "--superlink", f"127.0.0.1:{port}", "--ca", str(certs.ca_cert))
    assert code == 0, output
    assert "is up" in output


def test_server_health_is_unhealthy_when_nothing_listens(certs: FederationCerts) -> None:
    code, output = invoke("server", "health", "--superlink", f"127.0.0.1:{closed_port()}", "--ca", str(certs.ca_cert))
    assert code == 1
    assert "unhealthy" in output


def test_server_health_is_unhealthy_with_another_federations_ca(
    certs: FederationCerts, other_ca: FederationCerts
) -> None:
    with tcp_server(server_context(certs)) as port:
        code, output = invoke("server", "health", "--superlink", f"127.0.0.1:{port}", "--ca", str(other_ca.ca_cert))
    assert code == 1
    assert "does not vouch for" in output


def test_server_health_without_tls_needs_insecure(certs: FederationCerts) -> None:
    with tcp_server() as port:
        assert invoke("server", "health", "--superlink", f"127.0.0.1:{port}", "--insecure")[0] == 0
        code, output = invoke("server", "health", "--superlink", f"127.0.0.1:{port}", "--ca", str(certs.ca_cert))
    assert code == 1, output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "pass --ca"),
        (("--ca", "/nonexistent/ca.crt"), "not a readable PEM CA certificate"),
        (("--insecure", "--superlink", "no-port"), "HOST:PORT"),
    ],
)
def test_server_health_misconfigured_exits_2(args: tuple[str, ...], message: str) -> None:
    code, output = invoke("server", "health", *args)
    assert code == 2
    assert message in output


# ------------------------------------------------------------------------------ registry health
@pytest.fixture(scope="module")
def registry(certs: FederationCerts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The real registry app served over TLS by uvicorn in a thread."""
    uvicorn = pytest.importorskip("uvicorn")
    from fedward.server.registry.service import create_app

    store = tmp_path_factory.mktemp("runs")
    port = closed_port()
    config = uvicorn.Config(
        create_app(store), host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off", ws="none",
        ssl_certfile=str(certs.server_cert), ssl_keyfile=str(certs.server_key),
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the registry did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_registry_health_passes_against_the_registry(registry: int, certs: FederationCerts) -> None:
    code, output = invoke("registry", "health", "--url", f"https://127.0.0.1:{registry}", "--ca", str(certs.ca_cert))
    assert code == 0, output


def test_registry_health_is_unhealthy_with_another_ca(registry: int, other_ca: FederationCerts) -> None:
    code, output = invoke("registry", "health", "--url", f"https://127.0.0.1:{registry}", "--ca", str(other_ca.ca_cert))
    assert code == 1, output


def test_registry_health_is_unhealthy_when_something_else_answers(certs: FederationCerts) -> None:
    with tcp_server(server_context(certs)) as port:  # TLS, but no HTTP behind it
        code, output = invoke("registry", "health", "--url", f"https://127.0.0.1:{port}", "--ca", str(certs.ca_cert))
    assert code == 1, output
    code, output = invoke(
        "registry", "health", "--url", f"https://127.0.0.1:{closed_port()}", "--ca", str(certs.ca_cert)
    )
    assert code == 1, output


@pytest.mark.parametrize(
    "args",
    [
        ("--url", "http://127.0.0.1:9095", "--ca", "ca.crt"),
        ("--url", "ftp://127.0.0.1:9095", "--insecure"),
        ("--url", "https://127.0.0.1:9095", "--insecure"),
        ("--url", "https://127.0.0.1:9095"),
    ],
)
def test_registry_health_misconfigured_exits_2(args: tuple[str, ...]) -> None:
    assert invoke("registry", "health", *args)[0] == 2


# ------------------------------------------------------------------------------ client health
def test_client_health_follows_the_supernode_port() -> None:
    with tcp_server() as port:
        code, output = invoke("client", "health", "--port", str(port))
        assert code == 0, output
    code, output = invoke("client", "health", "--port", str(closed_port()))
    assert code == 1
    assert "no SuperNode" in output
    assert invoke("client", "health", "--port", "0")[0] == 2


# ------------------------------------------------------------------------------ certs copy
def secret_volume(folder: Path) -> Path:
    """A folder laid out like a Kubernetes Secret volume: group-readable files behind ..data links."""
    data = folder / "..2026_01_01_00_00_00.000000000"
    data.mkdir(parents=True)
    for name, content in (("ca.crt", b"CA"), ("st-olav.key", b"KEY")):
        (data / name).write_bytes(content)
        os.chmod(data / name, 0o440)
        (folder / name).symlink_to(Path("..data") / name)
    (folder / "..data").symlink_to(data.name)
    return folder


def test_certs_copy_makes_keys_private_and_skips_the_secret_bookkeeping(tmp_path: Path) -> None:
    source = secret_volume(tmp_path / "secret")
    out = tmp_path / "credentials"
    code, output = invoke("certs", "copy", str(source), "--out", str(out))
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "st-olav.key"]
    assert (out / "st-olav.key").read_bytes() == b"KEY" and not (out / "st-olav.key").is_symlink()
    assert stat.S_IMODE((out / "st-olav.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca.crt").stat().st_mode) == 0o644
    again = copy_credentials(source, out)  # a restarted init container overwrites
    assert [p.name for p in again] == ["ca.crt", "st-olav.key"]


def test_certs_copy_output_is_accepted_by_the_coordinators_certificate_check(
    certs: FederationCerts, tmp_path: Path
) -> None:
    from fedward.server.coordinator.superlink import CoordinatorError, check_certificates

    secret = tmp_path / "secret"
    secret.mkdir()
    for path in (certs.ca_cert, certs.server_cert, certs.server_key):
        (secret / path.name).write_bytes(path.read_bytes())
        os.chmod(secret / path.name, 0o440)  # as a Secret volume with an fsGroup shows them
    with pytest.raises(CoordinatorError, match="readable by others"):
        check_certificates(FederationCerts.in_folder(secret))
    copy_credentials(secret, tmp_path / "certs")
    check_certificates(FederationCerts.in_folder(tmp_path / "certs"))


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_certs_copy_refuses_an_unusable_source(make: str, tmp_path: Path) -> None:
    source = tmp_path / "secret"
    if make == "empty":
        source.mkdir()
    elif make == "file":
        source.write_text("x")
    code, output = invoke("certs", "copy", str(source), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "error:" in output
