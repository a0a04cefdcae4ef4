"""Hospital image folders: a manifest (``labels.csv``) or one sub-folder per class.

Layouts
-------
*Manifest.* ``labels.csv`` in the folder, one row per image, columns:

* ``path`` (relative to the folder) **or** ``sop_instance_uid`` (the DICOM SOP Instance
  UID; the folder is searched for it);
* ``label``: a class name or index (multi-label federations: class names joined by ``|``,
  empty for none);
* ``split`` (optional): ``train``, ``val`` or ``test``; rows without one are split
  train/validation with a seeded stratified draw. ``test`` rows are never trained on.

*Class folders.* ``<folder>/<class name>/...`` holding DICOM, PNG or JPEG files.

Nothing here decodes pixels: :func:`scan_folder` pairs files with labels and lists every
problem it sees (manifest row without file, file without manifest row, bad row); decoding
happens in :mod:`fedward.common.data.load`.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from fedward.common.data.dicom import Reason, UnusableFileError, read_dicom
from fedward.common.data.files import is_raster
from fedward.common.errors import DataError

MANIFEST = "labels.csv"
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
LABEL_SEPARATOR = "|"


@dataclass(frozen=True, slots=True)
class Sample:
    """An image file and its label.

    Attributes:
        file: path relative to the hospital folder (POSIX form); stays at the hospital.
        label: the label as written (class name, index, or ``|``-joined names).
        split: ``train``, ``val``, ``test`` or ``None`` (to be drawn).
    """

    file: str
    label: str
    split: str | None


@dataclass(frozen=True, slots=True)
class Problem:
    """A file or manifest row that cannot be used.

    Attributes:
        file: the file (relative path) or ``labels.csv:<row>``; shown only at the hospital.
        reason: stable reason code.
        message: one line, no patient data.
    """

    file: str
    reason: Reason
    message: str

    def to_json(self) -> dict[str, str]:
        """``{"file", "reason", "message"}``, as reports list skipped and mismatched files."""
        return {"file": self.file, "reason": self.reason.value, "message": self.message}


class SkippedCaseError(Exception):
    """A case that cannot be used, and the problem to report (the folder readers catch it and skip the case)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def log_read(logger: logging.Logger, what: str, splits: Mapping[str, Sized], problems: Sequence[Problem]) -> None:
    """Log what a folder reader read: ``<what> read: train 3, val 1; 2 skipped`` (info), then each problem (debug).

    Args:
        logger: the reader's logger.
        what: the kind of folder (``mask folder``, ``decathlon folder``...).
        splits: split name to its cases, in the order to list them.
        problems: the cases, files or rows skipped.
    """
    sizes = ", ".join(f"{split} {len(arrays)}" for split, arrays in splits.items())
    logger.info("%s read: %s; %d skipped", what, sizes, len(problems))
    for problem in problems:
        logger.debug("%s: %s: %s", problem.file, problem.reason.value, problem.message)


@dataclass(slots=True)
class FolderScan:
    """Files paired with labels, and what could not be paired.

    Attributes:
        folder: the hospital folder.
        layout: ``manifest`` or ``class-folders``.
        samples: usable pairs, in manifest (or sorted path) order.
        problems: rows and files that cannot be used, with reasons.
    """

    folder: Path
    layout: str
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def is_image_folder(folder: Path) -> bool:
    """Whether ``folder`` uses a manifest or class sub-folders (rather than a ``.npz``)."""
    folder = Path(folder)
    if (folder / MANIFEST).is_file():
        return True
    return any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()) if folder.is_dir() else False


def scan_folder(folder: Path) -> FolderScan:
    """Pair every image with its label.

    Raises:
        DataError: if the folder does not exist, or ``labels.csv`` lacks the required
            columns, or the folder holds neither a manifest nor class sub-folders.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data directory {folder} does not exist")
    if (folder / MANIFEST).is_file():
        return _scan_manifest(folder)
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{folder} holds neither {MANIFEST} nor one sub-folder per class")
    scan = FolderScan(folder, "class-folders")
    for class_dir in classes:
        for path in _files(class_dir):
            scan.samples.append(Sample(_relative(path, folder), class_dir.name, None))
    return scan


def _files(root: Path) -> list[Path]:
    """Regular files below ``root``, sorted, without hidden ones and the manifest."""
    out = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if path.is_file() and not any(p.startswith(".") for p in parts) and path.name != MANIFEST:
            out.append(path)
    return out


def _relative(path: Path, folder: Path) -> str:
    return PurePosixPath(path.relative_to(folder)).as_posix()


def _scan_manifest(folder: Path) -> FolderScan:
    scan = FolderScan(folder, "manifest")
    try:
        with open(folder / MANIFEST, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {c.strip().lower(): c for c in reader.fieldnames or []}
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{MANIFEST} in {folder} cannot be read ({type(err).__name__})") from None
    if "label" not in columns or not ({"path", "sop_instance_uid"} & set(columns)):
        raise DataError(
            f"{MANIFEST} needs a 'label' column and a 'path' or 'sop_instance_uid' column; "
            f"found: {', '.join(columns) or 'no header'}"
        )
    files = {_relative(p, folder): p for p in _files(folder)}
    by_uid: dict[str, str] | None = None
    referenced: set[str] = set()
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        where = f"{MANIFEST}:{number}"
        label = (row.get(columns["label"]) or "").strip()
        split_text = (row.get(columns["split"]) or "").strip().lower() if "split" in columns else ""
        if split_text and split_text not in SPLIT_NAMES:
            scan.problems.append(
                Problem(where, Reason.BAD_MANIFEST_ROW, f"split must be train, val or test; got {split_text!r}")
            )
            continue
        split = SPLIT_NAMES.get(split_text) if split_text else None
        path_text = (row.get(columns["path"]) or "").strip() if "path" in columns else ""
        if path_text:
            relative = _safe_relative(path_text)
            if relative is None:
                scan.problems.append(
                    Problem(where, Reason.BAD_MANIFEST_ROW, "path must stay inside the hospital folder")
                )
                continue
            if relative not in files:
                scan.problems.append(Problem(relative, Reason.MISSING_FILE, f"listed in {where} but not in the folder"))
                continue
        else:
            uid = (row.get(columns.get("sop_instance_uid", ""), "") or "").strip()
            if not uid:
                scan.problems.append(
                    Problem(where, Reason.BAD_MANIFEST_ROW, "row names neither a path nor a SOP Instance UID")
                )
                continue
            if by_uid is None:
                by_uid = _index_uids(files)
            if uid not in by_uid:
                scan.problems.append(
                    Problem(where, Reason.MISSING_FILE, "no file in the folder has this row's SOP Instance UID")
                )
                continue
            relative = by_uid[uid]
        referenced.add(relative)
        scan.samples.append(Sample(relative, label, split))
    for relative in sorted(set(files) - referenced):
        scan.problems.append(Problem(relative, Reason.NOT_IN_MANIFEST, f"not listed in {MANIFEST}; ignored"))
    return scan


def _safe_relative(text: str) -> str | None:
    path = PurePosixPath(text.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path.as_posix()


def _index_uids(files: dict[str, Path]) -> dict[str, str]:
    """SOP Instance UID -> relative path, reading DICOM headers only."""
    out: dict[str, str] = {}
    for relative, path in files.items():
        if is_raster(path):
            continue
        try:
            uid = read_dicom(path, pixels=False).get("SOPInstanceUID")
        except UnusableFileError:
            continue
        if uid:
            out.setdefault(str(uid), relative)
    return out


def label_index(label: str, classes: Sequence[str]) -> int | None:
    """Class index of a label: its name (case-insensitive) or a valid integer index."""
    text = label.strip()
    lowered = [c.lower() for c in classes]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.isdigit() and int(text) < len(classes):
        return int(text)
    return None


def multi_hot(label: str, classes: Sequence[str]) -> list[int] | None:
    """0/1 vector (K,) of a ``|``-joined multi-label; ``None`` if a part is not a class."""
    out = [0] * len(classes)
    for part in filter(None, (p.strip() for p in label.split(LABEL_SEPARATOR))):
        index = label_index(part, classes)
        if index is None:
            return None
        out[index] = 1
    return out
