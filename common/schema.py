"""The dataset schema: the task, labels and channels every participant of a run must agree on.

A run's schema is found once, when the run is set up (from the dataset file, the MedMNIST
catalog or the config's declaration; :mod:`fedward.common.runsetup`), and travels with
the run (:class:`~fedward.common.config.spec.RunSpec`): the ServerApp builds the global
model from it, every hospital checks its labels against it, and the run directory records
it (``run.json``) so evaluators rebuild the same network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedward.common.choices import Task
from fedward.common.errors import ConfigError


@dataclass(frozen=True, slots=True)
class DatasetSchema:
    """What a model trained on a dataset must know about it.

    Attributes:
        task: binary, multi-class or multi-label.
        classes: class names (labels for multi-label), index order; distinct, non-empty.
        channels: image channels, 1 or 3.
    """

    task: Task
    classes: tuple[str, ...]
    channels: int

    @property
    def num_outputs(self) -> int:
        """Number of logits the model needs: one per class or label."""
        return len(self.classes)

    def to_json(self) -> dict[str, Any]:
        """``{"task", "classes", "channels"}`` with plain JSON values."""
        return {"task": self.task.value, "classes": list(self.classes), "channels": self.channels}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> DatasetSchema:
        """The schema :meth:`to_json` wrote.

        Args:
            data: ``{"task", "classes", "channels"}``.
            where: what holds it (a file, a run-config key), for the error message.

        Raises:
            ConfigError: if a field is missing or not of the expected kind.
        """
        try:
            task = Task(str(data["task"]))
            classes = data["classes"]
            channels = data["channels"]
            if not isinstance(classes, list | tuple) or not classes or isinstance(channels, bool):
                raise TypeError("classes must be a non-empty list")
            schema = cls(task, tuple(str(c) for c in classes), int(channels))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{where} does not hold a dataset schema (task, classes, channels): {err}") from None
        if schema.channels not in (1, 3) or len(set(schema.classes)) != len(schema.classes):
            raise ConfigError(f"{where}: channels must be 1 or 3 and class names distinct; got {schema.to_json()}")
        return schema
