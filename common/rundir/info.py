"""What a run is: ``config.toml`` (the user's settings) and ``run.json`` (what setup found), written once.

``run.json``::

    {"format": "fedward-run/1", "mode": "federated", "dataset": "pneumoniamnist",
     "schema": {"task": "binary", "classes": ["normal", "pneumonia"], "channels": 1},
     "flower-run-id": 42, "created": "2026-12-02T00:18:49+00:00", "fedward": "0.2.0"}

``flower-run-id`` is set for runs a coordinator started (``null`` for simulations, whose
Flower run belongs to a private SuperLink, and for centralized runs). Both files are
written before the first round and never changed afterwards, so a resumed run continues
with exactly the settings and schema it started with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedward.common.config import RunConfig, RunSpec
from fedward.common.errors import ConfigError
from fedward.common.fileio import atomic_write, read_json_object
from fedward.common.rundir.layout import CONFIG_FILE, RUN_FILE
from fedward.common.schema import DatasetSchema
from fedward.common.timestamps import now_iso
from fedward.common.version import fedward_version

RUN_FORMAT = "fedward-run/1"


@dataclass(frozen=True, slots=True)
class RunInfo:
    """``run.json`` read back.

    Attributes:
        mode: ``federated`` or ``centralized``.
        dataset: the dataset's name.
        schema: task, classes and channels the run trained on.
        flower_run_id: the coordinator's Flower run id, ``None`` for simulations.
        created: ISO 8601 UTC time the run directory was described.
    """

    mode: str
    dataset: str
    schema: DatasetSchema
    flower_run_id: int | None
    created: str


def describe_run(run_dir: Path, spec: RunSpec, mode: str, flower_run_id: int | None = None) -> None:
    """Write ``config.toml`` and ``run.json`` into ``run_dir`` unless they exist (a resumed run keeps its own).

    Raises:
        OSError: if the run directory cannot be written.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists():
        atomic_write(run_dir / CONFIG_FILE, spec.config.to_toml())
    if not (run_dir / RUN_FILE).exists():
        document: dict[str, Any] = {
            "format": RUN_FORMAT,
            "mode": mode,
            "dataset": spec.config.data.dataset,
            "schema": spec.schema.to_json(),
            "flower-run-id": flower_run_id,
            "created": now_iso(),
            "fedward": fedward_version(),
        }
        atomic_write(run_dir / RUN_FILE, json.dumps(document, indent=2) + "\n")


def read_run_info(run_dir: Path) -> RunInfo:
    """``run.json`` of a run directory.

    Raises:
        ConfigError: if it is missing, unreadable or not a fedward run description.
    """
    path = Path(run_dir) / RUN_FILE
    try:
        document = read_json_object(path)
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: {Path(run_dir).name} was not set up by this fedward") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} cannot be read ({type(err).__name__}); restore it from a backup") from None
    if document.get("format") != RUN_FORMAT:
        raise ConfigError(f"{path} is not a {RUN_FORMAT} run description")
    flower = document.get("flower-run-id")
    return RunInfo(
        mode=str(document.get("mode", "federated")),
        dataset=str(document.get("dataset", "")),
        schema=DatasetSchema.from_json(document.get("schema") or {}, str(path)),
        flower_run_id=flower if isinstance(flower, int) and not isinstance(flower, bool) else None,
        created=str(document.get("created", "")),
    )


def read_run_config(run_dir: Path) -> RunConfig:
    """``config.toml`` of a run directory.

    Raises:
        ConfigError: if it is missing or invalid (the message names the file or field).
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    return RunConfig.from_toml(path)
