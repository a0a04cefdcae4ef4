"""Federation certificates and hospital keys: files, modes, chain, SANs, validity, refusals."""

from __future__ import annotations

import datetime
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from fedward.common.errors import ConfigError
from fedward.common.security.certs import (
    CertificateError,
    FederationCerts,
    certificate_summary,
    check_name,
    create_node_keys,
    init_federation,
    read_public_key,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}


# ---------------------------------------------------------------------- init_federation
def test_init_writes_four_files_with_private_keys_0600(tmp_path: Path) -> None:
    files = init_federation(tmp_path / "certs")
    assert files == FederationCerts.in_folder(tmp_path / "certs")
    for path in (files.ca_cert, files.ca_key, files.server_cert, files.server_key):
        assert path.is_file()
    assert mode(files.ca_key) == 0o600
    assert mode(files.server_key) == 0o600
    assert mode(files.ca_cert) == 0o644
    assert mode(files.server_cert) == 0o644
    assert files.missing_for_server() == []
    serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    serialization.load_pem_private_key(files.server_key.read_bytes(), password=None)


def test_server_cert_is_issued_by_the_ca_and_matches_its_key(tmp_path: Path) -> None:
    files = init_federation(tmp_path)
    ca, server = load_cert(files.ca_cert), load_cert(files.server_cert)
    server.verify_directly_issued_by(ca)
    ca.verify_directly_issued_by(ca)  # self-signed root
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = serialization.load_pem_private_key(files.server_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == server.public_key().public_numbers()  # type: ignore[union-attr]
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    assert ca_key.public_key().public_numbers() == ca.public_key().public_numbers()  # type: ignore[union-attr]


def test_server_cert_is_not_issued_by_another_federations_ca(tmp_path: Path) -> None:
    first = init_federation(tmp_path / "a")
    second = init_federation(tmp_path / "b")
    with pytest.raises(Exception):  # noqa: B017 - InvalidSignature or ValueError depending on the check failing
        load_cert(first.server_cert).verify_directly_issued_by(load_cert(second.ca_cert))


def test_sans_hold_given_names_plus_localhost_and_loopback(tmp_path: Path) -> None:
    files = init_federation(
        tmp_path, hosts=["coordinator.example.org", "*.fl.example.org"], ips=["10.0.0.5", "2001:db8::1"]
    )
    dns, ips = sans(load_cert(files.server_cert))
    assert dns == {"coordinator.example.org", "*.fl.example.org", "localhost"}
    assert ips == {"10.0.0.5", "2001:db8::1", "127.0.0.1"}
    summary = certificate_summary(files.server_cert)
    assert "coordinator.example.org" in summary.sans
    assert "127.0.0.1" in summary.sans
    assert summary.issuer == load_cert(files.ca_cert).subject.rfc4514_string()


def test_defaults_are_not_duplicated_and_empty_lists_still_give_loopback(tmp_path: Path) -> None:
    files = init_federation(tmp_path / "a", hosts=["localhost"], ips=["127.0.0.1"])
    ext = load_cert(files.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ext.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ext.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    files = init_federation(tmp_path / "b", hosts=[], ips=[])
    assert sans(load_cert(files.server_cert)) == ({"localhost"}, {"127.0.0.1"})


@pytest.mark.parametrize("days", [1, 30, 825])
def test_validity_spans_the_requested_days(tmp_path: Path, days: int) -> None:
    files = init_federation(tmp_path, days=days)
    now = datetime.datetime.now(datetime.UTC)
    for path in (files.ca_cert, files.server_cert):
        cert = load_cert(path)
        assert cert.not_valid_before_utc <= now
        expected_end = now + datetime.timedelta(days=days)
        assert abs((cert.not_valid_after_utc - expected_end).total_seconds()) < 120
        span = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert datetime.timedelta(days=days) <= span <= datetime.timedelta(days=days, minutes=10)


def test_existing_files_are_refused_unless_forced(tmp_path: Path) -> None:
    files = init_federation(tmp_path)
    before = {p: p.read_bytes() for p in (files.ca_cert, files.ca_key, files.server_cert, files.server_key)}
    with pytest.raises(CertificateError, match="--force"):
        init_federation(tmp_path)
    assert {p: p.read_bytes() for p in before} == before  # nothing was touched
    init_federation(tmp_path, force=True)
    for path, content in before.items():
        assert path.read_bytes() != content
    assert mode(files.server_key) == 0o600
    load_cert(files.server_cert).verify_directly_issued_by(load_cert(files.ca_cert))


def test_a_single_existing_file_is_enough_to_refuse(tmp_path: Path) -> None:
    (tmp_path / "server.key").write_text("keep me")
    with pytest.raises(CertificateError, match=r"server\.key"):
        init_federation(tmp_path)
    assert (tmp_path / "server.key").read_text() == "keep me"
    assert not (tmp_path / "ca.crt").exists()


def test_forced_key_is_0600_even_if_the_old_file_was_world_readable(tmp_path: Path) -> None:
    (tmp_path / "server.key").write_text("old")
    (tmp_path / "server.key").chmod(0o644)
    init_federation(tmp_path, force=True)
    assert mode(tmp_path / "server.key") == 0o600


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ips": ["999.1.1.1"]}, "--ip"),
        ({"ips": ["coordinator.example.org"]}, "--ip"),
        ({"hosts": ["10.0.0.1"]}, "IP address"),
        ({"hosts": ["::1"]}, "IP address"),
        ({"hosts": ["bad_host!"]}, "not a valid DNS name"),
        ({"hosts": ["-leading.example.org"]}, "not a valid DNS name"),
        ({"hosts": ["a" * 64 + ".example.org"]}, "not a valid DNS name"),
        ({"days": 0}, "--days"),
        ({"days": -5}, "--days"),
        ({"days": 3651}, "--days"),
    ],
)
def test_bad_arguments_are_config_errors_and_write_nothing(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        init_federation(tmp_path / "certs", **kwargs)
    assert not (tmp_path / "certs").exists()


# ---------------------------------------------------------------------- node keys
def test_node_keys_are_openssh_ecdsa_with_a_private_0600_key(tmp_path: Path) -> None:
    keys = create_node_keys("st-mary", tmp_path / "keys")
    assert keys.private_key == tmp_path / "keys" / "st-mary.key"
    assert keys.public_key == tmp_path / "keys" / "st-mary.pub"
    assert mode(keys.private_key) == 0o600
    text = keys.private_key.read_bytes()
    assert text.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    private = serialization.load_ssh_private_key(text, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    line = keys.public_key.read_text()
    assert line.startswith("ecdsa-sha2-nistp384 AAAA")
    assert line.rstrip("\n").endswith(" st-mary")
    public = serialization.load_ssh_public_key(line.split(" st-mary")[0].encode())
    assert public.public_numbers() == private.public_key().public_numbers()  # type: ignore[union-attr]


def test_node_keys_refuse_overwrite_unless_forced(tmp_path: Path) -> None:
    keys = create_node_keys("h0", tmp_path)
    before = keys.private_key.read_bytes()
    with pytest.raises(CertificateError, match="--force"):
        create_node_keys("h0", tmp_path)
    assert keys.private_key.read_bytes() == before
    create_node_keys("h0", tmp_path, force=True)
    assert keys.private_key.read_bytes() != before
    assert mode(keys.private_key) == 0o600


def test_node_keys_reject_bad_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        create_node_keys("../escape", tmp_path / "keys")
    assert not (tmp_path / "escape.key").exists()
    assert not (tmp_path / "keys").exists()


def test_read_public_key_accepts_a_node_key(tmp_path: Path) -> None:
    keys = create_node_keys("h0", tmp_path)
    line = read_public_key(keys.public_key)
    assert line == keys.public_key.read_text().strip()
    assert line.startswith("ecdsa-sha2-nistp384 ")


def _ssh_public(key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def test_read_public_key_rejects_rsa_and_ed25519(tmp_path: Path) -> None:
    rsa_path = tmp_path / "rsa.pub"
    rsa_path.write_bytes(_ssh_public(rsa.generate_private_key(65537, 2048).public_key()) + b" x\n")
    ed_path = tmp_path / "ed.pub"
    ed_path.write_bytes(_ssh_public(ed25519.Ed25519PrivateKey.generate().public_key()) + b" x\n")
    for path in (rsa_path, ed_path):
        with pytest.raises(CertificateError, match="not an ECDSA key"):
            read_public_key(path)


@pytest.mark.parametrize(
    "content",
    [b"garbage\n", b"ecdsa-sha2-nistp384 AAAAnotbase64!!!\n", b"", b"\xff\xfe\x00binary"],
)
def test_read_public_key_rejects_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pub"
    path.write_bytes(content)
    with pytest.raises(CertificateError, match="not an OpenSSH public key"):
        read_public_key(path)


def test_read_public_key_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="not an OpenSSH public key"):
        read_public_key(tmp_path / "missing.pub")


@pytest.mark.parametrize("which", ["private-key", "unknown-type"])
def test_read_public_key_rejects_a_private_key_or_unknown_key_type(tmp_path: Path, which: str) -> None:
    if which == "private-key":  # a likely mistake: registering <name>.key instead of <name>.pub
        path = create_node_keys("h0", tmp_path).private_key
    else:
        path = tmp_path / "other.pub"
        path.write_text("ssh-foo AAAAB3NzaC1kc3MAAACBAP1 x\n")
    with pytest.raises(CertificateError):
        read_public_key(path)


# ---------------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["h0", "St-Mary_2.main", "a", "A" * 64, "0hospital"])
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["../x", "", "a" * 65, "-lead", ".hidden", "_x", "a/b", "a b", "é"], ids=repr)
def test_check_name_rejects(name: str) -> None:
    with pytest.raises(ConfigError, match="hospital name"):
        check_name(name)


def test_check_name_rejects_a_trailing_newline() -> None:
    with pytest.raises(ConfigError):
        check_name("h0\n")


def test_check_name_uses_what_in_the_message() -> None:
    with pytest.raises(ConfigError, match="run name"):
        check_name("../x", what="run name")
