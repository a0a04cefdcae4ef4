"""Preprocess 3D volumes and label maps for every volume reader: orient, resample, normalise, fit the grid.

Both volume readers end here: NIfTI Decathlon folders (:mod:`fedward.common.data.decathlon`)
and DICOM series with DICOM SEG (:mod:`fedward.common.data.seriesfolder`, through
:func:`~fedward.common.data.series.nifti_layout`), so a volume gives the same arrays
whichever file format it came in. With MONAI on channel-first arrays, per case
(:func:`preprocess_volume`):

1. orientation to RAS (:class:`~monai.transforms.Orientation` on a
   :class:`~monai.data.MetaTensor` carrying the RAS affine);
2. optional resampling to ``spacing`` mm (:class:`~monai.transforms.Spacing`; images
   bilinear, labels nearest);
3. intensity normalisation (:mod:`fedward.common.data.intensity`; ``auto``: MR z-score over
   the non-zero voxels, CT window);
4. centred padding (zeros) or cropping to the grid (:class:`~monai.transforms.ResizeWithPadOrCrop`).

Each reader hands its cases to :func:`prepare_cases`, which skips (as problems) those that
raise :class:`~fedward.common.data.folder.SkippedCaseError` and stacks the rest per split.

**Axis convention.** Arrays keep nibabel's voxel-axis order after step 1, so axis 0 runs
from left to Right, axis 1 from posterior to Anterior, axis 2 from inferior to Superior
(RAS). fedward calls these three axes (D, H, W): ``data.volume-size`` and ``data.spacing``
are given, and spacings are reported, in this order.

**Grid.** Without a ``volume_size`` the grid is the data set's largest extent per axis,
rounded up to a multiple of 16 (:func:`volume_splits`): it depends on the cases one
hospital holds. A federation trains one model on one grid, so deployments set
``data.volume-size`` and every hospital pads or crops to it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

import numpy as np
import torch

from fedward.common.choices import Intensity, Modality
from fedward.common.data.folder import Problem, SkippedCaseError
from fedward.common.data.intensity import normalise_intensity, resolve_intensity
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.npz import SPLITS
from fedward.common.errors import DataError

if TYPE_CHECKING:
    from monai.data import MetaTensor

log = logging.getLogger(__name__)

GRID_MULTIPLE = 16
"""Volume sizes found from the data are rounded up to a multiple of this (four 2x poolings)."""
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
"""Axis labels of MONAI's Orientation: RAS codes with their opposite ends."""
CaseT = TypeVar("CaseT")


@dataclass(frozen=True, slots=True)
class VolumeSettings:
    """How :func:`preprocess_volume` prepares a volume (made by :func:`volume_settings`).

    Attributes:
        volume_size: the grid (D, H, W) in voxels; empty: found from the data set afterwards.
        spacing: voxel spacing (mm) along (D, H, W) to resample to; empty keeps the volume's own.
        intensity: a resolved normalisation (not ``auto``).
        ct_window: (low, high) Hounsfield units for ``ct-window``.
    """

    volume_size: tuple[int, ...]
    spacing: tuple[float, ...]
    intensity: Intensity
    ct_window: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class PreparedVolume:
    """One preprocessed case.

    Attributes:
        image: float32 (1, D, H, W), RAS voxel order, intensities normalised.
        label: uint8 (D, H, W) label map on the same grid.
        spacing: float64 (3,) voxel spacing along (D, H, W), mm.
    """

    image: np.ndarray
    label: np.ndarray
    spacing: np.ndarray


class NoUsableCaseError(DataError):
    """A volume folder of which no case can be used; :attr:`problems` says why, file by file."""

    def __init__(self, folder: Path, problems: list[Problem]) -> None:
        super().__init__(f"{folder} holds no usable case ({len(problems)} skipped)")
        self.problems = problems


def volume_settings(
    volume_size: Sequence[int],
    spacing: Sequence[float],
    intensity: Intensity,
    ct_window: Sequence[float],
    modality: Modality | None,
) -> VolumeSettings:
    """Checked settings for :func:`preprocess_volume`, ``auto`` intensity resolved for ``modality`` (volumes).

    Raises:
        DataError: if ``volume_size`` or ``spacing`` is neither empty nor three positive numbers.
    """
    if (volume_size and (len(volume_size) != 3 or min(volume_size) < 1)) or (
        spacing and (len(spacing) != 3 or min(spacing) <= 0)
    ):
        given = f"volume size {tuple(volume_size)} and spacing {tuple(spacing)}"
        raise DataError(f"{given} must each be empty or three positive numbers along (D, H, W)")
    method = resolve_intensity(intensity, modality, eight_bit=False)
    return VolumeSettings(tuple(volume_size), tuple(spacing), method, tuple(ct_window))


def preprocess_volume(
    image: np.ndarray, affine: np.ndarray, label: np.ndarray, settings: VolumeSettings
) -> PreparedVolume:
    """Orient to RAS, resample, normalise and pad or crop one volume and its label map (module docstring).

    Args:
        image: (X, Y, Z) voxel values in nibabel's voxel order (NIfTI data, or a DICOM series
            through :func:`~fedward.common.data.series.nifti_layout`); raw units (HU for CT).
        affine: float (4, 4) voxel index to RAS mm.
        label: (X, Y, Z) integer label map on the image's voxels.
        settings: from :func:`volume_settings`.

    Returns:
        The case on ``settings.volume_size`` (when given; else on its own oriented grid).

    Raises:
        DataError: if ``settings.ct_window`` is not (low, high) with low < high (``ct-window``).
    """
    # MONAI loads on first use: the CLI opens data sets without it
    from monai.data import MetaTensor
    from monai.data.utils import affine_to_spacing
    from monai.transforms import Orientation, Spacing

    matrix = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    orient = Orientation(axcodes="RAS", labels=RAS_LABELS)
    volume = orient(MetaTensor(torch.from_numpy(np.ascontiguousarray(image, np.float32)[None]), affine=matrix))
    labels = orient(MetaTensor(torch.from_numpy(np.ascontiguousarray(label, np.float32)[None]), affine=matrix.clone()))
    if settings.spacing:
        volume = Spacing(pixdim=settings.spacing, mode="bilinear")(volume)
        labels = Spacing(pixdim=settings.spacing, mode="nearest")(labels)
    oriented = cast("MetaTensor", volume)  # MONAI transforms return a MetaTensor for a MetaTensor
    grid_spacing = affine_to_spacing(np.asarray(oriented.affine), r=3).astype(np.float64)
    label_map = np.rint(torch.as_tensor(labels).numpy()[0]).astype(np.uint8)
    voxels = torch.as_tensor(volume).numpy().astype(np.float32)
    normalised = normalise_intensity(voxels, settings.intensity, nonzero=True, ct_window=settings.ct_window)
    prepared = PreparedVolume(normalised, label_map, grid_spacing)
    return _fit(prepared, settings.volume_size) if settings.volume_size else prepared


def prepare_cases(
    folder: Path,
    cases: Iterable[tuple[str, str, CaseT]],
    prepare: Callable[[CaseT], PreparedVolume],
    problems: list[Problem],
    volume_size: Sequence[int] = (),
) -> tuple[dict[str, MaskSplit], dict[str, tuple[str, ...]]]:
    """Prepare every case of a volume folder and stack them per split; a case that cannot be used is a problem.

    Args:
        folder: the data set folder (named when no case is usable).
        cases: (split, case name, case) per case, in row order.
        prepare: one case read and preprocessed (:func:`preprocess_volume`); raises
            :class:`~fedward.common.data.folder.SkippedCaseError` for a case to skip.
        problems: the read's problems so far; each skipped case's problem is appended.
        volume_size: the grid (see :func:`volume_splits`).

    Returns:
        The splits (:func:`volume_splits`) and, per split, its case names in row order.

    Raises:
        NoUsableCaseError: if every case is skipped (or there is none).
    """
    volumes: dict[str, list[PreparedVolume]] = {}
    names: dict[str, list[str]] = {}
    for split, name, case in cases:
        try:
            volume = prepare(case)
        except SkippedCaseError as skipped:
            problems.append(skipped.problem)
            continue
        volumes.setdefault(split, []).append(volume)
        names.setdefault(split, []).append(name)
    if not volumes:
        raise NoUsableCaseError(folder, problems)
    splits = volume_splits(volumes, volume_size)
    return splits, {split: tuple(names[split]) for split in splits}


def volume_splits(
    volumes: Mapping[str, Sequence[PreparedVolume]], volume_size: Sequence[int] = ()
) -> dict[str, MaskSplit]:
    """Stack prepared cases into one split each, on ``volume_size`` or the data set's own grid.

    Args:
        volumes: split name to its cases (splits without cases are left out).
        volume_size: the grid (D, H, W); empty: the largest extent of all ``volumes`` per
            axis, rounded up to a multiple of 16 (so the grid depends on this data set).

    Returns:
        Split name to :class:`~fedward.common.data.masksplit.MaskSplit`, in ``train``,
        ``val``, ``test`` order.

    Raises:
        DataError: if ``volumes`` holds no case.
    """
    everything = [v for split in volumes.values() for v in split]
    if not everything:
        raise DataError("no volume to stack")
    grid = tuple(volume_size) or _grid(everything)
    if not volume_size:
        log.info("volume grid %s found from the data set (set data.volume-size to the federation's)", grid)
    return {split: _stack(volumes[split], grid) for split in SPLITS if volumes.get(split)}


def _grid(volumes: list[PreparedVolume]) -> tuple[int, ...]:
    """Largest extent per axis over ``volumes``, rounded up to a multiple of 16."""
    largest = np.max([v.label.shape for v in volumes], axis=0)
    return tuple(int(math.ceil(int(n) / GRID_MULTIPLE) * GRID_MULTIPLE) for n in largest)


def _fit(volume: PreparedVolume, grid: Sequence[int]) -> PreparedVolume:
    """``volume`` centre-padded with zeros or cropped to ``grid``."""
    if volume.label.shape == tuple(grid):
        return volume
    from monai.transforms import ResizeWithPadOrCrop

    fit = ResizeWithPadOrCrop(spatial_size=tuple(grid), mode="constant")
    image = np.asarray(torch.as_tensor(fit(torch.from_numpy(volume.image))).numpy(), np.float32)
    label = np.asarray(torch.as_tensor(fit(torch.from_numpy(volume.label[None]))).numpy(), np.uint8)[0]
    return PreparedVolume(image, label, volume.spacing)


def _stack(volumes: Sequence[PreparedVolume], grid: tuple[int, ...]) -> MaskSplit:
    fitted = [_fit(v, grid) for v in volumes]
    return MaskSplit(
        np.stack([v.image for v in fitted]),
        np.stack([v.label for v in fitted]),
        np.zeros((len(fitted), 1), np.int64),
        np.stack([v.spacing for v in fitted]),
    )
