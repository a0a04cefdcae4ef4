"""RunSpec: what every participant of one run receives, the user's settings and what setup found.

The user's :class:`~fedward.common.config.run_config.RunConfig` says what to do; when a run
is set up (:mod:`fedward.common.runsetup`) fedward finds the dataset's schema and, in
simulation, the run directory. Both travel together to the ServerApp and every ClientApp
in Flower's run config: the user's keys as ``section.key``, the found values under the
``resolved.`` prefix, which no user config can set::

    resolved.task = "binary"            resolved.classes = '["normal", "pneumonia"]'
    resolved.channels = 1               resolved.spatial-dims = 2
    resolved.modality = "CR"            resolved.run-dir = "/runs/2026...-pneumoniamnist"
    resolved.resume = false

:meth:`RunSpec.from_flower` parses and validates it once per run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedward.common.config.run_config import RunConfig
from fedward.common.errors import ConfigError
from fedward.common.schema import DatasetSchema

RESOLVED = "resolved"
"""Prefix of the found values in Flower's run config."""

FlowerValue = bool | int | float | str


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run as every participant sees it.

    Attributes:
        config: the user's settings.
        schema: the dataset's task, classes, channels, dimensions and modality, found when
            the run was set up.
        run_dir: the run directory the ServerApp writes (simulation, centralized, a resumed
            coordinator run); ``None`` when the ServerApp makes a new one in the
            coordinator's runs folder.
        resume: continue ``run_dir`` from its checkpoint instead of starting at round 1.
    """

    config: RunConfig
    schema: DatasetSchema
    run_dir: Path | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        if self.resume and self.run_dir is None:
            raise ConfigError("resuming a run needs its run directory")

    def to_flower(self) -> dict[str, FlowerValue]:
        """Flat run config for Flower: ``section.key`` settings plus ``resolved.*`` values."""
        flat = self.config.to_flower()
        flat.update(
            {
                f"{RESOLVED}.task": self.schema.task.value,
                f"{RESOLVED}.classes": json.dumps(list(self.schema.classes)),
                f"{RESOLVED}.channels": self.schema.channels,
                f"{RESOLVED}.spatial-dims": self.schema.spatial_dims,
                f"{RESOLVED}.modality": self.schema.modality.value if self.schema.modality is not None else "",
                f"{RESOLVED}.run-dir": "" if self.run_dir is None else str(self.run_dir),
                f"{RESOLVED}.resume": self.resume,
            }
        )
        return flat

    @classmethod
    def from_flower(cls, run_config: Mapping[str, Any]) -> RunSpec:
        """Parse Flower's run config (``context.run_config``) as :meth:`to_flower` wrote it.

        Raises:
            ConfigError: on any invalid setting (naming the key), or when the ``resolved.*``
                values are missing (a run not started through fedward) or malformed.
        """
        prefix = f"{RESOLVED}."
        found = {k.removeprefix(prefix): v for k, v in run_config.items() if k.startswith(prefix)}
        config = RunConfig.from_mapping({k: v for k, v in run_config.items() if not k.startswith(prefix)})
        if not found:
            raise ConfigError("the run config has no resolved.* values: start runs through fedward")
        try:
            classes = json.loads(str(found.get("classes", "")))
        except ValueError:
            raise ConfigError(f"{prefix}classes must be a JSON list of names; got {found.get('classes')!r}") from None
        schema = DatasetSchema.from_json(
            {
                "task": found.get("task"),
                "classes": classes,
                "channels": found.get("channels"),
                "spatial-dims": found.get("spatial-dims", 2),
                "modality": found.get("modality") or None,
            },
            f"{prefix}*",
        )
        run_dir = str(found.get("run-dir", ""))
        resume = found.get("resume", False)
        if not isinstance(resume, bool):
            raise ConfigError(f"{prefix}resume must be true or false; got {resume!r}")
        return cls(config, schema, Path(run_dir) if run_dir else None, resume)
