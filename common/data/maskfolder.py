"""Image + mask folders (the BUSI layout): pair images with their lesion masks and read them as arrays.

Layout (Al-Dhabyani et al., "Dataset of breast ultrasound images", Data in Brief 28, 2020)::

    <folder>/<class>/<name>.png          the image (8-bit grey or RGB; PNG or JPEG)
    <folder>/<class>/<name>_mask.png     its mask: non-zero pixels are the lesion
    <folder>/<class>/<name>_mask_1.png   a further lesion of the same image, and so on
    <folder>/splits.csv                  optional: image, masks ('|'-joined), label, split

With ``splits.csv`` its rows are the cases (columns ``image`` and ``masks`` required,
``label`` and ``split`` optional); without it every image in the class sub-folders is a
case, its masks found by the ``_mask``/``_mask_<n>`` naming, its class the sub-folder's
name (images directly in ``<folder>`` have no class) and its split ``None``.

Scanning (:func:`~fedward.common.data.maskscan.scan_mask_folder`) pairs the files; reading
(:func:`read_mask_folder`) gives either segmentation splits
(:class:`~fedward.common.data.masksplit.MaskSplit`: the union of an image's masks, an empty
mask meaning "no lesion") or classification splits (:class:`~fedward.common.data.npz.ArraySplit`,
with each image's mask for ``data.target = "class+mask"``).
Colour images become grey with the ITU-R BT.601 luma weights (those of Pillow's ``"L"``
mode; BUSI has 16 images with colour overlays). Files that cannot be used are skipped and
listed as :class:`~fedward.common.data.folder.Problem` with a stable reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedward.common.choices import Intensity, Modality, TargetKind, Task
from fedward.common.data.dicom import Reason, UnusableFileError
from fedward.common.data.files import decode_file, to_model_input
from fedward.common.data.folder import (
    Problem,
    SkippedCaseError,
    label_index,
    log_read,
)
from fedward.common.data.intensity import normalise_intensity, resolve_intensity
from fedward.common.data.maskscan import MaskCase, scan_mask_folder
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.npz import SPLITS, ArraySplit
from fedward.common.errors import DataError
from fedward.common.schema import DatasetSchema

log = logging.getLogger(__name__)

LESION_CLASSES: tuple[str, ...] = ("background", "lesion")
"""Segmentation classes of a mask folder: masks are binary (the union of the lesions)."""


@dataclass(frozen=True, slots=True)
class FolderRead:
    """A folder data set read into arrays: what every folder reader returns.

    Attributes:
        schema: task, classes, channels, spatial dimensions and modality.
        splits: ``train``/``val``/``test`` to :class:`~fedward.common.data.masksplit.MaskSplit`
            (segmentation) or :class:`~fedward.common.data.npz.ArraySplit` (classification);
            only the splits that hold cases.
        problems: cases, files or rows skipped, with reasons (relative file names: they
            stay at the hospital).
        strata: names of the groups the splits' ``labels`` index (the images' classes, for
            partitioning and stratified hold-outs); ``()`` when there is a single group.
        cases: split name to the id of each of its rows, row order (``cases["train"][i]``
            is the case of ``splits["train"]`` row ``i``), for readers that record them
            (Decathlon: the case name, the image file name without ``.nii.gz``); empty
            otherwise. Ids are file names: like the problems, they stay at the hospital.
    """

    schema: DatasetSchema
    splits: dict[str, MaskSplit | ArraySplit]
    problems: list[Problem]
    strata: tuple[str, ...] = ()
    cases: dict[str, tuple[str, ...]] = field(default_factory=dict)


def read_mask_folder(
    folder: Path,
    *,
    classes: tuple[str, ...] | None = None,
    image_size: int,
    target: TargetKind = TargetKind.AUTO,
    intensity: Intensity = Intensity.AUTO,
    modality: Modality | None = None,
) -> FolderRead:
    """Read an image + mask folder as segmentation or classification splits.

    Target ``mask`` (and ``auto`` when no case has a class): task ``segmentation``, classes
    ``("background", "lesion")``, 1 channel, 2 spatial dims; each split a
    :class:`~fedward.common.data.masksplit.MaskSplit` (arrays as :func:`_read_segmentation` states).

    Target ``class`` (and ``auto`` with classes): task ``binary`` or ``multiclass``; each split an
    :class:`~fedward.common.data.npz.ArraySplit` (images uint8 (N, S, S), labels int64 (N, 1)); no masks read.
    Target ``class+mask``: the same, each split also holding every image's lesion mask
    (uint8 (N, S, S), the union of its masks as for segmentation).

    Cases go to the split ``splits.csv`` gives, ``train`` when none. Skipped, as problems:
    an image without a mask file (``mask-missing``; not for ``class``), a mask of another
    size than its image (``mask-geometry-mismatch``), an unreadable file (its decoding
    reason), a class not in ``classes`` (``label-unknown``).

    Args:
        folder: the folder (see the module docstring for the layout).
        classes: class names in index order; ``None``: the sorted class names found.
        image_size: side S of the square grid, pixels.
        target: which annotation to learn.
        intensity: normalisation of segmentation images (ignored for classification).
        modality: the images' modality for the schema (BUSI: ultrasound); ``None``: unknown.

    Returns:
        The schema, the splits and the problems.

    Raises:
        DataError: if the folder cannot be scanned, ``class`` is asked of a folder with fewer
            than two classes, ``intensity`` is ``ct-window``, or no case is usable.
    """
    scan = scan_mask_folder(folder)
    problems = list(scan.problems)
    names = classes if classes is not None else tuple(sorted({c.label for c in scan.cases if c.label}))
    kind = target if target is not TargetKind.AUTO else (TargetKind.CLASS if names else TargetKind.MASK)
    if kind is not TargetKind.MASK and len(names) < 2:
        raise DataError(
            f"{folder} needs at least two classes (sub-folders or a label column) for data.target = {kind.value}"
        )
    cases, strata = _known_classes(scan.cases, names, problems)
    if kind is not TargetKind.MASK:
        task = Task.BINARY if len(names) == 2 else Task.MULTICLASS
        schema = DatasetSchema(task, names, 1, 2, modality)
        masks = kind is TargetKind.CLASS_AND_MASK
        splits = _read_classes(Path(folder), cases, strata, image_size, problems, masks=masks)
    else:
        schema = DatasetSchema(Task.SEGMENTATION, LESION_CLASSES, 1, 2, modality)
        splits = _read_segmentation(Path(folder), cases, strata, image_size, intensity, modality, problems)
    log_read(log, "mask folder", splits, problems)
    return FolderRead(schema, splits, problems, names)


def _known_classes(
    found: list[MaskCase], names: tuple[str, ...], problems: list[Problem]
) -> tuple[list[MaskCase], list[int]]:
    """The cases whose class is one of ``names``, with their class indices; the others become problems."""
    cases, strata = [], []
    for case in found:
        index = label_index(case.label, names) if names else 0
        if index is None:
            problems.append(Problem(case.image, Reason.LABEL_UNKNOWN, f"class {case.label!r} is not one of {names}"))
        else:
            cases.append(case)
            strata.append(index)
    return cases, strata


def _read_classes(
    folder: Path, cases: list[MaskCase], strata: list[int], size: int, problems: list[Problem], *, masks: bool
) -> dict[str, MaskSplit | ArraySplit]:
    """uint8 images (N, S, S) and class indices (N, 1) per split, and with ``masks`` each image's lesion mask.

    With ``masks`` a case without a mask file is skipped as ``mask-missing`` (an empty mask
    is a valid "no lesion"), as for segmentation.
    """
    rows: dict[str, tuple[list[np.ndarray], list[int], list[np.ndarray]]] = {}
    for case, stratum in zip(cases, strata, strict=True):
        if masks and not case.masks:
            problems.append(Problem(case.image, Reason.MASK_MISSING, "no mask file (<name>_mask.png) for this image"))
            continue
        try:
            image, shape = _decode_image(folder, case.image, size)
            mask = _decode_masks(folder, case, shape, size) if masks else None
        except SkippedCaseError as skipped:
            problems.append(skipped.problem)
            continue
        images, labels, lesions = rows.setdefault(case.split or "train", ([], [], []))
        images.append(image)
        labels.append(stratum)
        if mask is not None:
            lesions.append(mask)
    return {
        split: ArraySplit(
            np.stack(rows[split][0]),
            np.array(rows[split][1], np.int64).reshape(-1, 1),
            np.stack(rows[split][2]) if masks else None,
        )
        for split in SPLITS
        if split in rows
    } or _nothing_usable(folder, problems)


def _read_segmentation(
    folder: Path,
    cases: list[MaskCase],
    strata: list[int],
    size: int,
    intensity: Intensity,
    modality: Modality | None,
    problems: list[Problem],
) -> dict[str, MaskSplit | ArraySplit]:
    """Images and lesion label maps of ``cases``, per split; unusable cases are added to ``problems``.

    Each split's :class:`~fedward.common.data.masksplit.MaskSplit` holds:

    * images float32 (N, 1, S, S): grey values resized with MONAI ``Resize`` (area when shrinking,
      bilinear otherwise), rounded to 8 bits, normalised per image (:mod:`~fedward.common.data.intensity`);
    * masks uint8 (N, S, S): the union of the image's masks (non-zero pixels), resized
      nearest-neighbour (``nearest-exact``), 0 background, 1 lesion;
    * labels int64 (N, 1): index of the image's class in ``classes`` (strata), 0 without classes;
    * spacing float64 (N, 2): (original H / S, original W / S) in **original pixels** per
      grid pixel: PNG and JPEG carry no physical spacing, so no millimetres are claimed.

    Raises:
        DataError: if ``intensity`` resolves to ``ct-window`` (8-bit images hold no Hounsfield units).
    """
    method = resolve_intensity(intensity, modality, eight_bit=True)
    if method is Intensity.CT_WINDOW:
        raise DataError(f"{folder}: 8-bit images hold no Hounsfield units; intensity ct-window is for CT volumes")
    rows: dict[str, list[tuple[np.ndarray, np.ndarray, int, tuple[float, float]]]] = {}
    for case, stratum in zip(cases, strata, strict=True):
        if not case.masks:
            problems.append(Problem(case.image, Reason.MASK_MISSING, "no mask file (<name>_mask.png) for this image"))
            continue
        try:
            image, (height, width) = _decode_image(folder, case.image, size)
            mask = _decode_masks(folder, case, (height, width), size)
        except SkippedCaseError as skipped:
            problems.append(skipped.problem)
            continue
        pixels = normalise_intensity(image[None].astype(np.float32), method, nonzero=False)
        rows.setdefault(case.split or "train", []).append((pixels, mask, stratum, (height / size, width / size)))
    out: dict[str, MaskSplit | ArraySplit] = {}
    for split in SPLITS:
        if split in rows:
            images, masks, labels, spacing = zip(*rows[split], strict=True)
            out[split] = MaskSplit(
                np.stack(images),
                np.stack(masks),
                np.array(labels, np.int64).reshape(-1, 1),
                np.array(spacing, np.float64),
            )
    return out or _nothing_usable(folder, problems)


def _decode(folder: Path, relative: str) -> np.ndarray:
    """Display values of one file, float in [0, 1], (1, H, W) or (1, H, W, 3) (first frame)."""
    try:
        return decode_file(folder / relative)[:1]
    except UnusableFileError as err:
        raise SkippedCaseError(Problem(relative, err.reason, str(err))) from None


def _decode_image(folder: Path, relative: str, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """uint8 (S, S) grey image at the grid, and the file's (H, W) in pixels."""
    display = _decode(folder, relative)
    return to_model_input(display, 1, size)[0, 0].numpy(), (int(display.shape[1]), int(display.shape[2]))


def _decode_masks(folder: Path, case: MaskCase, shape: tuple[int, int], size: int) -> np.ndarray:
    """uint8 (S, S) union of the case's masks at the grid.

    Raises:
        SkippedCaseError: a mask cannot be decoded, or its size differs from ``shape``.
    """
    union = np.zeros(shape, dtype=bool)
    for relative in case.masks:
        mask = _decode(folder, relative)[0]
        mask = mask.max(axis=-1) if mask.ndim == 3 else mask
        if mask.shape != shape:
            message = f"mask is {mask.shape[0]}x{mask.shape[1]} px, its image {case.image} {shape[0]}x{shape[1]} px"
            raise SkippedCaseError(Problem(relative, Reason.MASK_MISMATCH, message))
        union |= mask > 0
    # MONAI loads on first use: the CLI opens data sets without it
    from monai.transforms import Resize

    resize = Resize(spatial_size=(size, size), mode="nearest-exact")
    grid = torch.as_tensor(resize(torch.from_numpy(union[None].astype(np.float32))))
    return (grid[0] > 0.5).numpy().astype(np.uint8)


def _nothing_usable(folder: Path, problems: list[Problem]) -> dict[str, MaskSplit | ArraySplit]:
    reasons = Counter(p.reason.value for p in problems)
    listing = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items())) or "no images found"
    raise DataError(f"{folder} holds no usable image ({listing})")
