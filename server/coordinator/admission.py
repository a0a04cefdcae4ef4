"""The coordinator's hospital roster: which public key belongs to which hospital.

Flower registers SuperNode public keys and hands out node ids, but keeps no names a
coordinator can list. fedward keeps the roster ``<state>/hospitals.json``: hospital
name -> node id, the key's SHA-256 fingerprint (as ``ssh-keygen -l`` prints it) and when
it was registered. Registration goes through Flower first and the roster is written only
when Flower accepted the key, atomically (:func:`~fedward.common.fileio.atomic_write`:
write, fsync, rename, fsync the folder).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from fedward.common.errors import FedwardError
from fedward.common.fileio import atomic_write, read_json_object
from fedward.common.flower.flwr_cli import FlwrCli
from fedward.common.security.certs import check_name, read_public_key
from fedward.common.timestamps import now_iso


class AdmissionError(FedwardError):
    """A hospital cannot be registered, found or unregistered."""


@dataclass(frozen=True, slots=True)
class Hospital:
    """A registered hospital.

    Attributes:
        name: the coordinator's name for it.
        node_id: Flower's SuperNode id for its key.
        fingerprint: ``SHA256:<base64>`` of its public key.
        registered_at: ISO 8601 UTC time of registration.
    """

    name: str
    node_id: int
    fingerprint: str
    registered_at: str


@dataclass(frozen=True, slots=True)
class HospitalStatus:
    """A registered hospital as the SuperLink sees it now.

    Attributes:
        hospital: the roster entry.
        status: Flower's node status (``online``, ``offline``, ``registered``, or
            ``unknown`` when the SuperLink no longer knows the node).
        last_seen: time it was last online as Flower reports it (UTC), ``now`` while
            online, ``never`` if it never connected.
    """

    hospital: Hospital
    status: str
    last_seen: str


def fingerprint(public_key_line: str) -> str:
    """``SHA256:<base64 without padding>`` of an OpenSSH public key, as ``ssh-keygen -l`` shows it."""
    blob = base64.b64decode(public_key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def read_entries(path: Path) -> dict[str, Hospital]:
    """Registered hospitals by name from a roster file (empty if there is none).

    Raises:
        AdmissionError: if the file is corrupt.
    """
    if not Path(path).is_file():
        return {}
    try:
        raw = read_json_object(Path(path))
        if not all(isinstance(entry, dict) for entry in raw.values()):
            raise TypeError("not an object of hospital entries")
        return {name: Hospital(**entry) for name, entry in raw.items()}
    except (ValueError, TypeError) as err:
        raise AdmissionError(f"{path} is corrupt ({err}); restore it from a backup") from None


def read_registered_names(path: Path) -> dict[int, str]:
    """Node id -> registered name; empty when the roster is missing or unreadable."""
    with contextlib.suppress(AdmissionError):
        return {h.node_id: h.name for h in read_entries(path).values()}
    return {}


class HospitalRoster:
    """Register, list and unregister hospitals of one coordinator.

    Args:
        path: the roster file (``<state>/hospitals.json``).
        flwr: the ``flwr`` CLI bound to the coordinator's SuperLink.
    """

    def __init__(self, path: Path, flwr: FlwrCli) -> None:
        self.path = Path(path)
        self.flwr = flwr

    def entries(self) -> dict[str, Hospital]:
        """Registered hospitals by name.

        Raises:
            AdmissionError: if the roster file is corrupt.
        """
        return read_entries(self.path)

    def _save(self, entries: dict[str, Hospital]) -> None:
        """Replace the roster file with ``entries``, sorted by name, atomically and durably."""
        data = json.dumps({name: asdict(h) for name, h in sorted(entries.items())}, indent=2) + "\n"
        atomic_write(self.path, data, durable=True)

    def register(self, name: str, public_key: Path) -> Hospital:
        """Register a hospital's public key under ``name``.

        Raises:
            ConfigError: if ``name`` is not a valid hospital name.
            CertificateError: if ``public_key`` is not an OpenSSH ECDSA public key.
            AdmissionError: if the name or the key is already registered.
            FlowerCliError: if the SuperLink refuses or cannot be reached.
        """
        check_name(name)
        line = read_public_key(public_key)
        print_ = fingerprint(line)
        entries = self.entries()
        if name in entries:
            raise AdmissionError(f"hospital {name!r} is already registered (node {entries[name].node_id})")
        for other in entries.values():
            if other.fingerprint == print_:
                raise AdmissionError(f"this key is already registered for hospital {other.name!r}")
        node_id = self.flwr.register_supernode(public_key, name)
        now = now_iso()
        hospital = Hospital(name, node_id, print_, now)
        self._save({**entries, name: hospital})
        return hospital

    def unregister(self, name: str) -> Hospital:
        """Unregister a hospital: its key can no longer connect.

        Raises:
            AdmissionError: if no hospital has this name.
            FlowerCliError: if the SuperLink cannot be reached.
        """
        entries = self.entries()
        hospital = entries.pop(name, None)
        if hospital is None:
            known = ", ".join(sorted(entries)) or "none"
            raise AdmissionError(f"no hospital named {name!r} is registered (registered: {known})")
        known_ids = {int(n["node-id"]) for n in self.flwr.supernodes()}
        if hospital.node_id in known_ids:
            self.flwr.unregister_supernode(hospital.node_id)
        self._save(entries)
        return hospital

    def status(self) -> list[HospitalStatus]:
        """Every registered hospital with its current status and last-seen time.

        Raises:
            FlowerCliError: if the SuperLink cannot be reached.
        """
        nodes = {int(n["node-id"]): n for n in self.flwr.supernodes()}
        rows = []
        for hospital in sorted(self.entries().values(), key=lambda h: h.name):
            node = nodes.get(hospital.node_id, {})
            status = str(node.get("status", "unknown"))
            seen = [str(node.get(k) or "") for k in ("offline-at", "online-at")]
            known = [t for t in seen if t and t != "N/A"]
            last_seen = "now" if status == "online" else (known[0] if known else "never")
            rows.append(HospitalStatus(hospital, status, last_seen))
        return rows
