"""Segmentation images and label maps as a PyTorch dataset, and the batch pipeline that augments them together.

Images arrive preprocessed on the model's grid (:class:`~fedward.common.data.masksplit.MaskSplit`:
float32, intensities normalised), so the pipeline only augments, per batch on the training
device: random mirroring (p = 0.5 per mirrored axis, :func:`mirror_axes`), a random
rotation and zoom applied to image and label map in one resampling by MONAI's
:class:`~monai.networks.layers.AffineTransform` (bilinear for the image, nearest for the
label map, so labels stay labels), and a random intensity scale.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from fedward.common.choices import Task
from fedward.common.data.masksplit import MaskSplit


class SegmentationDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Images and label maps of one split at one hospital.

    Args:
        split: the arrays (images float32 (N, C, *S), label maps uint8 (N, *S)).
        num_classes: labels K of the label map, background included.

    Items:
        ``(image, label map)``: float32 (C, *S) and uint8 (1, *S).
    """

    task = Task.SEGMENTATION

    def __init__(self, split: MaskSplit, num_classes: int) -> None:
        self.split = split
        self.images = torch.from_numpy(np.ascontiguousarray(split.images))
        self.masks = torch.from_numpy(np.ascontiguousarray(split.masks)).unsqueeze(1)
        self.labels = split.labels
        self.spacing = split.spacing
        self.num_classes = num_classes

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.masks[index]

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes."""
        return self.split.spatial_dims

    def class_counts(self) -> np.ndarray:
        """Images per stratum (the image's class where the data set has one), int64."""
        return np.bincount(self.labels[:, 0], minlength=1).astype(np.int64)


def concat_mask_splits(parts: list[MaskSplit]) -> MaskSplit:
    """One split holding every image of ``parts`` in order (same grid).

    Raises:
        ValueError: if ``parts`` is empty.
    """
    if not parts:
        raise ValueError("nothing to concatenate")
    return MaskSplit(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.masks for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.spacing for p in parts]),
    )


class SegmentationPipeline(nn.Module):
    """Joint random augmentation of image and label-map batches (training mode only).

    Args:
        augment: augment in training mode; otherwise (and in eval mode) batches pass unchanged.
        spatial_dims: 2 or 3.
        max_rotation_deg: largest rotation, degrees (2D: in-plane; 3D: about the first axis).
        max_zoom: largest relative zoom.
        max_intensity_scale: image intensities are multiplied by a factor uniform in 1 +- this.
        patch: in training mode, crop each image and label map to a random patch of this
            size first (:func:`random_patches`); ``()``: whole images.

    Shapes:
        images (B, C, *S) float32; label maps (B, 1, *S) uint8 -> int64 (B, 1, *S).
    """

    def __init__(
        self,
        augment: bool,
        spatial_dims: int,
        max_rotation_deg: float = 15.0,
        max_zoom: float = 0.1,
        max_intensity_scale: float = 0.1,
        patch: tuple[int, ...] = (),
    ) -> None:
        # MONAI loads on first use: the CLI opens data sets without it
        from monai.networks.layers import AffineTransform

        super().__init__()
        self.patch = patch
        self.augment = augment
        self.spatial_dims = spatial_dims
        self.max_rotation = math.radians(max_rotation_deg)
        self.max_zoom = max_zoom
        self.max_intensity_scale = max_intensity_scale
        self.image_affine = AffineTransform(normalized=True, mode="bilinear", padding_mode="zeros")
        self.mask_affine = AffineTransform(normalized=True, mode="nearest", padding_mode="zeros")

    def pair(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(model input, label map)`` of a batch, augmented together in training mode."""
        x, y = images.float(), masks.long()
        if self.training and self.patch:
            x, y = random_patches(x, y, self.patch, generator)
        if not (self.training and self.augment):
            return x, y
        batch = x.shape[0]
        theta = random_affines_nd(batch, self.spatial_dims, self.max_rotation, self.max_zoom, generator).to(x.device)
        x = torch.as_tensor(self.image_affine(x, theta))
        y = torch.as_tensor(self.mask_affine(y.float(), theta)).round().long()
        scale = 1.0 + self.max_intensity_scale * (2 * torch.rand(batch, generator=generator) - 1)
        return x * scale.to(x.device).view(batch, *([1] * (x.ndim - 1))), y


def mirror_axes(spatial_dims: int) -> tuple[int, ...]:
    """Spatial axes (0-based, MONAI index order) that training may mirror.

    Volumes: every axis, as nnU-Net does (Isensee et al., Nature Methods 18, 2021). 2D
    images: the horizontal axis only: an ultrasound image has the transducer at the top
    and its acoustic shadows below a lesion, an X-ray the apices at the top, so an
    upside-down image is not one a hospital will ever show the model (the classification
    pipeline mirrors the same way).
    """
    return tuple(range(spatial_dims)) if spatial_dims == 3 else (spatial_dims - 1,)


def random_affines_nd(
    batch: int, spatial_dims: int, max_rotation: float, max_zoom: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random mirroring (:func:`mirror_axes`), a rotation and a zoom in normalized coordinates, one per image.

    Args:
        batch: number of matrices B.
        spatial_dims: 2 or 3.
        max_rotation: largest rotation, radians (3D: about the first spatial axis).
        max_zoom: largest relative zoom.
        generator: CPU random generator (``None``: PyTorch's global one).

    Returns:
        float32 (B, d, d + 1) affines (d = ``spatial_dims``), no translation, MONAI index order.
    """

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator)

    d = spatial_dims
    angle = uniform(-max_rotation, max_rotation)
    zoom = uniform(1.0 - max_zoom, 1.0 + max_zoom)
    flips = torch.where(torch.rand(batch, d, generator=generator) < 0.5, -1.0, 1.0)
    fixed = [axis for axis in range(d) if axis not in mirror_axes(d)]
    flips[:, fixed] = 1.0
    rotation = torch.eye(d).repeat(batch, 1, 1)
    i, j = d - 2, d - 1  # the in-plane (last two) axes
    rotation[:, i, i], rotation[:, i, j] = torch.cos(angle), -torch.sin(angle)
    rotation[:, j, i], rotation[:, j, j] = torch.sin(angle), torch.cos(angle)
    linear = rotation / zoom.view(batch, 1, 1) * flips.view(batch, 1, d)
    return torch.cat([linear, torch.zeros(batch, d, 1)], dim=2)


FOREGROUND_SHARE = 2 / 3
"""Share of training patches centred on a labelled voxel (nnU-Net oversamples foreground by 1/3;
MONAI's ``RandCropByPosNegLabel`` with pos = 2, neg = 1 gives 2/3)."""


def random_patches(
    images: torch.Tensor, masks: torch.Tensor, patch: tuple[int, ...], generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random patch per image and label map; centred on a labelled voxel with probability 2/3.

    Args:
        images: (B, C, *S).
        masks: (B, 1, *S) label maps.
        patch: patch size P, one per spatial axis, each <= S.
        generator: CPU random generator (``None``: PyTorch's global one).

    Returns:
        ``(images, masks)`` of shapes (B, C, *P) and (B, 1, *P).

    Raises:
        ValueError: if ``patch`` does not fit the grid.
    """
    grid = tuple(images.shape[2:])
    if len(patch) != len(grid) or any(p > s for p, s in zip(patch, grid, strict=True)):
        raise ValueError(f"patch {patch} does not fit the grid {grid}")
    crops = [_crop_start(masks[b, 0], patch, generator) for b in range(images.shape[0])]
    regions = [tuple(slice(a, a + p) for a, p in zip(start, patch, strict=True)) for start in crops]
    return (
        torch.stack([images[b][(slice(None), *r)] for b, r in enumerate(regions)]),
        torch.stack([masks[b][(slice(None), *r)] for b, r in enumerate(regions)]),
    )


def _crop_start(mask: torch.Tensor, patch: tuple[int, ...], generator: torch.Generator | None) -> list[int]:
    """Start corner of a patch around a random labelled voxel (p = 2/3, when there is one) or a random centre."""
    grid = mask.shape
    foreground = torch.nonzero(mask > 0)
    if len(foreground) and float(torch.rand(1, generator=generator)) < FOREGROUND_SHARE:
        centre = foreground[int(torch.randint(len(foreground), (1,), generator=generator))].tolist()
    else:
        centre = [int(torch.randint(s, (1,), generator=generator)) for s in grid]
    return [min(max(c - p // 2, 0), s - p) for c, p, s in zip(centre, patch, grid, strict=True)]
