"""Per-image segmentation scores of label maps (Dice, HD95) and bootstrap intervals over images.

The building blocks of :mod:`fedward.common.ml.segmetrics`, which sums them over a split,
and of ``fedward model evaluate``, which reports a confidence interval per label:

- :func:`per_image_dice`: Dice (Dice, 1945) of each image and foreground label with
  :func:`monai.metrics.compute_dice` (MONAI; Cardoso et al., 2022), NaN where the
  image's truth lacks the label (``ignore_empty=True``; Maier-Hein et al., "Metrics
  reloaded", Nature Methods 2024: Dice is undefined for an empty reference).
- :func:`per_image_hd95`: the symmetric 95th percentile Hausdorff distance in mm
  (Huttenlocher et al., IEEE TPAMI 1993) with :func:`monai.metrics.compute_hausdorff_distance`
  and each image's voxel spacing, NaN unless both masks are non-empty.
- :func:`bootstrap_interval`: percentile bootstrap interval of a mean over images
  (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, chapter 13).

Label maps are (B, H, W) or (B, D, H, W) tensors of label values 0..L, 0 the background
and 1..L the foreground labels (:attr:`~fedward.common.schema.DatasetSchema.foreground`);
everything is computed on the CPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from monai.networks.utils import one_hot

FloatArray = npt.NDArray[np.float64]
Spacing = torch.Tensor | npt.NDArray[np.floating] | Sequence[Sequence[float]]
"""Voxel spacing in mm, (B, dims), in the order of the label map's spatial axes."""

HD95_PERCENTILE: Final = 95.0
"""Percentile of the surface distances reported as HD95."""

_INTEGER_DTYPES: Final = frozenset({torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64})
_BOOTSTRAP_BLOCK: Final = 1_000_000
"""Resampled values drawn at a time by :func:`bootstrap_interval` (bounds its memory)."""


def per_image_dice(predicted: torch.Tensor, truth: torch.Tensor, num_labels: int) -> FloatArray:
    """Dice of each image and foreground label, float64 (B, L), NaN where the truth lacks the label.

    Args:
        predicted: (B, *S) label map, S = (H, W) or (D, H, W), values 0..L; integer, or a
            float tensor holding whole numbers (e.g. a loaded mask).
        truth: the true label map, same shape and values.
        num_labels: L, the number of foreground labels (``len(schema.foreground)``, the
            background not counted).

    Raises:
        ValueError: if the shapes or label values are invalid.
    """
    return dice_scores(*one_hot_masks(predicted, truth, num_labels))


def per_image_hd95(predicted: torch.Tensor, truth: torch.Tensor, spacing: Spacing, num_labels: int) -> FloatArray:
    """HD95 in mm of each image and foreground label, float64 (B, L), NaN unless both masks are non-empty.

    Args:
        predicted: (B, *S) label map, as for :func:`per_image_dice`.
        truth: the true label map, same shape and values.
        spacing: (B, dims) voxel spacing in mm of each image.
        num_labels: L, the number of foreground labels.

    Raises:
        ValueError: if the shapes, label values or spacings are invalid.
    """
    pred_hot, true_hot = one_hot_masks(predicted, truth, num_labels)
    return hd95_scores(pred_hot[:, 1:], true_hot[:, 1:], check_spacing(spacing, pred_hot.shape[0], pred_hot.ndim - 2))


def one_hot_masks(predicted: torch.Tensor, truth: torch.Tensor, num_labels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (B, L + 1, *S) one-hot masks of both label maps on the CPU, channel 0 the background.

    Made by :func:`monai.networks.utils.one_hot` after checking the label maps (see
    :func:`per_image_dice`).

    Raises:
        ValueError: if ``num_labels`` is not a positive integer, a label map is not
            (B, H, W) or (B, D, H, W) of labels 0..L, or the shapes differ.
    """
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"num_labels must be an integer >= 1, got {num_labels!r}")
    pred = _check_label_map(predicted, "predicted", num_labels)
    true = _check_label_map(truth, "truth", num_labels)
    if pred.shape != true.shape:
        raise ValueError(f"predicted and truth must have one shape, got {tuple(pred.shape)} and {tuple(true.shape)}")
    return one_hot(pred.unsqueeze(1), num_labels + 1), one_hot(true.unsqueeze(1), num_labels + 1)


def check_spacing(spacing: Spacing, batch: int, dims: int) -> FloatArray:
    """float64 (B, dims) voxel spacing in mm.

    Raises:
        ValueError: if the shape is not (batch, dims) or a value is not finite and positive.
    """
    if isinstance(spacing, torch.Tensor):
        spacing = spacing.detach().cpu().numpy()
    mm = np.asarray(spacing, dtype=np.float64)
    if mm.shape != (batch, dims) or not np.all(np.isfinite(mm) & (mm > 0)):
        raise ValueError(f"spacing must be ({batch}, {dims}) positive mm values, got shape {mm.shape}: {mm.tolist()}")
    return mm


def dice_scores(pred_hot: torch.Tensor, true_hot: torch.Tensor) -> FloatArray:
    """float64 (B, L) Dice of the foreground channels of (B, L + 1, *S) one-hot masks; NaN where the truth is empty."""
    dice = compute_dice(pred_hot, true_hot, include_background=False, ignore_empty=True)
    return np.asarray(dice.to(torch.float64).numpy(), dtype=np.float64)


def hd95_scores(pred_fg: torch.Tensor, true_fg: torch.Tensor, spacing: FloatArray) -> FloatArray:
    """float64 (B, L) HD95 in mm of (B, L, *S) foreground masks; NaN unless both masks are non-empty.

    Only the defined (image, label) pairs are passed to MONAI, which would warn and return
    inf or NaN for an empty mask. ``spacing`` is float64 (B, dims) in mm.
    """
    voxels = tuple(range(2, pred_fg.ndim))
    both = (pred_fg.sum(dim=voxels) > 0) & (true_fg.sum(dim=voxels) > 0)
    hd95 = np.full(tuple(both.shape), np.nan)
    for image, label in both.nonzero().tolist():
        with warnings.catch_warnings():
            # MONAI 1.5-1.6 warn about an argument MONAI itself passes to get_mask_edges.
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
            distance = compute_hausdorff_distance(
                pred_fg[image : image + 1, label : label + 1],
                true_fg[image : image + 1, label : label + 1],
                include_background=True,
                percentile=HD95_PERCENTILE,
                spacing=[spacing[image].tolist()],
            )
        hd95[image, label] = float(distance.item())
    return hd95


def _check_label_map(labels: torch.Tensor, what: str, num_labels: int) -> torch.Tensor:
    """int64 (B, *S) copy on the CPU, after checking the shape and that values are labels 0..L."""
    tensor = torch.as_tensor(labels).detach().cpu().as_subclass(torch.Tensor)
    if tensor.ndim not in (3, 4) or tensor.shape[0] < 1 or tensor.numel() == 0:
        raise ValueError(f"{what} must be a (B, H, W) or (B, D, H, W) label map, got shape {tuple(tensor.shape)}")
    if tensor.is_complex() or not (tensor.is_floating_point() or tensor.dtype in _INTEGER_DTYPES):
        raise ValueError(f"{what} must be a real label map, got dtype {tensor.dtype}")
    values = tensor.to(torch.float64)
    if not bool(torch.all((values == values.round()) & (values >= 0) & (values <= num_labels))):
        raise ValueError(f"{what} must hold labels 0..{num_labels}, got values {torch.unique(values)[:10].tolist()}")
    return values.to(torch.int64)


def bootstrap_interval(
    values: npt.NDArray[np.floating], *, samples: int = 1000, level: float = 0.95, seed: int
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (Efron & Tibshirani, 1993).

    Resamples the values with replacement ``samples`` times and returns the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means, e.g.
    the 2.5 % and 97.5 % quantiles for ``level=0.95``. Images are the resampled unit, so
    pass one value per image (a column of :func:`per_image_dice`).

    Args:
        values: float (N,) per-image values; NaN (undefined) values are dropped first.
        samples: number of bootstrap resamples, >= 1.
        level: confidence level in (0, 1).
        seed: seed of the :func:`numpy.random.default_rng` generator; the same seed
            gives the same interval.

    Returns:
        ``(low, high)``, or None when fewer than 2 values are defined.

    Raises:
        ValueError: if ``values`` is not 1-D real or holds an infinite value, ``samples``
            is not a positive integer or ``level`` is outside (0, 1).
    """
    data = np.asarray(values)
    if data.ndim != 1 or data.dtype == np.bool_ or not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ValueError(f"values must be a 1-D real array, got shape {data.shape} dtype {data.dtype}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    data = data.astype(np.float64)
    data = data[~np.isnan(data)]
    if not np.all(np.isfinite(data)):
        raise ValueError("values contain infinite values")
    n = data.shape[0]
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    block = max(1, _BOOTSTRAP_BLOCK // n)
    for start in range(0, samples, block):
        stop = min(start + block, samples)
        means[start:stop] = data[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)
