"""The hospital agent: settings, the flower-supernode command, key and data checks, backoff, refusals."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
from fixtures.dicom_folders import write_dicom_folder

from fedward.client.hospital import agent as agent_module
from fedward.client.hospital.agent import (
    AgentError,
    AgentSettings,
    HospitalAgent,
    UnusableDataError,
    check_key,
    supernode_command,
)
from fedward.common.errors import ConfigError, FedwardError
from fedward.common.security.certs import create_node_keys, init_federation
from fedward.common.security.tls import (
    Address,
    SuperLinkUnreachableError,
    TransportMismatchError,
    UntrustedSuperLinkError,
)

SUPERLINK = Address("coordinator.example.org", 9092)
CLASSES = ("normal", "pneumonia")


@pytest.fixture
def material(tmp_path: Path) -> tuple[Path, Path]:
    """(ca.crt, h0.key) as a hospital receives and creates them."""
    ca = init_federation(tmp_path / "certs").ca_cert
    key = create_node_keys("h0", tmp_path / "keys").private_key
    return ca, key


def settings(tmp_path: Path, material: tuple[Path, Path], **kwargs: object) -> AgentSettings:
    ca, key = material
    values: dict[str, object] = {
        "superlink": SUPERLINK,
        "data_dir": tmp_path / "data",
        "name": "h0",
        "ca_cert": ca,
        "key": key,
    }
    values.update(kwargs)
    return AgentSettings(**values)  # type: ignore[arg-type]


def insecure_settings(tmp_path: Path, **kwargs: object) -> AgentSettings:
    values: dict[str, object] = {"superlink": SUPERLINK, "data_dir": tmp_path / "data", "name": "h0", "insecure": True}
    values.update(kwargs)
    return AgentSettings(**values)  # type: ignore[arg-type]


def value_after(command: list[str], flag: str) -> str:
    assert command.count(flag) == 1, f"{flag} appears {command.count(flag)} times in {command}"
    return command[command.index(flag) + 1]


# ---------------------------------------------------------------------- settings
def test_valid_settings(tmp_path: Path, material: tuple[Path, Path]) -> None:
    s = settings(tmp_path, material)
    assert s.runtime_port == agent_module.DEFAULT_RUNTIME_PORT
    assert insecure_settings(tmp_path).insecure


@pytest.mark.parametrize("drop", ["ca_cert", "key", "both"])
def test_tls_material_is_required_without_insecure(tmp_path: Path, material: tuple[Path, Path], drop: str) -> None:
    ca, key = material
    kwargs = {"ca_cert": None if drop in ("ca_cert", "both") else ca, "key": None if drop in ("key", "both") else key}
    with pytest.raises(ConfigError, match=r"--ca ca\.crt and --key") as info:
        settings(tmp_path, material, **kwargs)
    assert "--insecure" in str(info.value)


@pytest.mark.parametrize("which", ["ca_cert", "key"])
def test_insecure_with_tls_material_is_refused(tmp_path: Path, material: tuple[Path, Path], which: str) -> None:
    value = material[0] if which == "ca_cert" else material[1]
    with pytest.raises(ConfigError, match="--insecure cannot be combined"):
        insecure_settings(tmp_path, **{which: value})


@pytest.mark.parametrize("name", ["../x", "", "a" * 65, "h 0", "-h0"])
def test_bad_name(tmp_path: Path, material: tuple[Path, Path], name: str) -> None:
    with pytest.raises(ConfigError, match="hospital name"):
        settings(tmp_path, material, name=name)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threads": -1}, "--threads"),
        ({"runtime_port": 0}, "--port"),
        ({"runtime_port": 65536}, "--port"),
        ({"max_backoff_s": 0}, "backoff"),
    ],
)
def test_bad_numbers(tmp_path: Path, material: tuple[Path, Path], kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        settings(tmp_path, material, **kwargs)


# ---------------------------------------------------------------------- command line
def test_secure_supernode_command(tmp_path: Path, material: tuple[Path, Path]) -> None:
    ca, key = material
    command = supernode_command(settings(tmp_path, material, threads=2, runtime_port=9200))
    assert command[:3] == [sys.executable, "-m", "fedward.client.hospital.supernode"]  # Flower's, bounded pulls
    assert value_after(command, "--superlink") == "coordinator.example.org:9092"
    assert value_after(command, "--root-certificates") == str(ca.resolve())
    assert value_after(command, "--auth-supernode-private-key") == str(key.resolve())
    node_config = value_after(command, "--node-config")
    assert f'data-dir="{(tmp_path / "data").resolve()}"' in node_config
    assert 'hospital-name="h0"' in node_config
    assert "threads=2" in node_config
    assert "cache-dir" not in node_config
    assert value_after(command, "--port") == "9200"
    assert value_after(command, "--host") == "127.0.0.1"
    assert value_after(command, "--isolation") == "subprocess"
    assert "--insecure" not in command
    assert "--allow-runtime-dependency-installation" not in command


def test_threads_zero_and_cache_dir(tmp_path: Path, material: tuple[Path, Path]) -> None:
    command = supernode_command(settings(tmp_path, material, cache_dir=tmp_path / "cache"))
    node_config = value_after(command, "--node-config")
    assert "threads=" not in node_config
    assert f'cache-dir="{(tmp_path / "cache").resolve()}"' in node_config


def test_node_config_round_trips_through_flowers_parser(tmp_path: Path, material: tuple[Path, Path]) -> None:
    from flwr.common.config import parse_config_args

    data = tmp_path / "St Mary's data" / "back\\slash"
    command = supernode_command(settings(tmp_path, material, data_dir=data, threads=3))
    parsed = parse_config_args([value_after(command, "--node-config")])
    assert parsed == {"data-dir": str(data.resolve()), "hospital-name": "h0", "threads": 3}


def test_insecure_supernode_command(tmp_path: Path) -> None:
    command = supernode_command(insecure_settings(tmp_path, threads=2))
    assert "--insecure" in command
    assert "--auth-supernode-private-key" not in command
    assert "--root-certificates" not in command
    assert "--allow-runtime-dependency-installation" not in command
    assert "threads=2" in value_after(command, "--node-config")


def test_the_supernode_leaves_tasks_to_the_worker_only_when_there_is_one(tmp_path: Path) -> None:
    cold = supernode_command(insecure_settings(tmp_path))
    assert value_after(cold, "--isolation") == "subprocess" and "--superexec-auth-secret-file" not in cold
    warm = supernode_command(insecure_settings(tmp_path), tmp_path / "superexec.secret")
    assert value_after(warm, "--isolation") == "process"
    assert value_after(warm, "--superexec-auth-secret-file") == str(tmp_path / "superexec.secret")


# ---------------------------------------------------------------------- key check
def test_check_key(tmp_path: Path, material: tuple[Path, Path]) -> None:
    _, key = material
    check_key(key)
    key.chmod(0o400)
    check_key(key)


def test_check_key_missing(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="not found") as info:
        check_key(tmp_path / "h0.key")
    assert "fedward certs node" in str(info.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_check_key_readable_by_others(material: tuple[Path, Path], mode: int) -> None:
    _, key = material
    key.chmod(mode)
    with pytest.raises(AgentError, match="chmod 600"):
        check_key(key)


def test_run_refuses_a_world_readable_key_before_anything_else(
    tmp_path: Path, material: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    material[1].chmod(0o644)
    agent = HospitalAgent(settings(tmp_path, material))
    monkeypatch.setattr(agent, "check_data", lambda: pytest.fail("data checked before the key"))
    with pytest.raises(AgentError, match="chmod 600"):
        agent.run()


# ---------------------------------------------------------------------- data check
def test_check_data_on_a_good_folder(tmp_path: Path) -> None:
    write_dicom_folder(tmp_path / "data", n=6)
    report = HospitalAgent(insecure_settings(tmp_path, classes=CLASSES)).check_data()
    assert report.usable
    assert report.usable_files == 6
    assert report.problems == []


def test_check_data_accepts_a_folder_with_one_bad_file_among_good_ones(tmp_path: Path) -> None:
    folder = write_dicom_folder(tmp_path / "data", n=6)
    (folder / "dicom" / "case-001.dcm").write_text("not an image")
    report = HospitalAgent(insecure_settings(tmp_path, classes=CLASSES)).check_data()
    assert report.usable_files == 5
    assert dict(report.reasons) == {"not-dicom": 1}


def test_check_data_refuses_a_folder_of_bad_files(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    (folder / "dicom").mkdir(parents=True)
    (folder / "dicom" / "report.dcm").write_text("a dictated report, not an image\n" * 10)
    with open(folder / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "split"], ["dicom/report.dcm", "normal", "train"]])
    with pytest.raises(UnusableDataError, match="not usable for training") as info:
        HospitalAgent(insecure_settings(tmp_path, classes=CLASSES)).check_data()
    assert info.value.report.usable_files == 0
    assert dict(info.value.report.reasons) == {"not-dicom": 1}
    assert isinstance(info.value, AgentError)


def test_check_data_refuses_labels_outside_the_federation(tmp_path: Path) -> None:
    write_dicom_folder(tmp_path / "data", n=4, classes=("normal", "covid"))
    with pytest.raises(UnusableDataError) as info:
        HospitalAgent(insecure_settings(tmp_path, classes=CLASSES)).check_data()
    assert info.value.report.reasons["label-unknown"] == 2


def test_check_data_refuses_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(FedwardError):
        HospitalAgent(insecure_settings(tmp_path, classes=CLASSES)).check_data()


def test_check_data_reports_an_empty_folder_as_unusable_data(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(UnusableDataError):
        HospitalAgent(insecure_settings(tmp_path, classes=CLASSES)).check_data()


def test_run_stops_on_unusable_data_before_connecting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dicom_folder(tmp_path / "data", n=4, classes=("normal", "covid"))
    monkeypatch.setattr(agent_module, "probe", lambda *a, **k: pytest.fail("connected with unusable data"))
    with pytest.raises(UnusableDataError):
        HospitalAgent(insecure_settings(tmp_path, classes=CLASSES)).run()


# ---------------------------------------------------------------------- coordinator backoff
class FlakyProbe:
    """Raises the given errors in order, then succeeds; records what it was asked."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls: list[tuple[Address, Path | None]] = []

    def __call__(self, address: Address, ca_cert: Path | None, **kwargs: object) -> None:
        self.calls.append((address, ca_cert))
        if self.errors:
            raise self.errors.pop(0)


def unreachable(n: int) -> list[Exception]:
    return [SuperLinkUnreachableError("nobody home") for _ in range(n)]


def test_wait_backs_off_1_2_4(tmp_path: Path, material: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = FlakyProbe(*unreachable(3))
    monkeypatch.setattr(agent_module, "probe", flaky)
    sleeps: list[float] = []
    HospitalAgent(settings(tmp_path, material), sleep=sleeps.append).wait_for_coordinator()
    assert sleeps == [1, 2, 4]
    assert flaky.calls == [(SUPERLINK, material[0])] * 4


def test_wait_backoff_is_capped(tmp_path: Path, material: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_module, "probe", FlakyProbe(*unreachable(3)))
    sleeps: list[float] = []
    HospitalAgent(settings(tmp_path, material, max_backoff_s=2), sleep=sleeps.append).wait_for_coordinator()
    assert sleeps == [1, 2, 2]


def test_wait_insecure_probes_without_a_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = FlakyProbe()
    monkeypatch.setattr(agent_module, "probe", flaky)
    HospitalAgent(insecure_settings(tmp_path), sleep=lambda s: pytest.fail("slept")).wait_for_coordinator()
    assert flaky.calls == [(SUPERLINK, None)]


@pytest.mark.parametrize("error", [UntrustedSuperLinkError("wrong CA"), TransportMismatchError("plain")])
def test_wait_does_not_retry_trust_problems(
    tmp_path: Path, material: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    flaky = FlakyProbe(error, *unreachable(2))
    monkeypatch.setattr(agent_module, "probe", flaky)
    sleeps: list[float] = []
    with pytest.raises(type(error)):
        HospitalAgent(settings(tmp_path, material), sleep=sleeps.append).wait_for_coordinator()
    assert sleeps == []
    assert len(flaky.calls) == 1


def test_wait_stops_when_asked(tmp_path: Path, material: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = FlakyProbe(*unreachable(10))
    monkeypatch.setattr(agent_module, "probe", flaky)
    agent = HospitalAgent(settings(tmp_path, material))

    def sleep(seconds: float) -> None:
        agent._stopping = True

    agent.sleep = sleep
    agent.wait_for_coordinator()
    assert len(flaky.calls) == 1


# ---------------------------------------------------------------------- SuperNode loop
REFUSAL_LINES = ("ERROR :     Exit Code: 305", "ERROR :     [code: 2004] Failed to activate SuperNode.")


def test_refused_key_is_reported_not_retried(
    tmp_path: Path, material: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[int] = []

    def refused(self: HospitalAgent) -> int:
        runs.append(1)
        self._tail.extend(["INFO : Starting Flower SuperNode", *REFUSAL_LINES])
        return 1

    monkeypatch.setattr(HospitalAgent, "_run_supernode", refused)
    monkeypatch.setattr(agent_module, "probe", FlakyProbe())
    sleeps: list[float] = []
    agent = HospitalAgent(settings(tmp_path, material), sleep=sleeps.append)
    with pytest.raises(AgentError, match="fedward server register h0") as info:
        agent._loop()
    message = str(info.value)
    assert "h0.pub" in message
    assert "[code: 2004] Failed to activate SuperNode." in message
    assert str(SUPERLINK) in message
    assert runs == [1]
    assert sleeps == []


def test_exit_code_305_alone_is_a_refusal(
    tmp_path: Path, material: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(HospitalAgent, "_run_supernode", lambda self: agent_module.EXIT_CONNECTION_REFUSED)
    monkeypatch.setattr(agent_module, "probe", FlakyProbe())
    with pytest.raises(AgentError, match="Flower exit code 305"):
        HospitalAgent(settings(tmp_path, material), sleep=lambda s: None)._loop()


def test_other_exits_reconnect_with_backoff(
    tmp_path: Path, material: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    codes = [1, 1, 1, 0]
    sleeps: list[float] = []
    agent = HospitalAgent(settings(tmp_path, material, max_backoff_s=3), sleep=sleeps.append)

    def exits(self: HospitalAgent) -> int:
        self._tail.append("ERROR : Connection attempt failed")
        code = codes.pop(0)
        if not codes:
            self._stopping = True  # as SIGTERM would
        return code

    monkeypatch.setattr(HospitalAgent, "_run_supernode", exits)
    probe = FlakyProbe(*unreachable(1))
    monkeypatch.setattr(agent_module, "probe", probe)
    assert agent._loop() == 0
    # 1 s while the coordinator was unreachable, then 1, 2, 3 (capped) between SuperNode exits.
    assert sleeps == [1, 1, 2, 3]
    assert len(probe.calls) == 5


def test_loop_propagates_trust_problems(
    tmp_path: Path, material: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(HospitalAgent, "_run_supernode", lambda self: pytest.fail("SuperNode started"))
    monkeypatch.setattr(agent_module, "probe", FlakyProbe(UntrustedSuperLinkError("wrong CA")))
    with pytest.raises(UntrustedSuperLinkError):
        HospitalAgent(settings(tmp_path, material), sleep=lambda s: None)._loop()
