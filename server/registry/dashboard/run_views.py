"""What the dashboard shows of a run, read from its directory: small JSON-ready dicts, cached per file.

The run's entry (status, round k/N, best validation AUC, test AUC, epsilon) is
:func:`fedward.common.rundir.reader.read_entry`'s; rows come from ``metrics/server.jsonl``
and ``metrics/hospitals.jsonl`` through :func:`fedward.common.fileio.read_jsonl`, reduced
to the figures the pages draw. Every result is cached in a
:class:`~fedward.server.registry.dashboard.file_cache.FileCache` until one of the files
it came from changes. Nothing here reads images or anything about patients: the run
directory holds counts and metrics only.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedward.common.fileio import read_json_or_empty, read_jsonl
from fedward.common.rundir.layout import (
    BEST_RECORD,
    BEST_WEIGHTS,
    CARD_JSON,
    CARD_MD,
    CONFIG_FILE,
    RUN_FILE,
    SITES_FILE,
    STATUS_FILE,
    RunDir,
)
from fedward.common.rundir.reader import RunEntry, read_entry, run_directories
from fedward.server.registry.dashboard.file_cache import FileCache

SERVER_KEYS = (
    "round",
    "time",
    "train-loss",
    "val-auc",
    "test-auc",
    "epsilon",
    "dpsgd-epsilon",
    "hospitals-trained",
    "hospitals-rejected",
    "hospitals-failed",
)
"""The per-round figures the run page draws or tabulates (of the many ``server.jsonl`` holds)."""
REASONS_KEPT = 5
"""Most recent rejection/failure reasons shown per hospital."""
ENTRY_FILES = (STATUS_FILE, CARD_JSON, CONFIG_FILE, RUN_FILE, BEST_RECORD)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _rows(path: Path) -> list[dict[str, Any]]:
    try:
        return read_jsonl(path)
    except OSError:
        return []


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def public_entry(entry: RunEntry) -> dict[str, Any]:
    """A run's index entry as JSON, without its path on the server."""
    data = entry.to_json()
    data.pop("path", None)
    return data


class RunViews:
    """Cached views of the run directories of one runs folder.

    Args:
        root: the runs folder (resolved).
        cache: the parse cache (one per app).
    """

    def __init__(self, root: Path, cache: FileCache | None = None) -> None:
        self.root = root
        self.cache = cache if cache is not None else FileCache()

    def run_dir(self, run: str) -> Path | None:
        """The run directory named ``run`` in the folder, or ``None`` (never a path built from ``run``)."""
        for path in run_directories(self.root):
            if path.name == run:
                return path
        return None

    def entry(self, run_dir: Path) -> RunEntry:
        """The run's entry (:func:`read_entry`), re-read only when one of its files changed."""
        paths = [run_dir / name for name in ENTRY_FILES] + [RunDir(run_dir).rows("server")]
        return self.cache.get("entry", paths, lambda: read_entry(run_dir))

    def runs(self) -> list[dict[str, Any]]:
        """Every run of the folder (newest first), as the runs list shows them."""
        entries = [self.entry(path) for path in run_directories(self.root)]
        entries.sort(key=lambda e: (e.started or "", e.run_id), reverse=True)
        return [public_entry(e) for e in entries]

    def server_rows(self, run_dir: Path) -> list[dict[str, Any]]:
        """``metrics/server.jsonl`` reduced to :data:`SERVER_KEYS`, one dict per round."""
        path = RunDir(run_dir).rows("server")
        return self.cache.get(
            "server", [path], lambda: [{k: row[k] for k in SERVER_KEYS if k in row} for row in _rows(path)]
        )

    def hospital_summaries(self, run_dir: Path) -> list[dict[str, Any]]:
        """One summary per hospital from ``metrics/hospitals.jsonl`` and ``hospitals.json`` (else the card's list)."""
        rows_path, sites_path, card_path = RunDir(run_dir).rows("hospitals"), run_dir / SITES_FILE, run_dir / CARD_JSON
        return self.cache.get(
            "hospitals",
            [rows_path, sites_path, card_path],
            lambda: summarise_hospitals(
                _rows(rows_path),
                read_json_or_empty(sites_path).get("hospitals") or read_json_or_empty(card_path).get("hospitals"),
            ),
        )

    def config(self, run_dir: Path) -> dict[str, Any]:
        """``config.toml`` as a dict (``{}`` if missing or damaged)."""
        path = run_dir / CONFIG_FILE
        return self.cache.get("config", [path], lambda: _toml(path))

    def json_file(self, run_dir: Path, name: str) -> dict[str, Any]:
        """A JSON file of the run (``status.json``, ``run.json``, ``model_card.json``), ``{}`` if absent."""
        path = run_dir / name
        return self.cache.get("json", [path], lambda: read_json_or_empty(path))

    def run(self, run_dir: Path) -> dict[str, Any]:
        """Everything the run page polls: entry, status, per-round rows, hospitals, privacy, downloads."""
        entry = self.entry(run_dir)
        status = self.json_file(run_dir, STATUS_FILE)
        server = self.server_rows(run_dir)
        return {
            "run": public_entry(entry),
            "updated": status.get("updated"),
            "reason": status.get("reason") or None,
            "fedward": self.json_file(run_dir, RUN_FILE).get("fedward"),
            "server": server,
            "hospitals": with_presence(self.hospital_summaries(run_dir), server, entry.status),
            "privacy": privacy_budget(entry, self.config(run_dir)),
            "downloads": {
                "best-model": (run_dir / BEST_WEIGHTS).is_file(),
                "card-md": (run_dir / CARD_MD).is_file(),
                "card-json": (run_dir / CARD_JSON).is_file(),
            },
        }


def _new_hospital(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "last-round": None,
        "fedward": None,
        "train-images": None,
        "val-images": None,
        "train-seconds": [],
        "val-auc": [],
        "rejected": 0,
        "failed": 0,
        "reasons": [],
    }


def summarise_hospitals(rows: Sequence[Mapping[str, Any]], card_hospitals: Any = None) -> list[dict[str, Any]]:
    """Per hospital: last round seen, images, train seconds and val-AUC per round, rejections/failures.

    Args:
        rows: ``metrics/hospitals.jsonl`` rows (``hospital``, ``phase``, ``round``, metrics).
        card_hospitals: the enrolled hospitals (``hospitals.json``, or the model card's
            ``hospitals`` list): names, image counts and fedward versions.

    Returns:
        Summaries sorted by hospital name. ``fedward`` (the hospital's version) is ``None``
        where nothing records it (runs made before ``hospitals.json`` existed).
    """
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        name, phase, server_round = row.get("hospital"), row.get("phase"), row.get("round")
        if not isinstance(name, str) or not isinstance(server_round, int):
            continue
        site = found.setdefault(name, _new_hospital(name))
        _add_row(site, phase, server_round, row)
    for item in card_hospitals if isinstance(card_hospitals, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            site = found.setdefault(item["name"], _new_hospital(item["name"]))
            site["train-images"] = site["train-images"] or _num(item.get("train_images"))
            site["val-images"] = site["val-images"] or _num(item.get("val_images"))
            if isinstance(item.get("fedward"), str):
                site["fedward"] = item["fedward"]
    for site in found.values():
        site["reasons"] = site["reasons"][-REASONS_KEPT:]
    return [found[name] for name in sorted(found)]


def _add_row(site: dict[str, Any], phase: Any, server_round: int, row: Mapping[str, Any]) -> None:
    """Fold one ``hospitals.jsonl`` row into a hospital's summary."""
    if isinstance(row.get("fedward"), str):
        site["fedward"] = row["fedward"]
    if phase in ("rejected", "failed"):
        site[phase] += 1
        site["reasons"].append({"round": server_round, "phase": phase, "reason": str(row.get("reason", ""))})
        return
    site["last-round"] = max(site["last-round"] or 0, server_round)
    examples = _num(row.get("num-examples"))
    if phase == "train":
        site["train-images"] = examples if examples is not None else site["train-images"]
        seconds = _num(row.get("train-seconds"))
        if seconds is not None:
            site["train-seconds"].append([server_round, round(seconds, 2)])
    elif phase == "evaluate":
        site["val-images"] = examples if examples is not None else site["val-images"]
        auc = _num(row.get("val-auc"))
        if auc is not None:
            site["val-auc"].append([server_round, round(auc, 4)])


def with_presence(
    hospitals: Sequence[Mapping[str, Any]], server: Sequence[Mapping[str, Any]], status: str
) -> list[dict[str, Any]]:
    """Hospital summaries with ``online`` and ``last-seen`` (the time of the last round each reported in).

    A hospital is online while the run is running and it reported in the latest recorded
    round; hospital rows carry no time of their own, so ``last-seen`` is the time the
    server recorded that round.
    """
    times = {row.get("round"): row.get("time") for row in server}
    latest = max((r for r in times if isinstance(r, int)), default=None)
    out = []
    for site in hospitals:
        last = site.get("last-round")
        online = status == "running" and last is not None and last == latest
        out.append({**site, "online": online, "last-seen": times.get(last) if last is not None else None})
    return out


def privacy_budget(entry: RunEntry, config: Mapping[str, Any]) -> dict[str, Any]:
    """Epsilon spent and the budget it is measured against.

    The budget is ``privacy.max-epsilon`` (client-level; the run stops before exceeding
    it), else the configured target (``privacy.target-epsilon``, or DP-SGD's
    ``privacy.dpsgd-target-epsilon``: the epsilon planned for the last round).

    Returns:
        ``{"epsilon", "delta", "budget", "budget-kind"}`` (``budget`` ``None`` without one).
    """
    privacy = config.get("privacy")
    privacy = privacy if isinstance(privacy, Mapping) else {}
    budget: float | None = None
    kind: str | None = None
    for key in ("max-epsilon", "target-epsilon", "dpsgd-target-epsilon"):
        value = _num(privacy.get(key))
        if value is not None and (key != "dpsgd-target-epsilon" or privacy.get("dpsgd") is True):
            budget, kind = value, key
            break
    return {"epsilon": entry.epsilon, "delta": entry.delta, "budget": budget, "budget-kind": kind}
