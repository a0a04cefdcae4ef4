"""Write each planned hospital's share of an image + mask folder (BUSI) as its own image + mask folder.

Per hospital, the layout :mod:`fedward.common.data.maskfolder` reads::

    <out>/<hospital>/<class>/case-NNNNN.png          a copy of the source image (byte for byte)
    <out>/<hospital>/<class>/case-NNNNN_mask.png     a copy of its first mask
    <out>/<hospital>/<class>/case-NNNNN_mask_1.png   of its second mask, and so on
    <out>/<hospital>/splits.csv                      image, masks, label, split: the plan's train
                                                     rows (plan order), then its val rows
    <out>/<hospital>/dataset.json                    {"modality": ...} when the data set has one

The files are copied, not decoded or resized, so a hospital reading its folder with the
run's data settings (``data.image-size``, ``data.target``...) gets exactly the arrays the
simulated hospital got from the plan: the same training cases in the same order and, as
``splits.csv`` names them, the plan's validation cases (no hold-out is re-drawn).

**Names.** Cases are renumbered in export order (``case-00001``...): the source's file
names may carry patient identifiers (BUSI's do not, but other image + mask folders may), and
renumbered folders can be shared for demos. The class sub-folder keeps the class name (a
class name with a path separator goes to the folder root; ``splits.csv`` holds the label).
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from fedward.common.config import RunConfig
from fedward.common.data.decathlon import DATASET_FILE
from fedward.common.data.folder import label_index
from fedward.common.data.maskfolder import FolderRead
from fedward.common.data.maskscan import MASK_SEPARATOR, SPLITS_FILE, MaskCase, scan_mask_folder
from fedward.common.data.opening import OpenedDataset
from fedward.common.data.plan import PartitionPlan
from fedward.common.errors import DataError
from fedward.common.schema import DatasetSchema
from fedward.simulation.seg_export import ExportedFolder, check_out_folder, planned_rows, source_read

log = logging.getLogger(__name__)

COLUMNS = ("image", "masks", "label", "split")


def export_mask_folders(
    out: Path, found: OpenedDataset, cfg: RunConfig, plan: PartitionPlan, include_test: bool = False
) -> list[ExportedFolder]:
    """Write one image + mask folder per planned hospital (module docstring), optionally the test split.

    Args:
        out: the folder to create the hospital folders in.
        found: the source folder as the run opened it.
        cfg: the run's config (its data section reads the source as the simulation did).
        plan: the hospitals' rows of the source's ``train`` split.
        include_test: also write the source's ``test`` cases to ``<out>/test`` (split ``test``).

    Returns:
        The folders written, plan order (then ``test``).

    Raises:
        DataError: if a hospital folder exists and is not empty, or the source cannot be
            read as the plan read it.
    """
    read = source_read(found, cfg)
    cases = split_cases(found.path, read)
    written = []
    for hospital in plan.hospitals:
        rows = [(cases["train"][index], split) for index, split in planned_rows(hospital)]
        written.append(write_mask_folder(Path(out) / hospital.name, found.path, rows, read.schema))
    if include_test and cases.get("test"):
        rows = [(case, "test") for case in cases["test"]]
        written.append(write_mask_folder(Path(out) / "test", found.path, rows, read.schema))
    return written


def split_cases(folder: Path, read: FolderRead) -> dict[str, list[MaskCase]]:
    """The case of every row of ``read``'s splits, row order.

    The mask folder reader keeps the cases of :func:`~fedward.common.data.maskfolder.scan_mask_folder`
    in scan order, less those it reports as problems (the image or one of its masks named);
    each split's row count and strata (class of each row) are checked against ``read``.

    Raises:
        DataError: if the cases found do not match ``read``'s rows (the folder changed).
    """
    bad = {problem.file for problem in read.problems}
    cases: dict[str, list[MaskCase]] = {}
    for case in scan_mask_folder(folder).cases:
        if case.image not in bad and not bad.intersection(case.masks):
            cases.setdefault(case.split or "train", []).append(case)
    for split, arrays in read.splits.items():
        found = cases.get(split, [])
        strata = [label_index(case.label, read.strata) if read.strata else 0 for case in found]
        if strata != arrays.labels[:, 0].tolist():
            raise DataError(f"{folder.name}: the {split} cases no longer match the data set read; export again")
    return cases


def write_mask_folder(
    folder: Path, source: Path, rows: Sequence[tuple[MaskCase, str]], schema: DatasetSchema
) -> ExportedFolder:
    """Copy ``rows``' images and masks into ``folder`` with ``splits.csv`` (and ``dataset.json``).

    Args:
        folder: the folder to create (must not exist or be empty).
        source: the source mask folder.
        rows: each case with the split it gets, in the order to write.
        schema: the source's schema (its modality, when known, goes to ``dataset.json``).

    Returns:
        The folder with its image and mask counts.

    Raises:
        DataError: if ``folder`` exists and is not empty.
    """
    folder = check_out_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    masks = 0
    for number, (case, split) in enumerate(rows, start=1):
        image, copied = _copy_case(source, case, folder, f"case-{number:05d}")
        masks += len(copied)
        lines.append({"image": image, "masks": MASK_SEPARATOR.join(copied), "label": case.label, "split": split})
    with open(folder / SPLITS_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(lines)
    if schema.modality is not None:
        (folder / DATASET_FILE).write_text(json.dumps({"modality": schema.modality.value}), encoding="utf-8")
    splits = Counter(split for _, split in rows)
    log.info("mask folder written: %d images, %d masks", len(rows), masks)
    return ExportedFolder(folder, {"images": len(rows), "masks": masks}, dict(splits))


def _copy_case(source: Path, case: MaskCase, folder: Path, stem: str) -> tuple[str, list[str]]:
    """Copy one case's image and masks as ``<class>/<stem>.<ext>``, ``<stem>_mask[_n].<ext>``; their new names."""
    parent = PurePosixPath(_class_folder(case.label))
    image = (parent / f"{stem}{_suffix(case.image)}").as_posix()
    masks = [
        (parent / f"{stem}_mask{'' if k == 0 else f'_{k}'}{_suffix(mask)}").as_posix()
        for k, mask in enumerate(case.masks)
    ]
    (folder / parent).mkdir(parents=True, exist_ok=True)
    for old, new in zip((case.image, *case.masks), (image, *masks), strict=True):
        shutil.copyfile(source / old, folder / new)
    return image, masks


def _class_folder(label: str) -> str:
    """The sub-folder of a class: its name, or ``.`` when it has none or it is not a plain folder name."""
    plain = label and label not in (".", "..") and not any(sep in label for sep in "/\\")
    return label if plain else "."


def _suffix(relative: str) -> str:
    return PurePosixPath(relative).suffix.lower()
