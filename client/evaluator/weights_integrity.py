"""Weights integrity of a model directory: the SHA-256 hashes recorded for a weights file, checked.

Run directories record a weights file's hash in ``models/manifest.json`` (when the file
was written) and in the model card's ``weights`` entry; pulled models in ``pull.json`` and
the card's entry for the pulled round. :func:`verified_sha256` checks a file against every
one of them (:mod:`fedward.client.evaluator.model_dir` opens the directory).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fedward.client.evaluator.pulled_layout import PULL_RECORD
from fedward.common.errors import IntegrityError, ModelError
from fedward.common.fileio import sha256_of
from fedward.common.rundir.layout import CARD_JSON, MANIFEST_FILE, MODELS_DIR

log = logging.getLogger(__name__)

Recorded = list[tuple[str, str]]
"""(where it is recorded, hex SHA-256) pairs a weights file must match."""


def verified_sha256(weights: Path, recorded: Recorded) -> str:
    """The weights' SHA-256, checked against every recorded one.

    Raises:
        ModelError: if the weights cannot be read.
        IntegrityError: if a recorded hash differs.
    """
    try:
        sha256 = sha256_of(weights)
    except OSError as err:
        raise ModelError(f"cannot read weights file {weights}: {err.strerror or err}") from None
    for source, expected in recorded:
        if sha256 != expected.lower():
            raise IntegrityError(
                f"{weights}: sha256 {sha256} differs from the {expected} recorded in {source}; the weights "
                "changed after training: pull the model again (or restore the run directory from a backup)"
            )
    if not recorded:
        log.warning("%s: no recorded sha256 to check the weights against; using them unverified", weights)
    return sha256


def _card_entries(card: dict[str, Any]) -> list[dict[str, Any]]:
    weights = card.get("weights")
    return [e for e in weights.values() if isinstance(e, dict)] if isinstance(weights, dict) else []


def run_hashes(weights: Path, entry: Any, card: dict[str, Any]) -> Recorded:
    """(source, sha256) pairs recorded for a run directory's weights file."""
    out: Recorded = []
    if isinstance(entry, dict) and entry.get("sha256"):
        out.append((MANIFEST_FILE, str(entry["sha256"])))
    relative = f"{MODELS_DIR}/{weights.name}"
    for item in _card_entries(card):
        if item.get("file") == relative and item.get("sha256"):
            out.append((CARD_JSON, str(item["sha256"])))
            break
    return out


def pulled_hashes(record: dict[str, Any], card: dict[str, Any], model_round: int | None) -> Recorded:
    """(source, sha256) pairs recorded for a pulled model's weights."""
    out: Recorded = []
    if record.get("sha256"):
        out.append((PULL_RECORD, str(record["sha256"])))
    if model_round is not None:
        for item in _card_entries(card):
            if as_int(item.get("round")) == model_round and item.get("sha256"):
                out.append((CARD_JSON, str(item["sha256"])))
                break
    return out


def as_int(value: Any) -> int | None:
    """``value`` as an int (a recorded round), ``None`` when it is missing, a bool or not a number."""
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
