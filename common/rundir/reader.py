"""Reading a run directory back: one entry per run (status, rounds, best metrics, epsilon) for every reader.

:func:`read_entry` reads what a run directory's files say (``status.json``,
``config.toml``, ``run.json``, ``metrics/server.jsonl``, ``models/best.json``,
``model_card.json``) and never raises: a half-written or damaged file leaves its fields at
their defaults. The run store (:mod:`fedward.common.rundir.index`), the model registry and
the CLI list runs through it; :func:`read_status` is what progress displays poll.
"""

from __future__ import annotations

import builtins
import logging
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedward.common.fileio import read_json_or_empty, read_jsonl
from fedward.common.rundir.layout import (
    BEST_RECORD,
    CARD_JSON,
    CONFIG_FILE,
    RUN_FILE,
    STATUS_FILE,
    RunDir,
    is_run_directory,
)

log = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "failed", "stopped"})
STATES = TERMINAL | {"running"}
UNKNOWN = "unknown"

_FLOWER_SUFFIX = re.compile(r".+-(\d+)(?:\.\d+)?")  # "<time>-<name>-<flower run id>[.<n>]"
_STAMP = re.compile(r"(\d{8}-\d{6})-")  # new_run_dir's "%Y%m%d-%H%M%S-" prefix (UTC)


@dataclass(frozen=True, slots=True)
class RunEntry:
    """One run as the store lists it.

    Attributes:
        run_id: the run directory's name (unique in its runs folder).
        flower_run_id: Flower's run id (the directory name's ``-<digits>`` suffix) for a run
            a coordinator started; ``None`` for simulations and centralized runs.
        status: ``running``, ``completed``, ``failed``, ``stopped``, or ``unknown`` when
            ``status.json`` cannot be read.
        mode: ``federated`` or ``centralized`` (``unknown`` if nothing says).
        started: start time, ISO 8601.
        ended: end time, ISO 8601, for a finished (completed/failed/stopped) run.
        rounds_done: rounds completed.
        rounds: rounds planned.
        best_round: the round of the best model, ``None`` before any validation AUC.
        best_metric: the metric that chose it (``val-auc``).
        best_value: its value at ``best_round``.
        test_auc: the server's test AUC at ``best_round``, if it evaluated one.
        epsilon: privacy budget spent: the larger of the last client-level ``epsilon`` and
            the last record-level ``dpsgd-epsilon``; ``None`` without differential privacy.
        delta: the delta that goes with ``epsilon`` (or the configured one while no round
            has reported an epsilon yet); ``None`` without differential privacy.
        dataset: dataset name.
        model: model name.
        path: the run directory.
    """

    run_id: str
    flower_run_id: int | None
    status: str
    mode: str
    started: str | None
    ended: str | None
    rounds_done: int
    rounds: int
    best_round: int | None
    best_metric: str | None
    best_value: float | None
    test_auc: float | None
    epsilon: float | None
    delta: float | None
    dataset: str
    model: str
    path: Path

    def to_json(self) -> dict[str, Any]:
        """The entry as a JSON-serialisable dict with kebab-case keys (``run-id``, ``best-value``...)."""
        out = {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}
        out["path"] = str(self.path)
        return out


def run_directories(runs_dir: Path) -> builtins.list[Path]:
    """The run directories directly inside ``runs_dir``, by name."""
    try:
        children = sorted(runs_dir.iterdir())
    except OSError as err:
        log.warning("cannot list %s: %s", runs_dir, err)
        return []
    return [path for path in children if not path.name.startswith(".") and is_run_directory(path)]


def read_entry(run_dir: Path) -> RunEntry:
    """Read a run directory's files into an entry, taking what can be read.

    Reads ``status.json``, ``config.toml``, ``metrics/server.jsonl``, ``models/best.json``
    and ``model_card.json``; a missing or damaged file leaves its fields at their defaults
    (``status`` ``unknown``). Never raises.
    """
    run_dir = Path(run_dir)
    status = read_json_or_empty(run_dir / STATUS_FILE)
    card = read_json_or_empty(run_dir / CARD_JSON)
    config = _read_toml(run_dir / CONFIG_FILE)
    info = read_json_or_empty(run_dir / RUN_FILE)
    rows = _read_rows(RunDir(run_dir).rows("server"))
    run_card = _table(card, "run")
    state = _str(status.get("state"))
    status_text = state if state in STATES else UNKNOWN
    mode = _str(status.get("mode")) or _str(run_card.get("mode")) or UNKNOWN

    best = _table(status, "best")
    best_round = _int(best.get("round"))
    if best_round is None:
        best = read_json_or_empty(run_dir / BEST_RECORD)
        best_round = _int(best.get("round"))
    best_value = _num(best.get("value")) if best_round is not None else None
    best_metric = _str(best.get("metric")) if best_value is not None else None

    rounds_seen = [r for r in (_int(row.get("round")) for row in rows) if r is not None]
    rounds_done = max([0, *rounds_seen, _int(status.get("round")) or 0, _int(run_card.get("rounds_completed")) or 0])
    rounds = (
        _int(status.get("rounds"))
        or _int(run_card.get("rounds_planned"))
        or _int(_table(config, "federation").get("rounds"))
        or 0
    )
    at_best = [row for row in rows if best_round is not None and row.get("round") == best_round]
    test_auc = _num(at_best[-1].get("test-auc")) if at_best else None
    if test_auc is None:
        test_auc = _num(_table(_table(card, "metrics"), "best").get("test-auc"))
    epsilon, delta = _privacy(rows, config, card)
    return RunEntry(
        run_id=run_dir.name,
        flower_run_id=_flower_run_id(run_dir.name, mode, info),
        status=status_text,
        mode=mode,
        started=_str(status.get("started")) or _str(run_card.get("started")) or _stamp_time(run_dir.name),
        ended=(_str(status.get("updated")) or _str(run_card.get("finished"))) if status_text in TERMINAL else None,
        rounds_done=rounds_done,
        rounds=rounds,
        best_round=best_round,
        best_metric=best_metric,
        best_value=best_value,
        test_auc=test_auc,
        epsilon=epsilon,
        delta=delta,
        dataset=_str(_table(config, "data").get("dataset")) or _str(_table(card, "dataset").get("name")) or "",
        model=_str(_table(config, "model").get("name")) or _str(_table(card, "model").get("name")) or "",
        path=run_dir,
    )


# ---------------------------------------------------------------------------------- reading
def _privacy(
    rows: Sequence[Mapping[str, Any]], config: Mapping[str, Any], card: Mapping[str, Any]
) -> tuple[float | None, float | None]:
    """(epsilon, delta): the larger of the last client-level and record-level epsilon, and its delta."""
    client = next((v for v in (_num(r.get("epsilon")) for r in reversed(rows)) if v is not None), None)
    image = next((v for v in (_num(r.get("dpsgd-epsilon")) for r in reversed(rows)) if v is not None), None)
    guarantees = {
        _str(g.get("unit")): g for g in _table(card, "privacy").get("guarantees") or [] if isinstance(g, Mapping)
    }
    if client is None:
        client = _num(guarantees.get("hospital", {}).get("epsilon"))
    if image is None:
        image = _num(guarantees.get("image", {}).get("epsilon"))
    privacy = _table(config, "privacy")
    client_dp = (_str(privacy.get("client-dp")) or "none") != "none" and privacy.get("noise-multiplier") != 0
    dpsgd = privacy.get("dpsgd") is True and privacy.get("dpsgd-noise-multiplier") != 0
    client_delta = _num(guarantees.get("hospital", {}).get("delta")) or (
        _num(privacy.get("delta")) if client_dp else None
    )
    image_delta = _num(guarantees.get("image", {}).get("delta")) or (
        _num(privacy.get("dpsgd-delta")) if dpsgd else None
    )
    if client is not None and (image is None or client >= image):
        return client, client_delta
    if image is not None:
        return image, image_delta
    return None, client_delta if client_delta is not None else image_delta


def _flower_run_id(name: str, mode: str, info: Mapping[str, Any]) -> int | None:
    """Flower's run id of a coordinator run: from ``run.json``, else from the directory name.

    Simulations and centralized runs have none (their ``run.json`` says ``null``), even when
    their name ends in digits. A run directory without ``run.json`` (written before it
    existed) is a coordinator's when its name ends in ``-<digits>``.
    """
    if info:
        value = info.get("flower-run-id")
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if mode == "centralized":
        return None
    stamp = _STAMP.match(name)
    match = _FLOWER_SUFFIX.fullmatch(name[stamp.end() :] if stamp else name)  # the name part must stay
    return int(match[1]) if match else None


def _stamp_time(name: str) -> str | None:
    """The UTC creation time in a run directory's name, ISO 8601."""
    match = _STAMP.match(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match[1], "%Y%m%d-%H%M%S").replace(tzinfo=UTC).isoformat()
    except ValueError:
        return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _read_rows(path: Path) -> builtins.list[dict[str, Any]]:
    """Rows of a JSON-lines file; damaged lines (a half-written last one) are skipped."""
    try:
        return read_jsonl(path)
    except OSError:
        return []


def read_status(run_dir: Path) -> dict[str, Any]:
    """``status.json`` of a run (``{}`` while it is absent or unreadable)."""
    return read_json_or_empty(Path(run_dir) / STATUS_FILE)


def _table(mapping: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = mapping.get(key)
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)
