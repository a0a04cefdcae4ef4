"""What a tracked run sends, named once: metric keys from the run directory's rows, the config as parameters.

Both sinks (MLflow, TensorBoard) and the replay of a finished run name everything through
this module, so a live run and an exported one look the same:

* server metrics (one ``metrics/server.jsonl`` row per round) keep their key
  (``val-auc``, ``train-loss``, ``epsilon``, ``hospitals-trained``, ...);
* each hospital's metrics (``metrics/hospitals.jsonl``) are ``hospital/<name>/<key>``
  (``hospital/hospital-0/val-auc``); the one key both phases report, ``num-examples``,
  becomes ``train-examples`` (train) or ``val-examples`` (evaluate), and a hospital
  rejected or failed in a round reports ``hospital/<name>/rejected`` (or ``failed``) = 1;
* the step is the round (0: the initial model), the time the row's recorded ``time``.

Node ids (``node-id``) and text (a rejection's reason) stay in the run directory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from fedward.common.config import RunSpec

HOSPITAL_PREFIX = "hospital"
"""First part of every per-hospital metric key."""

NOT_METRICS = frozenset({"round", "time", "hospital", "phase", "node-id", "reason"})
"""Row fields that are never sent as metrics (node ids never leave the run directory)."""

EXCLUDED = ("rejected", "failed")
"""Phases of a hospital left out of a round (a row with a reason and no metrics)."""

PHASE_EXAMPLES = {"train": "train-examples", "evaluate": "val-examples"}
"""What ``num-examples`` is called in each phase."""

NOT_PARAMS = ("resolved.run-dir", "resolved.resume")
"""Run-config entries that describe this machine's copy of the run, not the run."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /:]")
"""Characters MLflow refuses in a metric key (it allows letters, digits, ``_ - . space / :``)."""


def metric_key(key: str) -> str:
    """``key`` with characters MLflow refuses replaced by ``_`` (keys fedward writes need none)."""
    safe = _UNSAFE.sub("_", key).strip("/")
    return re.sub(r"/{2,}", "/", safe).replace("..", "_.")


def _number(value: Any) -> float | None:
    """A finite number as float; ``None`` for text, booleans, null and non-finite values."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def server_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of one ``metrics/server.jsonl`` row, by key."""
    out: dict[str, float] = {}
    for key, value in row.items():
        number = _number(value)
        if key not in NOT_METRICS and number is not None:
            out[metric_key(key)] = number
    return out


def hospital_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of one ``metrics/hospitals.jsonl`` row as ``hospital/<name>/<key>``."""
    name = str(row.get("hospital", "unknown"))
    phase = str(row.get("phase", ""))
    prefix = f"{HOSPITAL_PREFIX}/{name}/"
    if phase in EXCLUDED:
        return {metric_key(prefix + phase): 1.0}
    out: dict[str, float] = {}
    for key, value in row.items():
        number = _number(value)
        if key in NOT_METRICS or number is None:
            continue
        if key == "num-examples":
            key = PHASE_EXAMPLES.get(phase, f"{phase}-examples")
        out[metric_key(prefix + key)] = number
    return out


def round_metrics(row: Mapping[str, Any], hospitals: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Everything one round sends: its server metrics and every hospital's."""
    out = server_metrics(row)
    for hospital in hospitals:
        out.update(hospital_metrics(hospital))
    return out


def row_time(row: Mapping[str, Any], default: float) -> float:
    """The row's recorded ``time`` in seconds since the epoch (``default`` when it has none)."""
    stamp = row.get("time")
    if not isinstance(stamp, str):
        return default
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return default


def config_params(spec: RunSpec) -> dict[str, str]:
    """The run's resolved config as flat ``section.key`` parameters (plus the ``resolved.*`` schema)."""
    return {key: str(value) for key, value in sorted(spec.to_flower().items()) if key not in NOT_PARAMS}
