"""Download a global model from a fedward model registry, and verify it before keeping it.

:func:`pull` fetches a run's description and its run files (model card as JSON and
Markdown, config, ``run.json`` with the dataset schema: those the run has), then streams
the weights into a temporary file in the output folder while hashing them
(:class:`~fedward.client.evaluator.registry_client.RegistryClient`). The SHA-256 must equal
both the ``X-Fedward-SHA256`` header (the hash the registry recorded at training time) and
an independent record: the model card's ``weights.best.sha256`` for the best model (the
run's model list when the run has no card yet), the run's model list entry for a given
round. Only then are the run files written and the weights renamed to
``model.safetensors`` (:mod:`fedward.client.evaluator.pulled_layout`); on any mismatch the
temporary file is deleted and :class:`~fedward.common.errors.IntegrityError` is raised, so
no partial or unverified file is ever left behind.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fedward.client.evaluator.pulled_layout import PULL_RECORD, PULLED_WEIGHTS
from fedward.client.evaluator.registry_client import Download, RegistryClient, RegistryRequestError
from fedward.common.errors import ConfigError, IntegrityError
from fedward.common.fileio import atomic_write, write_atomically
from fedward.common.registry_api import BEST, BEST_KEY, MODELS_KEY, RUN_FILES, SHA256_HEADER
from fedward.common.rundir.layout import CARD_JSON
from fedward.common.timestamps import now_iso

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PulledModel:
    """A verified download.

    Attributes:
        run: the run id.
        round: the round whose global model was pulled.
        sha256: hex SHA-256 of the weights (verified).
        bytes: size of the weights, bytes.
        path: ``<out_dir>/model.safetensors``.
        files: every file written into the output folder.
    """

    run: str
    round: int
    sha256: str
    bytes: int
    path: Path
    files: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class _Expected:
    """What the weights asked for must hash to, besides the registry's header.

    Attributes:
        sha256: the independently recorded hex SHA-256.
        round: the round the weights belong to.
        source: where that hash is recorded (``the model card``, ``the run's model list``).
    """

    sha256: str
    round: int
    source: str


def parse_which(text: str | int) -> str | int:
    """``best`` or a round number (>= 0) from ``--round``.

    Raises:
        ConfigError: for anything else.
    """
    if isinstance(text, int) or str(text).strip().isdigit():
        value = int(text)
        if value >= 0:
            return value
    elif str(text).strip().lower() == BEST:
        return BEST
    raise ConfigError(f"--round must be {BEST!r} or a round number (0, 1, ...); got {text!r}")


def pull(
    registry_url: str,
    token: str | None,
    run: str,
    which: str | int = BEST,
    out_dir: Path = Path("."),
    ca: Path | None = None,
    *,
    insecure: bool = False,
    http: httpx.Client | None = None,
) -> PulledModel:
    """Download a run's weights and run files, verified, into ``out_dir``.

    Writes ``model.safetensors``, the run files the run has (``model_card.json``,
    ``model_card.md``, ``config.toml``, ``run.json``) and ``pull.json`` (``registry``,
    ``run``, ``round``, ``sha256``, ``bytes``, ``pulled``, ``verified-against``).

    Args:
        registry_url: ``https://HOST:PORT`` of the registry.
        token: bearer token.
        run: run id (see :meth:`RegistryClient.runs`).
        which: ``"best"`` or a round number.
        out_dir: folder to write into (created).
        ca: the federation's CA certificate; ``None``: the system's trust store.
        insecure: allow a plain ``http://`` URL.
        http: an ``httpx.Client`` to use (tests).

    Returns:
        What was pulled.

    Raises:
        ConfigError: for a bad URL, token, CA file or ``which``, or an unwritable ``out_dir``.
        RegistryRequestError: if the registry refuses, has no such run/round, or cannot be reached.
        IntegrityError: if the weights' SHA-256 differs from the recorded ones; nothing of
            the weights is left in ``out_dir``.
    """
    which = parse_which(which)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {out_dir}: cannot create it ({err.strerror or err})") from None
    with RegistryClient(registry_url, token, ca=ca, insecure=insecure, http=http) as client:
        detail = client.run(run)
        run_files = {f.file: client.run_file(run, f) for f in RUN_FILES}
        expected = _expected(run, which, detail, _card(run, run_files[CARD_JSON]))
        download, written = _keep(client, run, which, expected, run_files, out_dir)
    record = _write_record(out_dir, client.url, run, download, expected)
    log.info(
        "pulled run %s round %d (%d bytes, sha256 %s) into %s",
        *(run, expected.round, download.bytes, download.sha256, out_dir),
    )
    return PulledModel(run, expected.round, download.sha256, download.bytes, written[0], (*written, record))


def list_runs(
    registry_url: str, token: str | None, ca: Path | None = None, *, insecure: bool = False
) -> list[dict[str, Any]]:
    """The runs a registry serves (see :meth:`RegistryClient.runs`).

    Raises:
        ConfigError: for a bad URL, token or CA file.
        RegistryRequestError: if the registry refuses the token or cannot be reached.
    """
    with RegistryClient(registry_url, token, ca=ca, insecure=insecure) as client:
        return client.runs()


def _keep(
    client: RegistryClient,
    run: str,
    which: str | int,
    expected: _Expected,
    run_files: dict[str, bytes | None],
    out_dir: Path,
) -> tuple[Download, list[Path]]:
    """Download and verify the weights, write the run files, then put the weights in place.

    The weights are streamed into a temporary file that becomes ``model.safetensors`` only
    after they verified and every run file was written (one atomic replacement); on any
    failure the temporary file is removed and no weights are left in ``out_dir``.

    Returns:
        The download, and the files written: ``model.safetensors`` first, then the run files.

    Raises:
        IntegrityError: if the weights do not verify.
        RegistryRequestError: if the download fails.
        ConfigError: if a file cannot be written.
    """
    downloads: list[Download] = []
    written: list[Path] = []

    def fetch(tmp: Path) -> None:
        download = client.download(run, which, tmp)
        _verify(run, download, expected)
        downloads.append(download)
        for name, data in run_files.items():
            if data is not None:
                _write(out_dir / name, data)
                written.append(out_dir / name)

    target = out_dir / PULLED_WEIGHTS
    try:
        write_atomically(target, fetch)
    except OSError as err:
        raise ConfigError(f"--out {out_dir}: cannot write {target.name} ({err.strerror or err})") from None
    return downloads[0], [target, *written]


def _write_record(out_dir: Path, registry: str, run: str, download: Download, expected: _Expected) -> Path:
    """Write ``pull.json``: where the weights came from, their verified hash and what it was checked against."""
    record = {
        "registry": registry,
        "run": run,
        "round": expected.round,
        "sha256": download.sha256,
        "bytes": download.bytes,
        "pulled": now_iso(),
        "verified-against": [f"{SHA256_HEADER} header", expected.source],
    }
    _write(out_dir / PULL_RECORD, json.dumps(record, indent=2) + "\n")
    return out_dir / PULL_RECORD


def _write(path: Path, data: bytes | str) -> None:
    """Replace a file of the output folder atomically.

    Raises:
        ConfigError: naming the folder and file, if it cannot be written.
    """
    try:
        atomic_write(path, data)
    except OSError as err:
        raise ConfigError(f"--out {path.parent}: cannot write {path.name} ({err.strerror or err})") from None


def _card(run: str, data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        card = json.loads(data)
    except ValueError:
        raise RegistryRequestError(f"the model card of run {run} is not valid JSON") from None
    return card if isinstance(card, dict) else None


def _expected(run: str, which: str | int, detail: dict[str, Any], card: dict[str, Any] | None) -> _Expected:
    """The hash and round of the weights asked for, as recorded besides the header.

    Raises:
        RegistryRequestError: if the run has no such weights or their record is malformed.
    """
    try:
        return _recorded(run, which, detail, card)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise RegistryRequestError(f"run {run}: the registry's record of the weights ({which}) is malformed") from None


def _recorded(run: str, which: str | int, detail: dict[str, Any], card: dict[str, Any] | None) -> _Expected:
    models = detail.get(MODELS_KEY) or []
    if which == BEST:
        weights = card.get("weights") if card is not None else None
        best = weights.get("best") if isinstance(weights, dict) else None
        if isinstance(best, dict) and best.get("sha256") is not None:
            return _Expected(str(best["sha256"]), int(best["round"]), "the model card")
        listed = detail.get(BEST_KEY)
        if not isinstance(listed, dict):
            raise RegistryRequestError(f"run {run} has no best model yet")
        log.warning("run %s has no model card (still running?): verifying against its model list", run)
        return _Expected(str(listed["sha256"]), int(listed["round"]), "the run's model list")
    for entry in models:
        if isinstance(entry, dict) and entry.get("round") == which:
            return _Expected(str(entry["sha256"]), int(which), "the run's model list")
    rounds = [str(e.get("round")) for e in models if isinstance(e, dict)]
    raise RegistryRequestError(f"run {run} has no weights for round {which} (rounds: {', '.join(rounds) or 'none'})")


def _verify(run: str, download: Download, expected: _Expected) -> None:
    """Raise IntegrityError unless the bytes match the header and the independent record."""
    where = f"run {run} round {expected.round}"
    if download.header_sha256 is None:
        raise IntegrityError(f"{where}: the registry sent no {SHA256_HEADER} header; the weights cannot be verified")
    checks = (
        (download.header_sha256.lower(), f"the registry's {SHA256_HEADER} header"),
        (expected.sha256.lower(), expected.source),
    )
    for recorded, label in checks:
        if download.sha256 != recorded:
            raise IntegrityError(
                f"{where}: the downloaded weights have sha256 {download.sha256} but {label} records {recorded}; "
                "the file on the registry was changed after training (if the run is still training, its best "
                "model may have just changed: pull again). The download was deleted."
            )
    if download.header_round is not None and download.header_round != str(expected.round):
        raise IntegrityError(
            f"{where}: the registry sent round {download.header_round} but {expected.source} records round "
            f"{expected.round}"
        )
