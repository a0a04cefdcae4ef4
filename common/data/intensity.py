"""Intensity normalisation of segmentation images with MONAI, by modality or as the config asks.

One place decides what :class:`~fedward.common.choices.Intensity` means for every
segmentation reader (image + mask folders, Decathlon volumes):

* ``scale``: 8-bit grey values divided by 255 (:class:`~monai.transforms.ScaleIntensityRange`
  0..255 to 0..1, not clipped);
* ``zscore``: zero mean and unit variance per image (:class:`~monai.transforms.NormalizeIntensity`);
  over the non-zero voxels for volumes (MR background outside the body stays 0, as nnU-Net
  does for MR, Isensee et al., Nature Methods 18, 2021), over all pixels for 2D images;
* ``percentile``: the 0.5th..99.5th percentile range of each image mapped to [0, 1] and
  clipped (:class:`~monai.transforms.ScaleIntensityRangePercentiles`);
* ``ct-window``: Hounsfield units clipped to the window (low, high) and mapped to [0, 1];
* ``auto``: 8-bit images (PNG, JPEG: ultrasound, X-ray) the division by 255; volumes the
  CT window for CT, else the z-score (MR and other modalities).

Nothing here logs or returns statistics of the images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from fedward.common.choices import DEFAULT_CT_WINDOW, Intensity, Modality
from fedward.common.errors import DataError

PERCENTILES: tuple[float, float] = (0.5, 99.5)
"""Lower and upper percentile of ``percentile`` normalisation."""


def resolve_intensity(method: Intensity, modality: Modality | None, *, eight_bit: bool) -> Intensity:
    """The normalisation ``auto`` stands for; any other method is returned unchanged.

    Args:
        method: what the config asks for.
        modality: the images' modality, ``None`` when unknown.
        eight_bit: whether the images are 8-bit grey values (PNG, JPEG).

    Returns:
        ``scale`` for 8-bit images (whatever their modality: an 8-bit export of a CT slice
        has lost its Hounsfield units), else ``ct-window`` for CT and ``zscore`` for MR
        and any other source.
    """
    if method is not Intensity.AUTO:
        return method
    if eight_bit:
        return Intensity.SCALE
    return Intensity.CT_WINDOW if modality is Modality.CT else Intensity.ZSCORE


def normalise_intensity(
    image: np.ndarray, method: Intensity, *, nonzero: bool, ct_window: Sequence[float] = DEFAULT_CT_WINDOW
) -> np.ndarray:
    """Normalise one channel-first image with MONAI.

    Args:
        image: float (C, *S): (C, H, W) or (C, D, H, W), raw intensities (grey values,
            MR signal, Hounsfield units).
        method: a resolved method (not ``auto``; see :func:`resolve_intensity`).
        nonzero: ``zscore`` only: statistics over the non-zero voxels (zeros stay 0)
            rather than over all of them.
        ct_window: ``ct-window`` only: (low, high) in Hounsfield units.

    Returns:
        float32 array of the same shape.

    Raises:
        DataError: if ``method`` is ``auto`` or ``ct_window`` is not (low, high) with low < high.
    """
    transform = _transform(method, nonzero, ct_window)
    out = transform(torch.as_tensor(np.asarray(image, dtype=np.float32)))
    return np.asarray(torch.as_tensor(out).numpy(), dtype=np.float32)


def _transform(method: Intensity, nonzero: bool, ct_window: Sequence[float]) -> Callable[[torch.Tensor], object]:
    # MONAI loads on first use: the CLI opens data sets without it
    from monai.transforms import NormalizeIntensity, ScaleIntensityRange, ScaleIntensityRangePercentiles

    if method is Intensity.SCALE:
        return ScaleIntensityRange(a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=False)
    if method is Intensity.ZSCORE:
        return NormalizeIntensity(nonzero=nonzero)
    if method is Intensity.PERCENTILE:
        low, high = PERCENTILES
        return ScaleIntensityRangePercentiles(lower=low, upper=high, b_min=0.0, b_max=1.0, clip=True)
    if method is Intensity.CT_WINDOW:
        if len(ct_window) != 2 or ct_window[0] >= ct_window[1]:
            raise DataError(f"data.ct-window must be [low, high] Hounsfield units with low < high; got {ct_window}")
        return ScaleIntensityRange(a_min=ct_window[0], a_max=ct_window[1], b_min=0.0, b_max=1.0, clip=True)
    raise DataError(f"intensity {method.value!r} must be resolved (resolve_intensity) before normalising")
