"""Pre-flight checks of a SuperLink address before a Flower process is started.

A ``flower-supernode`` that cannot talk to its SuperLink retries forever with the same
"Connection attempt failed" whatever the cause. A hospital's IT staff need the cause, so
the agent first opens one TCP connection and, with TLS, performs the handshake itself
with Python's :mod:`ssl` (TLS 1.2+, certificate chain and SAN host name checked as
RFC 6125 says), then tells apart:

* nothing listening / no route (:class:`SuperLinkUnreachableError`, worth retrying);
* a certificate not signed by the given CA, or not naming the dialled host
  (:class:`UntrustedSuperLinkError`);
* TLS on one side only (:class:`TransportMismatchError`).

It also holds what every TLS client of fedward shares: :func:`client_context` (trust one
CA, TLS 1.2+) and :func:`https_url` (the registry URL a command was given).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from fedward.common.errors import ConfigError, FedwardError


class SuperLinkConnectionError(FedwardError):
    """The SuperLink cannot be used from here; the message says why and what to do."""


class SuperLinkUnreachableError(SuperLinkConnectionError):
    """Nothing answers at the address (refused, timed out, unknown host). Retry later."""


class UntrustedSuperLinkError(SuperLinkConnectionError):
    """The server's certificate is not signed by the trusted CA or does not name the host."""


class TransportMismatchError(SuperLinkConnectionError):
    """One side speaks TLS and the other does not."""


@dataclass(frozen=True, slots=True)
class Address:
    """A ``host:port`` address.

    Attributes:
        host: DNS name or IP address (IPv6 without brackets).
        port: TCP port, 1..65535.
    """

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str, what: str = "--superlink") -> Address:
    """Parse ``host:port`` (``[v6]:port`` for IPv6).

    Raises:
        ConfigError: if the port is missing or not in 1..65535.
    """
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{what} {text!r} must be HOST:PORT, e.g. coordinator.example.org:9092")
    return Address(host, int(port))


def client_context(ca_cert: Path) -> ssl.SSLContext:
    """A TLS client context that trusts only ``ca_cert`` and speaks TLS 1.2 or newer.

    Certificate chains and host names are verified (RFC 6125), as :mod:`ssl`'s default
    client context does.

    Raises:
        ConfigError: if ``ca_cert`` is not a readable PEM CA certificate.
    """
    try:
        context = ssl.create_default_context(cafile=str(ca_cert))
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"--ca {ca_cert}: not a readable PEM CA certificate ({err})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def https_url(url: str, *, insecure: bool, option: str = "--registry") -> str:
    """``url`` without a trailing slash, checked to be ``https://HOST[:PORT]``.

    Args:
        url: what the user gave.
        insecure: plain ``http://`` is allowed (development only).
        option: the option's name, for the message.

    Raises:
        ConfigError: if it is not an http(s) URL with a host, or is plain http without ``insecure``.
    """
    base = url.strip().rstrip("/")
    scheme, _, rest = base.partition("://")
    if scheme.lower() not in ("https", "http") or not rest:
        raise ConfigError(f"{option} {url!r} must be a URL like https://coordinator.example.org:9095")
    if scheme.lower() == "http" and not insecure:
        raise ConfigError(
            f"{option} {url!r} is plain http: tokens and weights would travel unencrypted; "
            "use https:// with --ca ca.crt, or pass --insecure (development only)"
        )
    return base


def _open(address: Address, timeout_s: float) -> socket.socket:
    try:
        return socket.create_connection((address.host, address.port), timeout=timeout_s)
    except socket.gaierror:
        raise SuperLinkUnreachableError(f"cannot resolve the host name {address.host!r}") from None
    except TimeoutError:
        raise SuperLinkUnreachableError(f"no answer from {address} within {timeout_s:g} s (firewall?)") from None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise SuperLinkUnreachableError(f"cannot connect to {address}: {reason}; is the coordinator up?") from None


def probe(address: Address, ca_cert: Path | None, *, timeout_s: float = 10.0) -> None:
    """Check that a SuperLink at ``address`` can be used with the given trust settings.

    Args:
        address: where the SuperLink listens.
        ca_cert: PEM CA certificate that must have signed the server's certificate, or
            ``None`` for an explicitly insecure (plain HTTP) connection.
        timeout_s: connect and handshake timeout, seconds.

    Raises:
        ConfigError: if ``ca_cert`` is not a readable PEM file.
        SuperLinkUnreachableError: if nothing accepts the connection.
        UntrustedSuperLinkError: if the certificate fails verification (wrong CA, host name
            not among its SANs, expired).
        TransportMismatchError: if the server does not speak TLS (with ``ca_cert``) or does
            (without).
    """
    if ca_cert is None:
        _probe_plain(address, timeout_s)
        return
    context = client_context(ca_cert)
    context.set_alpn_protocols(["h2"])
    with _open(address, timeout_s) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=address.host):
                return
        except ssl.SSLCertVerificationError as err:
            raise UntrustedSuperLinkError(
                f"the server at {address} presented a certificate that {ca_cert} does not vouch for "
                f"({err.verify_message}); get the federation's ca.crt from the coordinator, and make sure "
                f"{address.host!r} is among the certificate's --host/--ip names"
            ) from None
        except TimeoutError:
            raise SuperLinkUnreachableError(
                f"{address} accepted the connection but did not complete a TLS handshake within {timeout_s:g} s"
            ) from None
        except (ssl.SSLError, ConnectionError) as err:
            raise TransportMismatchError(
                f"the server at {address} did not complete a TLS handshake ({type(err).__name__}); "
                "it may be an insecure SuperLink or not a SuperLink at all"
            ) from None


def _probe_plain(address: Address, timeout_s: float) -> None:
    """Fail when the server answers a TLS handshake: it expects TLS from us."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with _open(address, timeout_s) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=_sni(address.host)):
                speaks_tls = True
        except (ssl.SSLError, ConnectionError, TimeoutError):
            speaks_tls = False
    if speaks_tls:
        raise TransportMismatchError(
            f"the SuperLink at {address} requires TLS, and --insecure was given; "
            "start the agent with --ca ca.crt (the federation's CA certificate) instead"
        )


def _sni(host: str) -> str | None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None
