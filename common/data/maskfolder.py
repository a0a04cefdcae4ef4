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

Reading (:func:`read_mask_folder`) gives either segmentation splits
(:class:`~fedward.common.data.masksplit.MaskSplit`: the union of an image's masks, an empty
mask meaning "no lesion") or classification splits (:class:`~fedward.common.data.npz.ArraySplit`).
Colour images become grey with the ITU-R BT.601 luma weights (those of Pillow's ``"L"``
mode; BUSI has 16 images with colour overlays). Files that cannot be used are skipped and
listed as :class:`~fedward.common.data.folder.Problem` with a stable reason.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Resize

from fedward.common.choices import Intensity, Modality, TargetKind, Task
from fedward.common.data.dicom import Reason, UnusableFileError
from fedward.common.data.files import decode_file, is_raster, to_model_input
from fedward.common.data.folder import (
    SPLIT_NAMES,
    Problem,
    SkippedCaseError,
    _files,
    _relative,
    _safe_relative,
    label_index,
    log_read,
)
from fedward.common.data.intensity import normalise_intensity, resolve_intensity
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.npz import SPLITS, ArraySplit
from fedward.common.errors import DataError
from fedward.common.schema import DatasetSchema

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.csv"
MASK_SEPARATOR = "|"
MASK_NAME = re.compile(r"^(?P<image>.+)_mask(?:_\d+)?$")
"""Stem of a mask file: ``<image stem>_mask`` or ``<image stem>_mask_<n>``."""
LESION_CLASSES: tuple[str, ...] = ("background", "lesion")
"""Segmentation classes of a mask folder: masks are binary (the union of the lesions)."""


@dataclass(frozen=True, slots=True)
class MaskCase:
    """An image and its masks.

    Attributes:
        image: the image, relative to the folder (POSIX form); stays at the hospital.
        masks: its mask files, relative paths; ``()`` when it has none.
        label: its class as written (sub-folder name or ``label`` column), ``""`` for none.
        split: ``train``, ``val``, ``test`` or ``None`` (not given).
    """

    image: str
    masks: tuple[str, ...]
    label: str
    split: str | None


@dataclass(slots=True)
class MaskFolderScan:
    """The cases of a mask folder, and the rows and files that could not be paired.

    Attributes:
        folder: the folder.
        layout: ``splits`` (``splits.csv``) or ``class-folders``.
        cases: usable cases, in ``splits.csv`` (or sorted path) order.
        problems: rows and files that cannot be used, with reasons.
    """

    folder: Path
    layout: str
    cases: list[MaskCase] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


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


def scan_mask_folder(folder: Path) -> MaskFolderScan:
    """Pair every image with its masks, class and split, without decoding any pixel.

    Args:
        folder: the data set folder (``splits.csv`` and/or class sub-folders).

    Returns:
        The cases (an image without masks is a case with ``masks == ()``) and the problems:
        rows of ``splits.csv`` that are malformed (``bad-manifest-row``) or name a missing
        file (``manifest-row-without-file``), images it does not list
        (``file-without-manifest-row``), masks without their image (``manifest-row-without-file``).

    Raises:
        DataError: if the folder does not exist or ``splits.csv`` is unreadable or lacks
            the ``image`` and ``masks`` columns.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data directory {folder} does not exist")
    return _scan_splits_file(folder) if (folder / SPLITS_FILE).is_file() else _scan_class_folders(folder)


def _scan_class_folders(folder: Path) -> MaskFolderScan:
    """Cases from the file names: ``<class>/<name>.png`` with ``<class>/<name>_mask*.png``."""
    scan = MaskFolderScan(folder, "class-folders")
    images: list[str] = []
    masks: dict[str, list[str]] = {}
    for path in _files(folder):
        if not is_raster(path):
            continue
        relative = _relative(path, folder)
        match = MASK_NAME.match(path.stem)
        if match:
            masks.setdefault(_relative(path.with_name(match["image"]), folder), []).append(relative)
        else:
            images.append(relative)
    stems = {relative.rsplit(".", 1)[0] for relative in images}
    for relative in images:
        parts = relative.split("/")
        label = parts[0] if len(parts) > 1 else ""
        scan.cases.append(MaskCase(relative, tuple(masks.get(relative.rsplit(".", 1)[0], ())), label, None))
    for stem, orphans in sorted(masks.items()):
        if stem not in stems:
            scan.problems += [Problem(m, Reason.MISSING_FILE, "a mask without its image; ignored") for m in orphans]
    return scan


def _read_rows(folder: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The columns (lower-cased name to header) and rows of ``splits.csv``."""
    try:
        with open(folder / SPLITS_FILE, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {c.strip().lower(): c for c in reader.fieldnames or []}
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{SPLITS_FILE} in {folder} cannot be read ({type(err).__name__})") from None
    if not {"image", "masks"} <= set(columns):
        raise DataError(
            f"{SPLITS_FILE} in {folder} needs the columns image and masks (label and split optional); "
            f"found: {', '.join(columns) or 'no header'}"
        )
    return columns, rows


def _scan_splits_file(folder: Path) -> MaskFolderScan:
    scan = MaskFolderScan(folder, "splits")
    columns, rows = _read_rows(folder)
    files = {_relative(p, folder) for p in _files(folder) if is_raster(p)}
    referenced: set[str] = set()
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        where = f"{SPLITS_FILE}:{number}"
        cell = {name: (row.get(header) or "").strip() for name, header in columns.items()}
        split_text = cell.get("split", "").lower()
        image = _safe_relative(cell["image"]) if cell["image"] else None
        masks = [_safe_relative(m.strip()) for m in cell["masks"].split(MASK_SEPARATOR) if m.strip()]
        if image is None or None in masks or (split_text and split_text not in SPLIT_NAMES):
            message = "image and masks must be paths inside the folder, split one of train, val, test"
            scan.problems.append(Problem(where, Reason.BAD_MANIFEST_ROW, message))
            continue
        if image in referenced:
            scan.problems.append(Problem(where, Reason.BAD_MANIFEST_ROW, f"{image} is listed twice"))
            continue
        mask_files = tuple(m for m in masks if m is not None)
        missing = [name for name in (image, *mask_files) if name not in files]
        referenced.update((image, *mask_files))
        if missing:
            message = f"listed in {where} but not in the folder"
            scan.problems += [Problem(name, Reason.MISSING_FILE, message) for name in missing]
            continue
        scan.cases.append(MaskCase(image, mask_files, cell.get("label", ""), SPLIT_NAMES.get(split_text)))
    for relative in sorted(files - referenced):
        scan.problems.append(Problem(relative, Reason.NOT_IN_MANIFEST, f"not listed in {SPLITS_FILE}; ignored"))
    return scan


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

    Cases go to the split ``splits.csv`` gives, ``train`` when none. Skipped, as problems:
    an image without a mask file (``mask-missing``, segmentation only), a mask of another
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
    if kind is TargetKind.CLASS and len(names) < 2:
        raise DataError(f"{folder} needs at least two classes (sub-folders or a label column) for data.target = class")
    cases, strata = _known_classes(scan.cases, names, problems)
    if kind is TargetKind.CLASS:
        task = Task.BINARY if len(names) == 2 else Task.MULTICLASS
        schema = DatasetSchema(task, names, 1, 2, modality)
        splits = _read_classes(Path(folder), cases, strata, image_size, problems)
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
    folder: Path, cases: list[MaskCase], strata: list[int], size: int, problems: list[Problem]
) -> dict[str, MaskSplit | ArraySplit]:
    rows: dict[str, tuple[list[np.ndarray], list[int]]] = {}
    for case, stratum in zip(cases, strata, strict=True):
        try:
            image, _ = _decode_image(folder, case.image, size)
        except SkippedCaseError as skipped:
            problems.append(skipped.problem)
            continue
        images, labels = rows.setdefault(case.split or "train", ([], []))
        images.append(image)
        labels.append(stratum)
    return {
        split: ArraySplit(np.stack(rows[split][0]), np.array(rows[split][1], np.int64).reshape(-1, 1))
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
    resize = Resize(spatial_size=(size, size), mode="nearest-exact")
    grid = torch.as_tensor(resize(torch.from_numpy(union[None].astype(np.float32))))
    return (grid[0] > 0.5).numpy().astype(np.uint8)


def _nothing_usable(folder: Path, problems: list[Problem]) -> dict[str, MaskSplit | ArraySplit]:
    reasons = Counter(p.reason.value for p in problems)
    listing = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items())) or "no images found"
    raise DataError(f"{folder} holds no usable image ({listing})")
