"""Segmentation metrics of predicted label maps, as additive sums a federation can add up.

Every segmentation evaluation in fedward (a hospital's validation split, the server's test
split, ``fedward model evaluate``) measures each foreground label (every label but the
background, index 0; :attr:`~fedward.common.schema.DatasetSchema.foreground`) with:

- Dice (Dice, 1945): ``2 |P ∩ T| / (|P| + |T|)`` of one image's predicted and true masks,
  computed by :func:`monai.metrics.compute_dice` (MONAI; Cardoso et al., 2022). An image
  whose ground truth lacks the label is left out of that label's Dice (MONAI's
  ``ignore_empty=True``): Dice is undefined for an empty reference, and counting it 1 or 0
  would reward or punish an image for what it does not contain (Maier-Hein et al.,
  "Metrics reloaded", Nature Methods 2024, pitfalls of empty references). An image whose
  truth has the label but whose prediction is empty scores Dice 0.
- Pooled Dice: ``2 Σ|P ∩ T| / Σ(|P| + |T|)`` over all voxels of all images. It is defined
  whenever anything was predicted or present, so it does count false positives on images
  without the structure, which per-image Dice leaves out.
- HD95: the 95th percentile Hausdorff distance in mm (Huttenlocher et al., IEEE TPAMI
  1993), computed by :func:`monai.metrics.compute_hausdorff_distance` (``percentile=95``,
  the voxel spacing), symmetric: the larger of the two directed 95th percentiles of the
  distances between the masks' surfaces. It is defined only when both masks are non-empty.
  A *miss* (truth has the label, prediction is empty) is left out of HD95; it already
  scores Dice 0, and the number of misses of a label is ``count-dice - count-hd95``.

A split is summarized by :class:`SegmentationSums`: per label, the sums and counts from
which the metrics are finished. Sums add up across batches and across hospitals, so the
federated validation Dice (:func:`federated_metrics`) is exactly the Dice of all the
hospitals' images pooled, not a mean of per-hospital means.

Metric keys (kebab-case, :func:`fedward.common.wire.metric_key`): the additive sums travel
as ``"{prefix}-{sum|count}-{quantity}[-{label}]"`` (:func:`segmentation_key`,
:func:`is_additive`), e.g. ``val-sum-dice-lesion``, ``val-count-hd95-lesion``,
``val-sum-loss``, ``val-count-images``; the finished metrics are ``{prefix}-dice``,
``{prefix}-dice-{label}``, ``{prefix}-pooled-dice[-{label}]``, ``{prefix}-hd95[-{label}]``
and ``{prefix}-loss``. Undefined values are left out, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Final

import numpy as np
import torch

from fedward.common.ml.segscores import FloatArray, Spacing, check_spacing, dice_scores, hd95_scores, one_hot_masks
from fedward.common.wire import metric_key

SUM: Final = "sum"
COUNT: Final = "count"
DICE: Final = "dice"
POOLED: Final = "pooled"
INTERSECTION: Final = "intersection"
VOLUME: Final = "volume"
HD95: Final = "hd95"
LOSS: Final = "loss"
IMAGES: Final = "images"

_PER_LABEL: Final = (
    ("dice_sum", SUM, DICE),
    ("dice_count", COUNT, DICE),
    ("intersection", SUM, INTERSECTION),
    ("volume", SUM, VOLUME),
    ("hd95_sum", SUM, HD95),
    ("hd95_count", COUNT, HD95),
)
"""Per-label fields of :class:`SegmentationSums` and their keys: ``(field, kind, quantity)``."""

_SCALARS: Final = (("loss_sum", SUM, LOSS), ("images", COUNT, IMAGES))
"""Whole-split fields of :class:`SegmentationSums` and their keys."""

_ADDITIVE_QUANTITIES: Final = frozenset(quantity for _, _, quantity in _PER_LABEL + _SCALARS)


def segmentation_key(prefix: str, *parts: str) -> str:
    """The metric key ``"{prefix}-{part}-{part}..."``; every segmentation key is spelled here.

    Examples: ``segmentation_key("val", SUM, DICE, "lesion") == "val-sum-dice-lesion"``,
    ``segmentation_key("val", POOLED, DICE) == "val-pooled-dice"``.

    Raises:
        ValueError: if ``prefix`` is empty or contains ``-`` (it would make keys ambiguous).
    """
    if not prefix or "-" in prefix:
        raise ValueError(f"metric prefix must be one word without '-', e.g. 'val'; got {prefix!r}")
    return metric_key(prefix, "-".join(parts))


def is_additive(key: str) -> bool:
    """Whether ``key`` is a segmentation sum or count, which the server adds across hospitals.

    ``is_additive("val-sum-dice-lesion") is True``; ``is_additive("val-dice-lesion") is False``.
    Such keys must be summed, never averaged: :func:`federated_metrics` finishes them.
    """
    parts = key.split("-", 3)
    return len(parts) >= 3 and parts[1] in (SUM, COUNT) and parts[2] in _ADDITIVE_QUANTITIES


@dataclass(slots=True, eq=False)
class SegmentationSums:
    """Additive sums of one split's segmentation quality, per foreground label.

    Every array is float64 of shape (L,), L the number of foreground labels, index ``i``
    for label value ``i + 1``. Counts are whole numbers stored as floats.

    Attributes:
        dice_sum: sum of per-image Dice over the images whose truth contains the label.
        dice_count: number of those images.
        intersection: voxels of prediction ∩ truth, summed over all images.
        volume: voxels of prediction plus voxels of truth, summed over all images.
        hd95_sum: sum of per-image HD95 in mm over images where both masks are non-empty.
        hd95_count: number of those images.
        loss_sum: sum of the per-image losses.
        images: number of images.
    """

    dice_sum: FloatArray
    dice_count: FloatArray
    intersection: FloatArray
    volume: FloatArray
    hd95_sum: FloatArray
    hd95_count: FloatArray
    loss_sum: float = 0.0
    images: int = 0

    def __post_init__(self) -> None:
        for name, _, _ in _PER_LABEL:
            setattr(self, name, np.array(getattr(self, name), dtype=np.float64, copy=True))
        shapes = {getattr(self, name).shape for name, _, _ in _PER_LABEL}
        if len(shapes) != 1 or len(shape := shapes.pop()) != 1 or shape[0] < 1:
            raise ValueError(f"SegmentationSums arrays must all have one shape (L,), L >= 1; got {shapes}")
        self.loss_sum = float(self.loss_sum)
        self.images = int(self.images)

    @classmethod
    def zeros(cls, num_labels: int) -> SegmentationSums:
        """Empty sums for ``num_labels`` foreground labels (``len(schema.foreground)``)."""
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be an integer >= 1, got {num_labels!r}")
        zeros = np.zeros(num_labels)
        return cls(zeros, zeros, zeros, zeros, zeros, zeros)  # __post_init__ copies each

    @property
    def num_labels(self) -> int:
        """L, the number of foreground labels."""
        return int(self.dice_sum.shape[0])

    def add(self, other: SegmentationSums) -> None:
        """Add ``other``'s sums to these, in place.

        Raises:
            ValueError: if the two count different numbers of labels.
        """
        if other.num_labels != self.num_labels:
            raise ValueError(f"cannot add sums of {other.num_labels} labels to sums of {self.num_labels}")
        for name, _, _ in _PER_LABEL:
            getattr(self, name)[:] += getattr(other, name)
        self.loss_sum += other.loss_sum
        self.images += other.images

    def __add__(self, other: SegmentationSums) -> SegmentationSums:
        """New sums of both; neither operand changes."""
        total = SegmentationSums(**{f.name: getattr(self, f.name) for f in fields(self)})
        total.add(other)
        return total

    def update(
        self,
        predicted: torch.Tensor,
        truth: torch.Tensor,
        spacing: Spacing,
        loss_sum: float,
    ) -> None:
        """Accumulate one batch.

        Args:
            predicted: (B, *S) label map, S = (H, W) or (D, H, W), integer values 0..L
                (a float tensor holding whole numbers is accepted), e.g. ``logits.argmax(1)``.
            truth: the true label map, same shape and values.
            spacing: (B, dims) voxel spacing in mm of each image, in the order of S.
            loss_sum: sum of the batch's per-image losses (mean loss times B).

        Raises:
            ValueError: if shapes, label values or spacings are invalid, or ``loss_sum`` is
                not finite.
        """
        pred_hot, true_hot = one_hot_masks(predicted, truth, self.num_labels)
        mm = check_spacing(spacing, pred_hot.shape[0], pred_hot.ndim - 2)
        loss = float(loss_sum)
        if not math.isfinite(loss):
            raise ValueError(f"loss_sum must be finite, got {loss_sum!r}")
        dice = dice_scores(pred_hot, true_hot)  # (B, L), NaN for an empty truth
        pred_fg, true_fg = pred_hot[:, 1:], true_hot[:, 1:]
        hd95 = hd95_scores(pred_fg, true_fg, mm)  # (B, L), NaN unless both masks are non-empty
        voxels = tuple(range(2, pred_fg.ndim))
        intersection = (pred_fg * true_fg).sum(dim=voxels, dtype=torch.float64).sum(dim=0).numpy()
        volume = (pred_fg + true_fg).sum(dim=voxels, dtype=torch.float64).sum(dim=0).numpy()
        # Everything is computed before anything is added, so a failure leaves the sums as they were.
        self.intersection += intersection
        self.volume += volume
        self.dice_sum += np.nansum(dice, axis=0)
        self.dice_count += np.sum(~np.isnan(dice), axis=0)
        self.hd95_sum += np.nansum(hd95, axis=0)
        self.hd95_count += np.sum(~np.isnan(hd95), axis=0)
        self.loss_sum += loss
        self.images += int(pred_hot.shape[0])

    def to_wire(self, prefix: str, names: Sequence[str]) -> dict[str, float]:
        """The sums as metric keys, e.g. ``{"val-sum-dice-lesion": 7.3, "val-count-images": 9.0}``.

        Args:
            prefix: the split, e.g. ``"val"``.
            names: the L foreground label names, in label order.

        Raises:
            ValueError: if ``names`` are not L distinct non-empty names.
        """
        _check_names(names, self.num_labels)
        wire = {
            segmentation_key(prefix, kind, quantity, label): float(value)
            for field, kind, quantity in _PER_LABEL
            for label, value in zip(names, getattr(self, field), strict=True)
        }
        wire.update(
            {segmentation_key(prefix, kind, quantity): float(getattr(self, f)) for f, kind, quantity in _SCALARS}
        )
        return wire

    @classmethod
    def from_wire(cls, metrics: Mapping[str, float], prefix: str, names: Sequence[str]) -> SegmentationSums:
        """The sums :meth:`to_wire` wrote; other keys in ``metrics`` are ignored.

        Raises:
            ValueError: naming the key, if a key is missing, not a finite number, negative, a
                fractional count, or inconsistent (Dice sum above its count, intersection
                above half the volume, more Dice or HD95 images than images).
        """
        _check_names(names, len(names))

        def read(kind: str, quantity: str, label: str | None = None) -> float:
            key = segmentation_key(prefix, kind, quantity, *([label] if label is not None else []))
            value = metrics.get(key)
            real = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
            number = float(value) if real and value is not None else math.nan
            if not math.isfinite(number) or number < 0 or (kind == COUNT and not number.is_integer()):
                what = "a whole number" if kind == COUNT else "a number"
                raise ValueError(f"segmentation metric {key!r} must be {what} >= 0, got {value!r}")
            return number

        arrays = {field: np.array([read(kind, q, label) for label in names]) for field, kind, q in _PER_LABEL}
        sums = cls(**arrays, loss_sum=read(SUM, LOSS), images=int(read(COUNT, IMAGES)))
        _check_consistent(sums, prefix, names)
        return sums

    def finish(self, prefix: str, names: Sequence[str]) -> dict[str, float]:
        """The metrics, e.g. ``{"val-dice": 0.81, "val-dice-lesion": 0.81, ..., "val-loss": 0.2}``.

        ``{prefix}-dice`` and ``{prefix}-hd95`` are macro means over the labels where the
        label's value is defined; ``{prefix}-pooled-dice`` pools the voxels of all labels
        and images (larger structures weigh more). HD95 is in mm. Undefined values (no
        image for a label, nothing predicted or present, no image at all) are left out.

        Raises:
            ValueError: if ``names`` are not L distinct non-empty names.
        """
        _check_names(names, self.num_labels)
        dice = _ratios(self.dice_sum, self.dice_count)
        pooled = _ratios(2.0 * self.intersection, self.volume)
        hd95 = _ratios(self.hd95_sum, self.hd95_count)
        out: dict[str, float] = {}
        for parts, overall, per_label in (
            ((DICE,), _mean_defined(dice), dice),
            ((POOLED, DICE), _ratio(2.0 * self.intersection.sum(), self.volume.sum()), pooled),
            ((HD95,), _mean_defined(hd95), hd95),
        ):
            if overall is not None:
                out[segmentation_key(prefix, *parts)] = overall
            out.update(
                {segmentation_key(prefix, *parts, n): v for n, v in zip(names, per_label, strict=True) if v is not None}
            )
        loss = _ratio(self.loss_sum, self.images)
        if loss is not None:
            out[segmentation_key(prefix, LOSS)] = loss
        return out


def federated_metrics(
    hospital_metrics: Sequence[Mapping[str, float]], prefix: str, names: Sequence[str]
) -> dict[str, float]:
    """The metrics of all hospitals' images together, from each hospital's wire sums.

    The hospitals' :meth:`SegmentationSums.to_wire` sums are added and then finished, so
    e.g. ``val-dice-lesion`` is the mean Dice over every image of every hospital (whose
    truth has the lesion), exactly what pooling the images would give; a mean of the
    hospitals' means would weigh a hospital's images by its size and its empty truths.

    The result holds the summed sums and counts too (the ``is_additive`` keys), so a record
    keeps the image counts behind each number and can be re-aggregated:
    ``federated_metrics([result], prefix, names) == result``.

    Args:
        hospital_metrics: each hospital's metric record (other keys are ignored).
        prefix: the split, e.g. ``"val"``.
        names: the foreground label names, in label order.

    Raises:
        ValueError: if there is no hospital, or a hospital's record lacks a sum or holds an
            invalid one (the message names the hospital's position and the key).
    """
    if not hospital_metrics:
        raise ValueError("no hospital metrics to federate")
    total = SegmentationSums.zeros(len(names))
    for position, metrics in enumerate(hospital_metrics):
        try:
            total.add(SegmentationSums.from_wire(metrics, prefix, names))
        except ValueError as err:
            raise ValueError(f"hospital {position}: {err}") from None
    return total.to_wire(prefix, names) | total.finish(prefix, names)


def _check_names(names: Sequence[str], num_labels: int) -> None:
    if isinstance(names, str) or len(names) != num_labels or len(set(names)) != len(names) or not all(names):
        raise ValueError(f"expected {num_labels} distinct non-empty foreground label names, got {names!r}")


def _check_consistent(sums: SegmentationSums, prefix: str, names: Sequence[str]) -> None:
    """Raise ValueError naming the first key whose value contradicts the others."""
    checks = (
        (sums.dice_sum <= sums.dice_count * (1 + 1e-9), SUM, DICE),
        (sums.dice_count <= sums.images, COUNT, DICE),
        (sums.hd95_count <= sums.dice_count, COUNT, HD95),
        (2.0 * sums.intersection <= sums.volume * (1 + 1e-9), SUM, INTERSECTION),
    )
    for ok, kind, quantity in checks:
        for label, fine in zip(names, ok, strict=True):
            if not fine:
                key = segmentation_key(prefix, kind, quantity, label)
                raise ValueError(f"segmentation metric {key!r} is inconsistent with the other sums")


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator > 0 else None


def _ratios(numerators: FloatArray, denominators: FloatArray) -> list[float | None]:
    return [_ratio(n, d) for n, d in zip(numerators.tolist(), denominators.tolist(), strict=True)]


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return math.fsum(defined) / len(defined) if defined else None
