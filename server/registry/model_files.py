"""The weight files the registry may serve: those a run's ``models/manifest.json`` recorded, with their hashes.

A weight file is served only if its manifest entry names it ``best.safetensors`` or
``round-NNN.safetensors`` and records a well-formed SHA-256, round and size; what reaches
the file system is that name inside the run's ``models/`` folder, never a path taken from
a request.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedward.common.registry_api import BEST
from fedward.common.rundir.layout import BEST_WEIGHTS, MANIFEST_FILE, MODELS_DIR, round_weights
from fedward.common.rundir.manifest import read_manifest
from fedward.server.registry.tokens import HEX_SHA256

log = logging.getLogger(__name__)

BEST_FILE = Path(BEST_WEIGHTS).name
MODEL_FILE = re.compile(r"^(?:best|round-\d{3,9})\.safetensors$")
"""Names of weight files that may be served (anything else in a manifest is ignored)."""
ROUND_PARAM = re.compile(r"^[0-9]{1,9}$")
"""A round number as a request may give it."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    """A weight file as recorded in ``models/manifest.json`` when it was written.

    Attributes:
        name: file name inside ``models/`` (``round-001.safetensors`` or ``best.safetensors``).
        round: the round whose global model it holds (0 = initial model).
        sha256: hex SHA-256 recorded at training time.
        bytes: size recorded at training time, bytes.
    """

    name: str
    round: int
    sha256: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        """``{"round", "file", "sha256", "bytes"}``: an entry of a run's model list."""
        return {"round": self.round, "file": self.name, "sha256": self.sha256, "bytes": self.bytes}

    def best_json(self) -> dict[str, Any]:
        """``{"round", "sha256", "bytes"}``: the run's best model."""
        return {"round": self.round, "sha256": self.sha256, "bytes": self.bytes}


def recorded_models(run_dir: Path) -> dict[str, ModelFile]:
    """Weight files of a run with their recorded hashes, by file name.

    Entries with a name that is not ``best.safetensors`` / ``round-NNN.safetensors``, or
    with a malformed hash, round or size, are left out: they are never served.

    Returns:
        File name -> :class:`ModelFile`; ``{}`` when the manifest is missing or unreadable.
    """
    try:
        files = read_manifest(run_dir)
    except (OSError, ValueError) as err:
        where = Path(run_dir) / MANIFEST_FILE
        log.warning("cannot read %s (%s): its weights are not served", where, type(err).__name__)
        return {}
    found: dict[str, ModelFile] = {}
    for name, entry in files.items():
        try:
            record = ModelFile(str(name), int(entry["round"]), str(entry["sha256"]), int(entry["bytes"]))
        except (KeyError, TypeError, ValueError):
            continue
        if MODEL_FILE.fullmatch(record.name) and HEX_SHA256.fullmatch(record.sha256) and record.round >= 0:
            found[record.name] = record
    return found


def rounds_and_best(files: dict[str, ModelFile]) -> tuple[list[ModelFile], ModelFile | None]:
    """The per-round weight files sorted by round, and the best model's (``None``: none yet)."""
    rounds = sorted((f for f in files.values() if f.name != BEST_FILE), key=lambda f: f.round)
    return rounds, files.get(BEST_FILE)


def file_name_for(which: str, files: dict[str, ModelFile]) -> str | None:
    """The weight file name a request's ``which`` asks for; ``None`` if ``which`` is malformed.

    Args:
        which: ``best`` or a round number (up to 9 digits).
        files: the run's recorded files (a round is looked up by its recorded round first).
    """
    if which == BEST:
        return BEST_FILE
    if not ROUND_PARAM.fullmatch(which):
        return None
    wanted = int(which)
    by_round = {f.round: f.name for f in files.values() if f.name != BEST_FILE}
    return by_round.get(wanted, Path(round_weights(wanted)).name)


def weights_path(run_dir: Path, name: str) -> Path | None:
    """``<run_dir>/models/<name>`` resolved; ``None`` if it resolves outside ``models/``."""
    models_dir = Path(run_dir).resolve() / MODELS_DIR
    path = (models_dir / name).resolve()
    return path if path.parent == models_dir else None
