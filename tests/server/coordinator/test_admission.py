"""The coordinator's hospital roster, driven through a fake ``flwr`` CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fedward.common.errors import ConfigError
from fedward.common.security.certs import CertificateError, create_node_keys
from fedward.server.coordinator.admission import (
    AdmissionError,
    HospitalRoster,
    fingerprint,
    read_entries,
    read_registered_names,
)


class FakeFlwr:
    """Stands in for :class:`fedward.common.flower.flwr_cli.FlwrCli`: a SuperLink's SuperNode table."""

    def __init__(self) -> None:
        self.next_id = 5
        self.nodes: dict[int, dict[str, Any]] = {}
        self.registered: list[tuple[Path, str]] = []
        self.unregistered: list[int] = []

    def register_supernode(self, public_key: Path, name: str) -> int:
        self.registered.append((public_key, name))
        node_id, self.next_id = self.next_id, self.next_id + 1
        self.nodes[node_id] = {"node-id": str(node_id), "status": "registered", "online-at": "", "offline-at": ""}
        return node_id

    def supernodes(self) -> list[dict[str, Any]]:
        return list(self.nodes.values())

    def unregister_supernode(self, node_id: int) -> None:
        self.unregistered.append(node_id)
        del self.nodes[node_id]


@pytest.fixture
def flwr() -> FakeFlwr:
    return FakeFlwr()


@pytest.fixture
def roster(tmp_path: Path, flwr: FakeFlwr) -> HospitalRoster:
    return HospitalRoster(tmp_path / "state" / "hospitals.json", flwr)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def state_folder(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()


def keys(tmp_path: Path, name: str) -> Path:
    return create_node_keys(name, tmp_path / "keys").public_key


# ---------------------------------------------------------------------- register
def test_register_writes_the_roster(tmp_path: Path, roster: HospitalRoster, flwr: FakeFlwr) -> None:
    pub = keys(tmp_path, "h0")
    hospital = roster.register("st-mary", pub)
    assert flwr.registered == [(pub, "st-mary")]
    assert hospital.name == "st-mary"
    assert hospital.node_id == 5
    assert hospital.fingerprint == fingerprint(pub.read_text())
    assert hospital.fingerprint.startswith("SHA256:")
    raw = json.loads(roster.path.read_text())
    assert raw == {
        "st-mary": {
            "name": "st-mary",
            "node_id": 5,
            "fingerprint": hospital.fingerprint,
            "registered_at": hospital.registered_at,
        }
    }
    assert roster.entries() == {"st-mary": hospital}
    assert not roster.path.with_suffix(".json.tmp").exists()
    assert [p.name for p in roster.path.parent.iterdir()] == ["hospitals.json"]  # no temporary file left


def test_register_keeps_earlier_hospitals(tmp_path: Path, roster: HospitalRoster) -> None:
    a = roster.register("a", keys(tmp_path, "a"))
    b = roster.register("b", keys(tmp_path, "b"))
    assert roster.entries() == {"a": a, "b": b}
    assert (a.node_id, b.node_id) == (5, 6)
    assert read_registered_names(roster.path) == {5: "a", 6: "b"}


def test_same_name_twice_is_refused(tmp_path: Path, roster: HospitalRoster, flwr: FakeFlwr) -> None:
    roster.register("h0", keys(tmp_path, "h0"))
    with pytest.raises(AdmissionError, match="'h0' is already registered"):
        roster.register("h0", keys(tmp_path, "h0-new"))
    assert len(flwr.registered) == 1  # Flower was not asked


def test_same_key_twice_is_refused(tmp_path: Path, roster: HospitalRoster, flwr: FakeFlwr) -> None:
    pub = keys(tmp_path, "h0")
    roster.register("h0", pub)
    copy = tmp_path / "copy.pub"
    copy.write_text(pub.read_text().replace(" h0", " someone-else"))
    with pytest.raises(AdmissionError, match="already registered for hospital 'h0'"):
        roster.register("h1", copy)
    assert len(flwr.registered) == 1
    assert set(roster.entries()) == {"h0"}


def test_register_validates_name_and_key_before_asking_flower(
    tmp_path: Path, roster: HospitalRoster, flwr: FakeFlwr
) -> None:
    with pytest.raises(ConfigError):
        roster.register("../x", keys(tmp_path, "h0"))
    bad = tmp_path / "bad.pub"
    bad.write_text("garbage")
    with pytest.raises(CertificateError):
        roster.register("h0", bad)
    assert flwr.registered == []
    assert not roster.path.exists()


def test_flower_refusal_leaves_the_roster_untouched(tmp_path: Path, roster: HospitalRoster) -> None:
    roster.register("a", keys(tmp_path, "a"))
    before = roster.path.read_text()

    def refuse(public_key: Path, name: str) -> int:
        raise AdmissionError("refused by the fake")

    roster.flwr.register_supernode = refuse  # type: ignore[method-assign]
    with pytest.raises(AdmissionError, match="refused by the fake"):
        roster.register("b", keys(tmp_path, "b"))
    assert roster.path.read_text() == before


# ---------------------------------------------------------------------- status
def test_status_merges_flower_rows(tmp_path: Path, roster: HospitalRoster, flwr: FakeFlwr) -> None:
    for name in ("d-online", "c-offline", "b-never", "a-gone"):
        roster.register(name, keys(tmp_path, name))
    ids = {h.name: h.node_id for h in roster.entries().values()}
    flwr.nodes[ids["d-online"]] = {
        "node-id": str(ids["d-online"]),
        "status": "online",
        "online-at": "2026-01-01T10:00:00Z",
        "offline-at": "2025-12-31T09:00:00Z",
    }
    flwr.nodes[ids["c-offline"]] = {
        "node-id": str(ids["c-offline"]),
        "status": "offline",
        "online-at": "2026-01-01T08:00:00Z",
        "offline-at": "2026-01-01T09:00:00Z",
    }
    flwr.nodes[ids["b-never"]] = {"node-id": str(ids["b-never"]), "status": "registered", "online-at": "N/A"}
    del flwr.nodes[ids["a-gone"]]
    rows = {row.hospital.name: row for row in roster.status()}
    assert [row.hospital.name for row in roster.status()] == ["a-gone", "b-never", "c-offline", "d-online"]
    assert (rows["d-online"].status, rows["d-online"].last_seen) == ("online", "now")
    assert (rows["c-offline"].status, rows["c-offline"].last_seen) == ("offline", "2026-01-01T09:00:00Z")
    assert (rows["b-never"].status, rows["b-never"].last_seen) == ("registered", "never")
    assert (rows["a-gone"].status, rows["a-gone"].last_seen) == ("unknown", "never")
    assert rows["d-online"].hospital == roster.entries()["d-online"]


def test_status_of_an_empty_roster(roster: HospitalRoster) -> None:
    assert roster.status() == []


# ---------------------------------------------------------------------- unregister
def test_unregister_calls_flower_and_removes_the_entry(tmp_path: Path, roster: HospitalRoster, flwr: FakeFlwr) -> None:
    roster.register("a", keys(tmp_path, "a"))
    b = roster.register("b", keys(tmp_path, "b"))
    assert roster.unregister("b") == b
    assert flwr.unregistered == [b.node_id]
    assert set(roster.entries()) == {"a"}
    assert b.node_id not in flwr.nodes


def test_unregister_a_node_flower_forgot(tmp_path: Path, roster: HospitalRoster, flwr: FakeFlwr) -> None:
    a = roster.register("a", keys(tmp_path, "a"))
    del flwr.nodes[a.node_id]
    roster.unregister("a")
    assert flwr.unregistered == []
    assert roster.entries() == {}


def test_unregister_unknown_name_lists_registered(tmp_path: Path, roster: HospitalRoster, flwr: FakeFlwr) -> None:
    with pytest.raises(AdmissionError, match=r"registered: none"):
        roster.unregister("ghost")
    roster.register("b", keys(tmp_path, "b"))
    roster.register("a", keys(tmp_path, "a"))
    before = roster.path.read_text()
    with pytest.raises(AdmissionError, match=r"no hospital named 'ghost' is registered \(registered: a, b\)"):
        roster.unregister("ghost")
    assert flwr.unregistered == []
    assert roster.path.read_text() == before


# ---------------------------------------------------------------------- files and fingerprints
@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    pub = keys(tmp_path, "h0")
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    assert out.split()[1] == fingerprint(pub.read_text())


def test_fingerprint_ignores_the_comment(tmp_path: Path) -> None:
    line = keys(tmp_path, "h0").read_text().strip()
    key_type, blob = line.split()[:2]
    assert fingerprint(f"{key_type} {blob}") == fingerprint(f"{key_type} {blob} another comment")
    assert "=" not in fingerprint(line)


def test_read_entries_of_a_missing_file(tmp_path: Path) -> None:
    assert read_entries(tmp_path / "nope.json") == {}
    assert read_registered_names(tmp_path / "nope.json") == {}


@pytest.mark.parametrize("content", ["{not json", '{"h0": {"name": "h0"}}', '{"h0": 3}'])
def test_corrupt_roster(tmp_path: Path, roster: HospitalRoster, content: str) -> None:
    roster.path.write_text(content)
    assert read_registered_names(roster.path) == {}
    with pytest.raises(AdmissionError, match="corrupt"):
        read_entries(roster.path)
    with pytest.raises(AdmissionError, match="corrupt"):
        roster.register("h0", keys(tmp_path, "h0"))


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', "3"])
def test_roster_that_is_not_a_json_object_is_corrupt(tmp_path: Path, content: str) -> None:
    path = tmp_path / "hospitals.json"
    path.write_text(content)
    assert read_registered_names(path) == {}
    with pytest.raises(AdmissionError, match="corrupt"):
        read_entries(path)
