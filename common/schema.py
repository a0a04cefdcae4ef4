"""The dataset schema: the task, labels, channels, dimensions and modality every participant of a run must agree on.

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

from fedward.common.choices import Modality, Task
from fedward.common.errors import ConfigError


@dataclass(frozen=True, slots=True)
class DatasetSchema:
    """What a model trained on a dataset must know about it.

    Attributes:
        task: binary, multi-class, multi-label or segmentation.
        classes: class names (labels for multi-label; for segmentation the label map's
            names, index 0 the background), index order; distinct, non-empty.
        channels: image channels, 1 or 3.
        spatial_dims: 2 for images (H, W), 3 for volumes (D, H, W).
        modality: the DICOM modality the images come from (:class:`~fedward.common.choices.Modality`);
            ``None`` when nothing says it (a MedMNIST file outside the catalog).
    """

    task: Task
    classes: tuple[str, ...]
    channels: int
    spatial_dims: int = 2
    modality: Modality | None = None

    @property
    def num_outputs(self) -> int:
        """Number of logits the model needs: one per class, label or label-map value (with background)."""
        return len(self.classes)

    @property
    def foreground(self) -> tuple[str, ...]:
        """Segmentation: the structures' names (every label but the background); classification: ``()``."""
        return self.classes[1:] if self.task is Task.SEGMENTATION else ()

    def to_json(self) -> dict[str, Any]:
        """``{"task", "classes", "channels", "spatial-dims", "modality"}`` with plain JSON values."""
        return {
            "task": self.task.value,
            "classes": list(self.classes),
            "channels": self.channels,
            "spatial-dims": self.spatial_dims,
            "modality": self.modality.value if self.modality is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> DatasetSchema:
        """The schema :meth:`to_json` wrote.

        Args:
            data: ``{"task", "classes", "channels"}``, optionally ``"spatial-dims"`` (default 2)
                and ``"modality"`` (run directories written before segmentation lack them).
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
            modality = data.get("modality")
            schema = cls(
                task,
                tuple(str(c) for c in classes),
                int(channels),
                int(data.get("spatial-dims", 2)),
                Modality(str(modality)) if modality else None,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{where} does not hold a dataset schema (task, classes, channels): {err}") from None
        if schema.channels not in (1, 3) or len(set(schema.classes)) != len(schema.classes):
            raise ConfigError(f"{where}: channels must be 1 or 3 and class names distinct; got {schema.to_json()}")
        if schema.spatial_dims not in (2, 3) or (schema.spatial_dims == 3 and schema.task is not Task.SEGMENTATION):
            raise ConfigError(f"{where}: spatial-dims must be 2, or 3 for segmentation; got {schema.to_json()}")
        if schema.task is Task.SEGMENTATION and len(schema.classes) < 2:
            raise ConfigError(f"{where}: a segmentation needs the background and at least one structure")
        return schema
