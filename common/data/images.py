"""Images as PyTorch datasets, and the batch pipeline that feeds them to a model.

Images are stored once per hospital as uint8 tensors of shape (N, C, S, S) at the model's
input size S (resized with MONAI's :class:`~monai.transforms.Resize` when the file holds
another size): 1 byte per pixel, cheap to keep in memory and to pin for CUDA.

Scaling to float and augmentation run per *batch* on the training device in
:class:`BatchPipeline`: MONAI's :class:`~monai.transforms.ScaleIntensityRange` and a
random per-image flip / rotation / zoom applied in one resampling by MONAI's
:class:`~monai.networks.layers.AffineTransform`. Measured here on 28 px images: the
per-image MONAI dictionary transforms cost 1.5 ms per image on the CPU (6.6 s of a 7.8 s
epoch of PneumoniaMNIST); the batched form costs under 2% of an epoch and runs on the GPU
when there is one.

A classification learnt with lesion masks (``data.target = "class+mask"``) keeps each
image's mask beside it (uint8 (N, 1, S, S)); its targets are ``(class, mask)`` pairs and the
pipeline warps the masks with their images' affines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, overload

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from fedward.common.choices import Task
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.npz import ArraySplit
from fedward.common.data.segdata import SegmentationDataset, concat_mask_splits
from fedward.common.errors import DataError
from fedward.common.schema import DatasetSchema

LabelledMasks = tuple[torch.Tensor, torch.Tensor]
"""Targets of a classification learnt with lesion masks: class targets (B,) and masks (B, 1, S, S)."""

RESIZE_CHUNK = 1024
"""Images resized per MONAI call; bounds the float32 working memory."""


def to_model_size(images: np.ndarray, image_size: int) -> torch.Tensor:
    """Convert images to channel-first uint8 at the model's input size.

    Args:
        images: uint8, shape (N, H, W) or (N, H, W, 3).
        image_size: output side S in pixels.

    Returns:
        uint8 tensor of shape (N, C, S, S), C = 1 or 3. Images already S x S are not
        resampled; others go through MONAI ``Resize`` (area interpolation when shrinking,
        bilinear when enlarging) and are rounded back to uint8.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    tensor = tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
    n, c, h, w = tensor.shape
    if (h, w) == (image_size, image_size):
        return tensor.contiguous()
    # MONAI loads on first use: the CLI opens data sets without it
    from monai.transforms import Resize

    shrinking = h > image_size or w > image_size
    resize = Resize(spatial_size=(image_size, image_size), mode="area" if shrinking else "bilinear")
    out = torch.empty((n, c, image_size, image_size), dtype=torch.uint8)
    for start in range(0, n, RESIZE_CHUNK):
        chunk = tensor[start : start + RESIZE_CHUNK].reshape(-1, h, w).float()
        resized = torch.as_tensor(resize(chunk))  # MONAI treats dim 0 as channels
        out[start : start + RESIZE_CHUNK] = (
            resized.round().clamp(0, 255).to(torch.uint8).reshape(-1, c, image_size, image_size)
        )
    return out


class ImageDataset(Dataset[tuple[torch.Tensor, Any]]):
    """Images and targets of one split at one hospital.

    Args:
        images: uint8 tensor (N, C, S, S).
        labels: int64 array (N, K) as read from a MedMNIST file.
        task: the task; decides the target format.
        num_classes: classes (labels for multi-label) K of the federation.
        masks: each image's lesion mask, uint8 (N, 1, S, S) 0/1, for a classification
            learnt with lesion masks; ``None``: classes only.

    Items:
        ``(image, target)``: image uint8 (C, S, S); target int64 scalar class index
        (binary, multi-class) or float32 (K,) 0/1 labels (multi-label); with ``masks``,
        ``(class index, mask (1, S, S) uint8)``.

    Raises:
        ValueError: if images, labels and masks disagree in number or masks in grid.
    """

    def __init__(
        self, images: torch.Tensor, labels: np.ndarray, task: Task, num_classes: int, masks: torch.Tensor | None = None
    ) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        if masks is not None and masks.shape != (images.shape[0], 1, *images.shape[2:]):
            raise ValueError(f"masks {tuple(masks.shape)} do not fit images {tuple(images.shape)}")
        self.images = images
        self.task = task
        self.num_classes = num_classes
        self.labels = labels
        self.masks = masks
        if task is Task.MULTILABEL:
            self.targets = torch.from_numpy(labels.astype(np.float32))
        else:
            self.targets = torch.from_numpy(labels[:, 0].astype(np.int64))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        if self.masks is not None:
            return self.images[index], (self.targets[index], self.masks[index])
        return self.images[index], self.targets[index]

    def class_counts(self) -> np.ndarray:
        """Images per class (single-label) or positives per label (multi-label), int64 (K,)."""
        if self.task is Task.MULTILABEL:
            return np.asarray(self.labels.sum(axis=0), dtype=np.int64)
        return np.bincount(self.labels[:, 0], minlength=self.num_classes).astype(np.int64)


TaskDataset = ImageDataset | SegmentationDataset
"""A split ready for training or scoring: classification images or segmentation images with label maps."""


def concat_datasets(parts: Sequence[TaskDataset]) -> TaskDataset:
    """One dataset holding every image of ``parts`` in order (same task and classes).

    Raises:
        ValueError: if ``parts`` is empty or the parts disagree on task or class count.
    """
    if not parts:
        raise ValueError("nothing to concatenate")
    first = parts[0]
    if isinstance(first, SegmentationDataset):
        splits = [p.split for p in parts if isinstance(p, SegmentationDataset)]
        if len(splits) != len(parts):
            raise ValueError("datasets of different tasks cannot be pooled")
        return SegmentationDataset(concat_mask_splits(splits), first.num_classes)
    if not all(isinstance(p, ImageDataset) for p in parts):
        raise ValueError("datasets of different tasks cannot be pooled")
    if any(p.task is not first.task or p.num_classes != first.num_classes for p in parts):
        raise ValueError("datasets of different tasks or class counts cannot be pooled")
    if len({p.masks is None for p in parts if isinstance(p, ImageDataset)}) > 1:
        raise ValueError("datasets with and without lesion masks cannot be pooled")
    images = torch.cat([p.images for p in parts if len(p)]) if any(len(p) for p in parts) else first.images
    labels = np.concatenate([p.labels for p in parts])
    masks = None
    if first.masks is not None:
        masks = torch.cat([p.masks for p in parts if isinstance(p, ImageDataset) and p.masks is not None])
    return ImageDataset(images, labels, first.task, first.num_classes, masks)


@overload
def make_dataset(split: ArraySplit, schema: DatasetSchema, image_size: int) -> ImageDataset: ...
@overload
def make_dataset(split: MaskSplit, schema: DatasetSchema, image_size: int) -> SegmentationDataset: ...
def make_dataset(split: ArraySplit | MaskSplit, schema: DatasetSchema, image_size: int) -> TaskDataset:
    """The dataset of a split read from a file: images (resized to ``image_size``) with classes, or with label maps.

    A :class:`~fedward.common.data.masksplit.MaskSplit` is already on the model's grid;
    an :class:`~fedward.common.data.npz.ArraySplit` is resized here (:func:`to_model_size`);
    its lesion masks, when it has them, were read on that grid.

    Raises:
        DataError: if a split's lesion masks are not on the ``image_size`` grid.
    """
    if isinstance(split, MaskSplit):
        return SegmentationDataset(split, len(schema.classes))
    masks = None
    if split.masks is not None:
        if split.masks.shape[1:] != (image_size, image_size):
            raise DataError(f"lesion masks of {split.masks.shape[1:]} px do not fit data.image-size {image_size}")
        masks = torch.from_numpy(np.ascontiguousarray(split.masks, dtype=np.uint8)).unsqueeze(1)
    images = to_model_size(split.images, image_size)
    return ImageDataset(images, split.labels, schema.task, len(schema.classes), masks)


class BatchPipeline(nn.Module):
    """uint8 image batches to float model input, with optional random augmentation.

    Intensities are scaled from [0, 255] to [0, 1] (MONAI ``ScaleIntensityRange``). In
    training mode with ``augment`` each image gets its own random horizontal flip
    (p = 0.5), rotation (uniform in +-``max_rotation_deg``) and zoom (uniform scale in
    1 +- ``max_zoom``), composed into one affine and resampled once (bilinear, zero
    padding) by MONAI ``AffineTransform``.

    Args:
        augment: apply random augmentation in training mode.
        max_rotation_deg: largest rotation, degrees.
        max_zoom: largest relative zoom.

    Shapes:
        input (B, C, S, S) uint8 (or float in [0, 255]); output (B, C, S, S) float32 in [0, 1].
    """

    def __init__(self, augment: bool, max_rotation_deg: float = 15.0, max_zoom: float = 0.1) -> None:
        # MONAI loads on first use: the CLI opens data sets without it
        from monai.networks.layers import AffineTransform
        from monai.transforms import ScaleIntensityRange

        super().__init__()
        self.augment = augment
        self.max_rotation = math.radians(max_rotation_deg)
        self.max_zoom = max_zoom
        self.scale = ScaleIntensityRange(a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True)
        self.affine = AffineTransform(normalized=True, mode="bilinear", padding_mode="zeros")
        self.mask_affine = AffineTransform(normalized=True, mode="nearest", padding_mode="zeros")

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scale (and, when training, augment) a batch; ``generator`` seeds the randomness (CPU)."""
        return self._transform(images, None, generator)[0]

    def pair(
        self, images: torch.Tensor, targets: torch.Tensor | LabelledMasks, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | LabelledMasks]:
        """``(model input, targets)`` of a training batch: the images scaled (and augmented).

        Class targets pass as they are; ``(classes, masks)`` targets come back as
        ``(classes, masks as int64 (B, 1, S, S))``, each mask warped as its image (nearest).
        """
        if isinstance(targets, torch.Tensor):
            return self(images, generator), targets
        labels, masks = targets
        x, warped = self._transform(images, masks, generator)
        return x, (labels, warped if warped is not None else masks)  # _transform returns masks when given them

    def _transform(
        self, images: torch.Tensor, masks: torch.Tensor | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scaled images and, when training with ``augment``, both warped by one random affine per image."""
        # A plain tensor: MONAI's MetaTensor would route every op of the network through
        # its __torch_function__ (metadata bookkeeping that input batches do not need).
        from monai.utils import convert_to_tensor

        x: torch.Tensor = convert_to_tensor(self.scale(images.float()), track_meta=False)
        if not (self.training and self.augment):
            return x, masks.long() if masks is not None else None
        theta = random_affines(x.shape[0], self.max_rotation, self.max_zoom, generator).to(x.device)
        if masks is not None:
            masks = torch.as_tensor(self.mask_affine(masks.float(), theta)).round().long()
        return torch.as_tensor(self.affine(x, theta)), masks


def random_affines(
    batch: int, max_rotation: float, max_zoom: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random 2D affines in normalized coordinates, one per image.

    Args:
        batch: number of matrices B.
        max_rotation: largest rotation, radians.
        max_zoom: largest relative zoom.
        generator: CPU random generator (``None`` uses PyTorch's global one).

    Returns:
        float32 tensor of shape (B, 2, 3): rotation x zoom x optional flip of the second
        (width) axis, no translation, in MONAI's (i, j) index order.
    """

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator)

    angle = uniform(-max_rotation, max_rotation)
    zoom = uniform(1.0 - max_zoom, 1.0 + max_zoom)
    flip = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * flip
    theta[:, 1, 0] = sin
    theta[:, 1, 1] = cos * flip
    return theta
