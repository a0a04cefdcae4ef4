"""Certificates and keys for a federation, made with ``cryptography``.

* A private **certificate authority** (ECDSA P-384, ``ca.crt`` / ``ca.key``) that signs
* the **SuperLink's server certificate** (``server.crt`` / ``server.key``) whose Subject
  Alternative Names carry every DNS name and IP address hospitals dial (RFC 5280 4.2.1.6;
  TLS clients check the SAN, not the Common Name). Hospitals trust ``ca.crt`` only.
* A **hospital key pair** for Flower's SuperNode authentication: ECDSA P-384, private key
  in OpenSSH format, public key as an OpenSSH line (``ecdsa-sha2-nistp384 AAAA...``), the
  format ``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register``
  read. The private key never leaves the hospital; only the ``.pub`` file travels.

Every file is replaced atomically; private keys are created with mode 0600 before any
byte is written. Existing files are never overwritten unless asked to (``force``).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedward.common.errors import ConfigError, FedwardError
from fedward.common.fileio import atomic_write

CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.crt", "ca.key", "server.crt", "server.key"
HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class CertificateError(FedwardError):
    """Certificates or keys cannot be written or read."""


@dataclass(frozen=True, slots=True)
class FederationCerts:
    """Paths of a federation's TLS material (a ``fedward certs init`` folder).

    Attributes:
        ca_cert: PEM certificate of the private CA (give it to every hospital).
        ca_key: PEM private key of the CA (keep it offline; 0600).
        server_cert: PEM certificate of the SuperLink.
        server_key: PEM private key of the SuperLink (0600).
    """

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_folder(cls, folder: Path) -> FederationCerts:
        """The standard file names inside ``folder``."""
        folder = Path(folder)
        return cls(folder / CA_CERT, folder / CA_KEY, folder / SERVER_CERT, folder / SERVER_KEY)

    def missing_for_server(self) -> list[str]:
        """Files the SuperLink needs that are absent (the CA key is not needed to serve)."""
        return [p.name for p in (self.ca_cert, self.server_cert, self.server_key) if not p.is_file()]


def check_name(name: str, what: str = "hospital name") -> str:
    """Validate a name used in file names and registrations.

    Raises:
        ConfigError: unless it is 1-64 letters, digits, ``.``, ``_`` or ``-`` (not leading).
    """
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"{what} {name!r} must be 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit)"
        )
    return name


def check_host(host: str) -> str:
    """Validate a DNS name for a certificate's SAN (RFC 1123 labels, ``*.`` wildcard allowed).

    Raises:
        ConfigError: if it is not a DNS name (an IP address belongs in ``--ip``).
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise ConfigError(f"--host {host!r} is an IP address; pass it with --ip")
    labels = host.removeprefix("*.").split(".")
    if len(host) > 253 or not all(HOST_LABEL.fullmatch(label) for label in labels):
        raise ConfigError(f"--host {host!r} is not a valid DNS name")
    return host


def _write(path: Path, data: bytes, private: bool) -> None:
    """Create or replace ``path`` atomically: mode 0600 for a private key, else 0644."""
    atomic_write(path, data, mode=0o600 if private else 0o644, durable=True)


def _refuse_overwrite(paths: Sequence[Path], force: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise CertificateError(f"{', '.join(existing)} already exist; pass --force to replace them")


def _key_usage(ca: bool) -> x509.KeyUsage:
    """RFC 5280 4.2.1.3: a CA signs certificates and CRLs; a TLS server signs and agrees keys (ECDHE)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def init_federation(
    out: Path,
    hosts: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1",),
    days: int = 825,
    force: bool = False,
) -> FederationCerts:
    """Create a private CA and the SuperLink's server certificate.

    Args:
        out: folder for ``ca.crt``, ``ca.key``, ``server.crt``, ``server.key``.
        hosts: DNS names hospitals use to reach the SuperLink (SAN dNSName).
            ``localhost`` is always added.
        ips: IP addresses hospitals use (SAN iPAddress). ``127.0.0.1`` is always added:
            the SuperLink's own SuperExec (which starts ServerApps) dials it over TLS.
        days: validity of both certificates, days (1..3650; the CA gets the same span).
        force: replace existing files.

    Returns:
        The written paths.

    Raises:
        ConfigError: if a host or IP is malformed, or ``days`` is out of range.
        CertificateError: if files exist and ``force`` is false.
    """
    if not 1 <= days <= 3650:
        raise ConfigError(f"--days must be between 1 and 3650; got {days}")
    try:
        addresses = list(dict.fromkeys(ipaddress.ip_address(ip) for ip in [*ips, "127.0.0.1"]))
    except ValueError as err:
        raise ConfigError(f"--ip: {err}") from None
    for host in hosts:
        check_host(host)
    hosts = list(dict.fromkeys([*hosts, "localhost"]))
    files = FederationCerts.in_folder(out)
    _refuse_overwrite([files.ca_cert, files.ca_key, files.server_cert, files.server_key], force)

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key, ca_cert = _issue_ca(start, end)
    server_key, server_cert = _issue_server_certificate(ca_key, ca_cert, hosts, addresses, start, end)
    _write(files.ca_key, _pem_key(ca_key), private=True)
    _write(files.server_key, _pem_key(server_key), private=True)
    _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), private=False)
    return files


def _issue_ca(start: datetime.datetime, end: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new P-384 CA key and its self-signed certificate (path length 0), valid from ``start`` to ``end``."""
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedward federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, "fedward federation CA"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return ca_key, ca_cert


def _issue_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: Sequence[str],
    addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
    start: datetime.datetime,
    end: datetime.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new P-384 server key and its certificate signed by the CA: CN ``hosts[0]``, SANs every host and address."""
    server_key = ec.generate_private_key(ec.SECP384R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts] + [x509.IPAddress(a) for a in addresses]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return server_key, server_cert


@dataclass(frozen=True, slots=True)
class NodeKeys:
    """A hospital's SuperNode authentication key pair.

    Attributes:
        private_key: OpenSSH private key (stays at the hospital; 0600).
        public_key: OpenSSH public key line (sent to the coordinator for registration).
    """

    private_key: Path
    public_key: Path


def create_node_keys(name: str, out: Path, force: bool = False) -> NodeKeys:
    """Create a hospital's key pair ``<out>/<name>.key`` and ``<out>/<name>.pub``.

    Raises:
        ConfigError: if ``name`` is not a valid hospital name.
        CertificateError: if the files exist and ``force`` is false.
    """
    check_name(name)
    keys = NodeKeys(Path(out) / f"{name}.key", Path(out) / f"{name}.pub")
    _refuse_overwrite([keys.private_key, keys.public_key], force)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(keys.private_key, private, private=True)
    _write(keys.public_key, public + f" {name}\n".encode(), private=False)
    return keys


def read_public_key(path: Path) -> str:
    """An OpenSSH public key line, checked to be an ECDSA key.

    Raises:
        CertificateError: if the file is missing or not an OpenSSH ECDSA public key.
    """
    try:
        text = Path(path).read_text(encoding="ascii").strip()
        key = serialization.load_ssh_public_key(text.encode())
    except (OSError, ValueError, UnicodeDecodeError, UnsupportedAlgorithm) as err:
        raise CertificateError(f"{path} is not an OpenSSH public key ({type(err).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateError(f"{path} is not an ECDSA key; create hospital keys with 'fedward certs node'")
    return text


@dataclass(frozen=True, slots=True)
class CertificateSummary:
    """What ``fedward certs show`` prints about a certificate.

    Attributes:
        subject: RFC 4514 subject.
        issuer: RFC 4514 issuer.
        sans: Subject Alternative Names (DNS names and IP addresses).
        not_after: end of validity, ISO 8601 UTC.
    """

    subject: str
    issuer: str
    sans: tuple[str, ...]
    not_after: str


def certificate_summary(path: Path) -> CertificateSummary:
    """Subject, issuer, SANs and validity of a PEM certificate.

    Raises:
        CertificateError: if the file is not a PEM certificate.
    """
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as err:
        raise CertificateError(f"{path} is not a PEM certificate ({type(err).__name__})") from None
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple(str(n.value) for n in names)
    except x509.ExtensionNotFound:
        sans = ()
    return CertificateSummary(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sans=sans,
        not_after=cert.not_valid_after_utc.isoformat(),
    )
