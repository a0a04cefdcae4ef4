"""Pre-flight probe of a SuperLink address against real local TLS and plain TCP servers."""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedward.common.errors import ConfigError
from fedward.common.security.certs import FederationCerts, init_federation
from fedward.common.security.tls import (
    Address,
    SuperLinkConnectionError,
    SuperLinkUnreachableError,
    TransportMismatchError,
    UntrustedSuperLinkError,
    parse_address,
    probe,
)

TIMEOUT_S = 5.0


# ---------------------------------------------------------------------- parse_address
@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("host:9092", "host", 9092),
        ("coordinator.example.org:9092", "coordinator.example.org", 9092),
        ("[::1]:9092", "::1", 9092),
        ("[2001:db8::1]:443", "2001:db8::1", 443),
        ("1.2.3.4:1", "1.2.3.4", 1),
        ("  localhost:65535 ", "localhost", 65535),
    ],
)
def test_parse_address_ok(text: str, host: str, port: int) -> None:
    assert parse_address(text) == Address(host, port)


@pytest.mark.parametrize(
    "text", ["host", "host:", ":9092", "host:0", "host:65536", "host:-1", "host:abc", "[::1]", "[]:9092", ""]
)
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_address(text)


def test_parse_address_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--address"):
        parse_address("nope", what="--address")


def test_address_str_brackets_ipv6() -> None:
    assert str(Address("::1", 9092)) == "[::1]:9092"
    assert str(Address("1.2.3.4", 1)) == "1.2.3.4:1"
    assert str(parse_address(str(Address("2001:db8::1", 9)))) == "[2001:db8::1]:9"


# ---------------------------------------------------------------------- local servers
Handler = Callable[[socket.socket], None]


@contextlib.contextmanager
def serve(handler: Handler) -> Iterator[Address]:
    """A TCP server on 127.0.0.1 calling ``handler`` on each connection in a daemon thread."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(TIMEOUT_S)
            with contextlib.suppress(Exception), conn:
                handler(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield Address("127.0.0.1", listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()


def tls_handler(cert: Path, key: Path) -> Handler:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))

    def handle(conn: socket.socket) -> None:
        # handshake errors are swallowed by serve()
        with context.wrap_socket(conn, server_side=True) as tls, contextlib.suppress(Exception):
            tls.recv(1)

    return handle


def plain_junk(conn: socket.socket) -> None:
    """Read the client's first bytes and answer like an HTTP/1 server would."""
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def plain_close(conn: socket.socket) -> None:
    """Read the client's first bytes and hang up without a word."""
    conn.recv(4096)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> FederationCerts:
    return init_federation(tmp_path_factory.mktemp("federation"), hosts=["coordinator.example.org"])


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> FederationCerts:
    return init_federation(tmp_path_factory.mktemp("other-federation"))


# ---------------------------------------------------------------------- probe
def test_tls_server_with_the_right_ca(certs: FederationCerts) -> None:
    with serve(tls_handler(certs.server_cert, certs.server_key)) as address:
        probe(address, certs.ca_cert, timeout_s=TIMEOUT_S)


def test_tls_server_dialled_as_localhost(certs: FederationCerts) -> None:
    with serve(tls_handler(certs.server_cert, certs.server_key)) as address:
        probe(Address("localhost", address.port), certs.ca_cert, timeout_s=TIMEOUT_S)


def test_certificate_with_ips_only_works_on_loopback(tmp_path: Path) -> None:
    files = init_federation(tmp_path, hosts=[], ips=["10.9.8.7"])
    with serve(tls_handler(files.server_cert, files.server_key)) as address:
        probe(address, files.ca_cert, timeout_s=TIMEOUT_S)


def test_tls_server_with_another_federations_ca(certs: FederationCerts, other_certs: FederationCerts) -> None:
    handler = tls_handler(certs.server_cert, certs.server_key)
    with serve(handler) as address, pytest.raises(UntrustedSuperLinkError, match="does not vouch") as info:
        probe(address, other_certs.ca_cert, timeout_s=TIMEOUT_S)
    assert str(other_certs.ca_cert) in str(info.value)
    assert isinstance(info.value, SuperLinkConnectionError)


@pytest.mark.parametrize("handler", [plain_junk, plain_close], ids=["junk", "close"])
def test_plain_server_with_a_ca_is_a_transport_mismatch(certs: FederationCerts, handler: Handler) -> None:
    expected = pytest.raises(TransportMismatchError, match="did not complete a TLS handshake")
    with serve(handler) as address, expected:
        probe(address, certs.ca_cert, timeout_s=TIMEOUT_S)


def test_tls_server_probed_insecurely_is_a_transport_mismatch(certs: FederationCerts) -> None:
    handler = tls_handler(certs.server_cert, certs.server_key)
    with serve(handler) as address, pytest.raises(TransportMismatchError, match="requires TLS"):
        probe(address, None, timeout_s=TIMEOUT_S)


@pytest.mark.parametrize("handler", [plain_junk, plain_close], ids=["junk", "close"])
def test_plain_server_probed_insecurely(handler: Handler) -> None:
    with serve(handler) as address:
        probe(address, None, timeout_s=TIMEOUT_S)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("secure", [True, False])
def test_closed_port_is_unreachable(certs: FederationCerts, secure: bool) -> None:
    address = Address("127.0.0.1", _closed_port())
    with pytest.raises(SuperLinkUnreachableError, match="cannot connect"):
        probe(address, certs.ca_cert if secure else None, timeout_s=TIMEOUT_S)


def test_unreadable_ca_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--ca"):
        probe(Address("127.0.0.1", _closed_port()), tmp_path / "missing.crt", timeout_s=TIMEOUT_S)
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="--ca"):
        probe(Address("127.0.0.1", _closed_port()), garbage, timeout_s=TIMEOUT_S)


def _server_cert_for(certs: FederationCerts, folder: Path, dns_names: list[str]) -> tuple[Path, Path]:
    """A server certificate signed by the federation's CA that names only ``dns_names``."""
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
        .sign(ca_key, hashes.SHA384())  # type: ignore[arg-type]
    )
    cert_path, key_path = folder / "other.crt", folder / "other.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_certificate_not_naming_the_dialled_host(certs: FederationCerts, tmp_path: Path) -> None:
    cert, key = _server_cert_for(certs, tmp_path, ["elsewhere.example.org"])
    with serve(tls_handler(cert, key)) as address:
        with pytest.raises(UntrustedSuperLinkError, match=r"'127\.0\.0\.1' is among"):
            probe(address, certs.ca_cert, timeout_s=TIMEOUT_S)
        with pytest.raises(UntrustedSuperLinkError, match="'localhost' is among"):
            probe(Address("localhost", address.port), certs.ca_cert, timeout_s=TIMEOUT_S)
