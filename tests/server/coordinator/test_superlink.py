"""Coordinator settings, the flower-superlink command line, certificate checks, the state folder."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from fedward.common.errors import ConfigError
from fedward.common.security.certs import FederationCerts, init_federation
from fedward.common.security.tls import Address
from fedward.server.coordinator import superlink as coordinator
from fedward.server.coordinator.state import CONNECTION, CoordinatorError, CoordinatorState
from fedward.server.coordinator.superlink import SuperLinkSettings, check_certificates, superlink_command


@pytest.fixture(autouse=True)
def fake_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line names the tool; whether it is installed does not matter here."""
    monkeypatch.setattr(coordinator, "tool", lambda name: f"/opt/bin/{name}")


@pytest.fixture
def certs(tmp_path: Path) -> FederationCerts:
    return init_federation(tmp_path / "certs")


def value_after(command: list[str], flag: str) -> str:
    assert command.count(flag) == 1, f"{flag} appears {command.count(flag)} times in {command}"
    return command[command.index(flag) + 1]


# ---------------------------------------------------------------------- settings
def test_settings_need_certs_or_insecure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--certs") as info:
        SuperLinkSettings(state=CoordinatorState(tmp_path), certs=None)
    assert "--insecure" in str(info.value)
    SuperLinkSettings(state=CoordinatorState(tmp_path), certs=None, insecure=True)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_settings_reject_bad_ports(tmp_path: Path, certs: FederationCerts, port: int) -> None:
    with pytest.raises(ConfigError, match="--port"):
        SuperLinkSettings(state=CoordinatorState(tmp_path), certs=certs, port=port)


@pytest.mark.parametrize(
    ("host", "expected"),
    [("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("10.1.2.3", "10.1.2.3"), ("coordinator.example.org", None)],
)
def test_local_address_dials_loopback_for_wildcard_binds(tmp_path: Path, host: str, expected: str | None) -> None:
    settings = SuperLinkSettings(state=CoordinatorState(tmp_path), certs=None, insecure=True, host=host, port=9100)
    assert settings.local_address == Address(expected or host, 9100)


def test_default_local_address(tmp_path: Path, certs: FederationCerts) -> None:
    settings = SuperLinkSettings(state=CoordinatorState(tmp_path), certs=certs)
    assert settings.local_address == Address("127.0.0.1", coordinator.DEFAULT_PORT)
    assert str(settings.local_address) == f"127.0.0.1:{coordinator.DEFAULT_PORT}"


# ---------------------------------------------------------------------- command line
def test_secure_command(tmp_path: Path, certs: FederationCerts) -> None:
    state = CoordinatorState(tmp_path / "state")
    command = superlink_command(SuperLinkSettings(state=state, certs=certs, port=9300))
    assert command[0] == "/opt/bin/flower-superlink"
    assert value_after(command, "--ssl-ca-certfile") == str(certs.ca_cert.resolve())
    assert value_after(command, "--ssl-certfile") == str(certs.server_cert.resolve())
    assert value_after(command, "--ssl-keyfile") == str(certs.server_key.resolve())
    assert "--enable-supernode-auth" in command
    assert "--disable-runtime-dependency-installation" in command
    assert value_after(command, "--database") == str((tmp_path / "state" / "state.db").resolve())
    assert value_after(command, "--port") == "9300"
    assert value_after(command, "--host") == "0.0.0.0"
    assert value_after(command, "--isolation") == "subprocess"
    assert value_after(command, "--log-file") == str(state.log_file.resolve())
    assert "--insecure" not in command
    assert all(isinstance(part, str) for part in command)


def test_secure_command_uses_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    certs = init_federation(Path("certs"))
    command = superlink_command(SuperLinkSettings(state=CoordinatorState(Path("state")), certs=certs))
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile", "--database", "--log-file"):
        assert Path(value_after(command, flag)).is_absolute()


def test_insecure_command(tmp_path: Path) -> None:
    settings = SuperLinkSettings(state=CoordinatorState(tmp_path), certs=None, insecure=True, host="127.0.0.1")
    command = superlink_command(settings)
    assert "--insecure" in command
    assert "--enable-supernode-auth" not in command
    assert not any(part.startswith("--ssl") for part in command)
    assert "--disable-runtime-dependency-installation" in command
    assert value_after(command, "--database") == str((tmp_path / "state.db").resolve())
    assert value_after(command, "--host") == "127.0.0.1"


def test_insecure_wins_over_certs(tmp_path: Path, certs: FederationCerts) -> None:
    command = superlink_command(SuperLinkSettings(state=CoordinatorState(tmp_path), certs=certs, insecure=True))
    assert "--insecure" in command
    assert "--enable-supernode-auth" not in command
    assert "--ssl-certfile" not in command


# ---------------------------------------------------------------------- certificate checks
def test_check_certificates_accepts_a_fresh_folder(certs: FederationCerts) -> None:
    check_certificates(certs)


def test_ca_key_is_not_needed_to_serve(certs: FederationCerts) -> None:
    certs.ca_key.unlink()
    check_certificates(certs)


@pytest.mark.parametrize("missing", ["server.key", "server.crt", "ca.crt"])
def test_missing_file_is_named(certs: FederationCerts, missing: str) -> None:
    (certs.ca_cert.parent / missing).unlink()
    with pytest.raises(CoordinatorError, match=missing.replace(".", r"\.")) as info:
        check_certificates(certs)
    assert "fedward certs init" in str(info.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_server_key_readable_by_others_is_refused(certs: FederationCerts, mode: int) -> None:
    certs.server_key.chmod(mode)
    with pytest.raises(CoordinatorError, match="chmod 600"):
        check_certificates(certs)


def test_server_key_0400_is_accepted(certs: FederationCerts) -> None:
    certs.server_key.chmod(stat.S_IRUSR)
    check_certificates(certs)


def test_server_cert_from_another_ca_is_refused(tmp_path: Path, certs: FederationCerts) -> None:
    other = init_federation(tmp_path / "other")
    shutil.copy(other.server_cert, certs.server_cert)
    shutil.copy(other.server_key, certs.server_key)
    certs.server_key.chmod(0o600)
    with pytest.raises(CoordinatorError, match="was not issued by"):
        check_certificates(certs)


def test_non_pem_certificate_is_refused(certs: FederationCerts) -> None:
    certs.server_cert.write_text("not a certificate\n")
    with pytest.raises(CoordinatorError, match="not PEM"):
        check_certificates(certs)


# ---------------------------------------------------------------------- state folder
def test_state_paths(tmp_path: Path) -> None:
    state = CoordinatorState(tmp_path)
    assert state.database == tmp_path / "state.db"
    assert state.endpoint_file == tmp_path / "coordinator.json"
    assert state.hospitals_file == tmp_path / "hospitals.json"
    assert state.flwr_home == tmp_path / "flwr-home"
    assert state.runs == tmp_path / "runs"
    assert state.log_file == tmp_path / "logs" / "superlink.log"


def test_create_makes_a_private_tree(tmp_path: Path) -> None:
    state = CoordinatorState(tmp_path / "state")
    state.create()
    for folder in (state.root, state.runs, state.log_file.parent, state.flwr_home):
        assert folder.is_dir()
    assert stat.S_IMODE(state.root.stat().st_mode) == 0o700
    state.create()  # idempotent


def test_connection_without_endpoint_file(tmp_path: Path) -> None:
    with pytest.raises(CoordinatorError, match="start the coordinator first"):
        CoordinatorState(tmp_path).connection()


def test_connection_with_corrupt_endpoint_file(tmp_path: Path) -> None:
    (tmp_path / "coordinator.json").write_text("{not json")
    with pytest.raises(CoordinatorError, match="start the coordinator first"):
        CoordinatorState(tmp_path).connection()


def test_connection_with_tls(tmp_path: Path) -> None:
    (tmp_path / "coordinator.json").write_text(json.dumps({"address": "127.0.0.1:1", "ca": "/x/ca.crt"}))
    connection = CoordinatorState(tmp_path).connection()
    assert connection.name == CONNECTION
    assert connection.address == "127.0.0.1:1"
    assert connection.root_certificates == Path("/x/ca.crt")
    assert connection.insecure is False


def test_connection_insecure(tmp_path: Path) -> None:
    (tmp_path / "coordinator.json").write_text(json.dumps({"address": "127.0.0.1:9092", "ca": None, "pid": 1}))
    connection = CoordinatorState(tmp_path).connection()
    assert connection.root_certificates is None
    assert connection.insecure is True


def test_flwr_writes_the_connection_config(tmp_path: Path) -> None:
    (tmp_path / "coordinator.json").write_text(json.dumps({"address": "127.0.0.1:9092", "ca": "/x/ca.crt"}))
    flwr = CoordinatorState(tmp_path).flwr()
    text = (tmp_path / "flwr-home" / "config.toml").read_text()
    assert flwr.home == tmp_path / "flwr-home"
    assert f'default = "{CONNECTION}"' in text
    assert 'address = "127.0.0.1:9092"' in text
    assert 'root-certificates = "/x/ca.crt"' in text
    assert "insecure" not in text
