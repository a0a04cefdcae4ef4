"""The segmentation task: its loss, its batches, and scoring a segmentation network on a split.

:class:`SegmentationHead` is what the task-agnostic code asks of a segmentation run
(:mod:`fedward.common.ml.tasks`): a MONAI Dice + cross-entropy (or Dice + focal) loss on
softmax outputs, the joint image/label-map augmentation of
:class:`~fedward.common.data.segdata.SegmentationPipeline`, and Dice per label and 95 %
Hausdorff distance in mm (:mod:`fedward.common.ml.segmetrics`) of the arg-max label maps.
Volumes are predicted with MONAI's sliding-window inference over the model's grid.
Hospitals send additive sums (overlaps, volumes, per-image Dice sums and counts) that the
server adds up before dividing: the federation's Dice is that of all its images, not a
mean of hospitals' means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss, DiceFocalLoss
from torch import nn

from fedward.common.choices import SegLoss
from fedward.common.config.sections import TrainConfig
from fedward.common.data.segdata import SegmentationDataset, SegmentationPipeline
from fedward.common.errors import DataError
from fedward.common.ml.loader import make_loader
from fedward.common.ml.scores import EvalResult, weighted_means
from fedward.common.ml.segmetrics import SegmentationSums, federated_metrics, is_additive
from fedward.common.wire import NUM_EXAMPLES, metric_key

EVAL_BATCH_SIZE = 8
"""Images or volumes per forward pass when scoring."""

SLIDING_WINDOW_OVERLAP = 0.25
"""Overlap of neighbouring windows in sliding-window inference (MONAI's default)."""


def make_seg_loss(choice: SegLoss, *, per_sample: bool = False) -> nn.Module:
    """MONAI's Dice + CE or Dice + focal loss on logits (B, K, *S) against label maps (B, 1, *S).

    Softmax over the K labels, the target one-hot encoded. Dice is computed over the whole
    batch (``batch=True``: an image without the structure does not make Dice undefined),
    unless ``per_sample``: then per image and averaged, so that the loss is a mean of
    per-image losses and one image's gradient does not depend on the rest of its batch, as
    DP-SGD's per-sample clipping requires (Abadi et al., 2016).
    """
    if choice is SegLoss.DICE_FOCAL:
        return DiceFocalLoss(to_onehot_y=True, softmax=True, batch=not per_sample)
    return DiceCELoss(to_onehot_y=True, softmax=True, batch=not per_sample)


@torch.no_grad()
def segment(model: nn.Module, images: torch.Tensor, spatial_dims: int, window: tuple[int, ...] = ()) -> torch.Tensor:
    """Logits of ``model`` on a batch: a plain forward pass for whole 2D images, else sliding windows.

    Args:
        model: a segmentation network in eval mode, on ``images``' device.
        images: float32 (B, C, *S).
        spatial_dims: 2 or 3.
        window: the window of :func:`monai.inferers.sliding_window_inference` (the training
            patch, ``data.patch-size``); ``()``: the grid S (one window for volumes on the
            grid, a plain forward pass for 2D images). Windows overlap by 25 % and are
            blended with Gaussian weights.

    Returns:
        float32 (B, K, *S) logits.
    """
    use_amp = images.device.type == "cuda"
    with torch.autocast(device_type=images.device.type, dtype=torch.float16, enabled=use_amp):
        if spatial_dims == 2 and not window:
            return model(images).float()  # type: ignore[no-any-return]
        logits = sliding_window_inference(
            images, window or tuple(images.shape[2:]), 4, model, overlap=SLIDING_WINDOW_OVERLAP, mode="gaussian"
        )
    return torch.as_tensor(logits).float()


class SegmentationScores:
    """Dice and HD95 of a model on one split, kept as additive sums.

    Args:
        sums: the split's sums.
        names: the foreground labels' names, in label order.
    """

    def __init__(self, sums: SegmentationSums, names: tuple[str, ...]) -> None:
        self.sums = sums
        self.names = names

    def as_dict(self, prefix: str) -> dict[str, float]:
        """``{prefix}-dice``, ``{prefix}-dice-<label>``, ``{prefix}-hd95...``, ``{prefix}-loss``."""
        return self.sums.finish(prefix, self.names)

    def wire(self, prefix: str) -> dict[str, float]:
        """:meth:`as_dict` plus the sums the server adds up across hospitals."""
        return self.as_dict(prefix) | self.sums.to_wire(prefix, self.names)


class SegmentationHead:
    """2D and 3D segmentation, as the task-agnostic code needs it.

    Args:
        names: the foreground labels' names (the schema's classes without the background).
        loss: which MONAI loss trains the network.
        patch: train on random label-aware patches of this size and slide windows of it
            at inference (``data.patch-size``); ``()``: whole images.
    """

    selection_metric = metric_key("val", "dice")
    """Federated validation mean Dice picks the best round."""

    def __init__(self, names: tuple[str, ...], loss: SegLoss = SegLoss.DICE_CE, patch: tuple[int, ...] = ()) -> None:
        self.names = names
        self.loss = loss
        self.patch = patch
        per_label = [f"{metric}-{name}" for metric in ("dice", "hd95") for name in names]
        self.reported: tuple[str, ...] = ("dice", "hd95", "pooled-dice", *per_label, "loss")
        """Metric names (without split) a model card reports."""

    def criterion(
        self, dataset: SegmentationDataset, cfg: TrainConfig, device: torch.device, *, per_sample: bool = False
    ) -> nn.Module:
        """``train.seg-loss`` (Dice + CE by default), per image under DP-SGD; class weighting does not apply."""
        return make_seg_loss(cfg.seg_loss, per_sample=per_sample)

    def pipeline(self, augment: bool, spatial_dims: int = 2) -> SegmentationPipeline:
        """Label-aware patches (when set), then joint flips, rotation, zoom and intensity scaling."""
        return SegmentationPipeline(augment=augment, spatial_dims=spatial_dims, patch=self.patch)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: SegmentationDataset, device: torch.device) -> EvalResult:
        """Dice per label, HD95 (mm) and the mean loss of ``model`` on ``dataset``.

        Raises:
            DataError: if ``dataset`` is empty.
        """
        if len(dataset) == 0:
            raise DataError("no images to evaluate on")
        model.to(device).eval()
        criterion = make_seg_loss(self.loss)
        sums = SegmentationSums.zeros(len(self.names))
        start = 0
        for images, masks in make_loader(dataset, EVAL_BATCH_SIZE, device, shuffle=False):
            images, truth = images.to(device, non_blocking=True).float(), masks.to(device).long()
            logits = segment(model, images, dataset.spatial_dims, self.patch)
            batch = images.shape[0]
            spacing = dataset.spacing[start : start + batch]
            start += batch
            loss = float(criterion(logits, truth)) * batch
            sums.update(logits.argmax(dim=1).cpu(), truth[:, 0].cpu(), spacing, loss)
        return EvalResult(SegmentationScores(sums, self.names), len(dataset))

    def federate(
        self, reports: list[dict[str, float]], statistics: Sequence[Mapping[str, Any]] = ()
    ) -> dict[str, float]:
        """The federation's validation metrics from the hospitals' sums (plus weighted means of the rest).

        Hospitals without validation images (``num-examples`` 0, no sums) are left out;
        segmentation has no operating point, so ``statistics`` is unused.
        """
        plain = [{k: v for k, v in r.items() if not is_additive(k)} for r in reports]
        scored = [r for r in reports if r.get(NUM_EXAMPLES, 0.0) > 0]  # a hospital without validation images
        return weighted_means(plain) | (federated_metrics(scored, "val", self.names) if scored else {})

    def operate(self, result: EvalResult, federated: Mapping[str, float]) -> dict[str, float]:
        """The ``test-*`` metrics as scored (segmentation has no operating point)."""
        return result.metrics.as_dict("test")
