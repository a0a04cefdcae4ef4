"""Scan an image + mask folder (the BUSI layout): pair each image with its masks, class and split.

See :mod:`fedward.common.data.maskfolder` for the layout. Scanning reads no pixels: it
pairs files by name (or by ``splits.csv`` rows) and lists what cannot be paired.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from fedward.common.data.dicom import Reason
from fedward.common.data.files import is_raster
from fedward.common.data.folder import SPLIT_NAMES, Problem, _files, _relative, _safe_relative
from fedward.common.errors import DataError

SPLITS_FILE = "splits.csv"
MASK_SEPARATOR = "|"
MASK_NAME = re.compile(r"^(?P<image>.+)_mask(?:_\d+)?$")
"""Stem of a mask file: ``<image stem>_mask`` or ``<image stem>_mask_<n>``."""


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
