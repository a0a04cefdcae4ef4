"""One home per task: what training, scoring, federation and records ask of classification or segmentation.

Task-agnostic code (the training loop, a hospital's evaluation, the server's test split,
the centralized baseline, the coordinator's aggregation of validation metrics and the run
recorder's choice of the best round) asks the run's :class:`TaskHead` instead of branching
on the task: :func:`head_for` returns :class:`~fedward.common.ml.classify.ClassificationHead`
(:class:`~fedward.common.ml.multitask.LesionGuidedHead` when the classes are learnt with
lesion masks) or :class:`~fedward.common.ml.segment.SegmentationHead` for a dataset schema.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from fedward.common.choices import SegLoss, TargetKind, Task
from fedward.common.config import RunConfig
from fedward.common.config.sections import TrainConfig
from fedward.common.ml.classify import ClassificationHead
from fedward.common.ml.multitask import LesionGuidedHead
from fedward.common.ml.scores import EvalResult
from fedward.common.ml.segment import SegmentationHead
from fedward.common.schema import DatasetSchema


class BatchPairs(Protocol):
    """A training batch pipeline: (images, targets) as stored -> (model input, targets for the loss)."""

    def pair(self, images: torch.Tensor, targets: Any, generator: torch.Generator | None = None) -> tuple[Any, Any]:
        """The batch ready for the model and the loss (targets: a tensor, or ``(classes, masks)``)."""
        ...

    def train(self, mode: bool = True) -> Any:
        """Training mode (augmentation on)."""
        ...

    def eval(self) -> Any:
        """Evaluation mode (augmentation off)."""
        ...


class TaskHead(Protocol):
    """What a task provides to task-agnostic code.

    Attributes:
        selection_metric: the federated validation metric (higher is better) that picks
            the best round (``val-auc``, ``val-dice``); never a test metric.
        reported: the metric names (without split) a model card reports.
    """

    selection_metric: str
    reported: tuple[str, ...]

    def criterion(self, dataset: Any, cfg: TrainConfig, device: torch.device, *, per_sample: bool = False) -> nn.Module:
        """The training loss for ``dataset`` (class weights from its own labels, where the task uses them).

        ``per_sample``: a mean of per-image losses, so one image's gradient does not depend
        on its batch (DP-SGD).
        """
        ...

    def pipeline(self, augment: bool, spatial_dims: int = 2) -> BatchPairs:
        """The batch pipeline of training (augmenting when ``augment``) and of scoring (eval mode)."""
        ...

    def evaluate(self, model: nn.Module, dataset: Any, device: torch.device) -> EvalResult:
        """The task's metrics of ``model`` on ``dataset`` (raises DataError when it is empty)."""
        ...

    def federate(
        self, reports: list[dict[str, float]], statistics: Sequence[Mapping[str, Any]] = ()
    ) -> dict[str, float]:
        """The federation's validation metrics from each hospital's reply (with ``num-examples``).

        ``statistics``: the list-valued sums hospitals sent beside their metrics
        (:attr:`~fedward.common.ml.scores.EvalResult.statistics`), from which a classifier's
        operating point is chosen.
        """
        ...

    def operate(self, result: EvalResult, federated: Mapping[str, float]) -> dict[str, float]:
        """``test-*`` metrics of a scored split at the operating point of a round's federated metrics."""
        ...


def head_for(schema: DatasetSchema, cfg: RunConfig | None = None) -> TaskHead:
    """The task head of a run on ``schema``.

    Args:
        schema: the dataset's schema.
        cfg: the run's settings the head uses (segmentation: ``train.seg-loss``,
            ``data.patch-size``; classification: ``data.target``, ``[evaluation]``); ``None``: defaults
            (enough for the selection metric).
    """
    if schema.task is Task.SEGMENTATION:
        loss = cfg.train.seg_loss if cfg is not None else SegLoss.DICE_CE
        patch = cfg.data.patch_size if cfg is not None else ()
        return SegmentationHead(schema.foreground, loss, patch)
    if cfg is not None and cfg.data.target is TargetKind.CLASS_AND_MASK:
        return LesionGuidedHead(schema.classes, cfg.evaluation)
    return ClassificationHead(schema.classes, cfg.evaluation if cfg is not None else None)
