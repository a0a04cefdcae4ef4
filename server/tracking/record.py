"""``tracking.json`` in a run directory: where the run was tracked, its MLflow run id, and what was not delivered.

::

    {"mlflow": {"uri": "http://127.0.0.1:5000", "experiment": "fedward",
                "run-id": "3f2a...", "delivered": ["run", "params", "round 0", ...],
                "undelivered": ["round 2", "artifact model_card.json", ...],
                "dropped": [], "updated": "2026-12-04T18:00:00+00:00"},
     "tensorboard": {"dir": "tensorboard"}}

The MLflow run id lets a resumed run continue the same MLflow run and lets ``fedward run
export-tracking`` fill in what a live run could not deliver.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedward.common.fileio import atomic_write, read_json_or_empty
from fedward.common.rundir.layout import TRACKING_FILE
from fedward.common.timestamps import now_iso

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
"""Writes come from the training thread and the delivery thread."""


def read_tracking(run_dir: Path) -> dict[str, Any]:
    """``tracking.json`` of ``run_dir`` (``{}`` when absent or unreadable)."""
    try:
        return read_json_or_empty(Path(run_dir) / TRACKING_FILE)
    except (OSError, ValueError) as err:
        log.warning("ignoring %s: %s", Path(run_dir) / TRACKING_FILE, err)
        return {}


def mlflow_run_id(run_dir: Path, uri: str) -> str | None:
    """The MLflow run this run directory was logged to at ``uri``, if any."""
    entry = read_tracking(run_dir).get("mlflow")
    if isinstance(entry, Mapping) and entry.get("uri") == uri and isinstance(entry.get("run-id"), str):
        return str(entry["run-id"])
    return None


def update_tracking(run_dir: Path, section: str, values: Mapping[str, Any]) -> None:
    """Merge ``values`` into ``section`` of ``tracking.json`` (written atomically)."""
    with _LOCK:
        document = read_tracking(run_dir)
        entry = dict(document.get(section) or {})
        entry.update(values)
        entry["updated"] = now_iso()
        document[section] = entry
        atomic_write(Path(run_dir) / TRACKING_FILE, json.dumps(document, indent=2) + "\n")
