"""Medical Segmentation Decathlon folders (NIfTI volumes and label maps) read into 3D segmentation splits.

Layout (Antonelli et al., "The Medical Segmentation Decathlon", Nature Communications 13,
4128, 2022)::

    <folder>/dataset.json            name, modality {"0": "MRI"}, labels {"0": "background", ...},
                                     training [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}]
    <folder>/imagesTr/<case>.nii.gz  one 3D volume per case
    <folder>/labelsTr/<case>.nii.gz  its label map: integers 0..K-1 on the image's grid
    <folder>/splits.csv              optional: case, split (case = file name without .nii.gz)

Cases absent from ``splits.csv`` (or all of them without the file) go to ``train``.

Each case is preprocessed by :func:`~fedward.common.data.volumeprep.preprocess_volume`
(orientation to RAS, optional resampling to ``spacing`` mm, intensity normalisation, padding
or cropping to the grid), exactly as DICOM series are (:mod:`fedward.common.data.seriesfolder`).
Without ``volume_size`` the grid is found from the folder's own cases: deployments set
``data.volume-size`` so that every hospital of a federation uses the federation's grid.

**Axis convention** (that of :mod:`fedward.common.data.volumeprep`): arrays are in RAS
voxel order, axes called (D, H, W); ``data.volume-size`` and ``data.spacing`` are given, and
spacings are reported, in this order.
"""

from __future__ import annotations

import csv
import gzip
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import SpatialImage

from fedward.common.choices import DEFAULT_CT_WINDOW, Intensity, Modality, Task
from fedward.common.data.dicom import Reason
from fedward.common.data.folder import SPLIT_NAMES, Problem, SkippedCaseError, _safe_relative, log_read
from fedward.common.data.maskfolder import FolderRead
from fedward.common.data.maskscan import SPLITS_FILE
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.npz import ArraySplit
from fedward.common.data.volumeprep import GRID_MULTIPLE as GRID_MULTIPLE
from fedward.common.data.volumeprep import RAS_LABELS as RAS_LABELS
from fedward.common.data.volumeprep import PreparedVolume, prepare_cases, preprocess_volume, volume_settings
from fedward.common.errors import DataError
from fedward.common.fileio import CHUNK_BYTES, read_json_object
from fedward.common.schema import DatasetSchema

log = logging.getLogger(__name__)

DATASET_FILE = "dataset.json"
LABEL_TOLERANCE = 1e-3
"""Largest distance of a stored label value from an integer (scaled NIfTI data) still read as that integer."""
GZIP_MAGIC = b"\x1f\x8b"
MR_NAMES = frozenset({"MRI", "MR", "T1", "T1W", "T1GD", "T2", "T2W", "FLAIR", "ADC", "DWI"})
"""Decathlon modality names that are magnetic resonance sequences."""


@dataclass(frozen=True, slots=True)
class DecathlonCase:
    """One training pair of ``dataset.json``.

    Attributes:
        case: the image's file name without ``.nii.gz``.
        image: the volume, relative to the folder (POSIX form).
        label: its label map, relative path.
        split: ``train``, ``val`` or ``test``.
    """

    case: str
    image: str
    label: str
    split: str


@dataclass(frozen=True, slots=True)
class DecathlonIndex:
    """What ``dataset.json`` and ``splits.csv`` say, before any volume is read.

    Attributes:
        modality: the volumes' modality (MRI and its sequences: MR).
        classes: label names lower-cased, index order (0 the background).
        cases: the training pairs with their splits.
        problems: entries that cannot be used.
    """

    modality: Modality
    classes: tuple[str, ...]
    cases: list[DecathlonCase]
    problems: list[Problem]


def parse_modality(value: object) -> Modality:
    """The modality a ``dataset.json`` names: ``"CT"``, ``{"0": "MRI"}``, ``"US"``...

    MRI and MR sequence names (T1, T2, FLAIR, ADC...) give MR; DICOM modality codes give
    themselves; anything else gives OT.

    Raises:
        DataError: if the value names several channels (multi-modal tasks are not supported)
            or is neither a string nor a one-entry object.
    """
    if isinstance(value, dict):
        if len(value) != 1:
            message = f"modality names {len(value)} channels; fedward reads single-channel volumes"
            raise DataError(f"{DATASET_FILE}: {message}")
        value = next(iter(value.values()))
    if not isinstance(value, str):
        raise DataError(f'{DATASET_FILE}: modality must be a name or {{"0": name}}; got {type(value).__name__}')
    name = value.strip().upper()
    if name in MR_NAMES:
        return Modality.MR
    return Modality(name) if name in Modality.__members__ else Modality.OT


def read_decathlon_index(folder: Path) -> DecathlonIndex:
    """Parse ``dataset.json`` and the optional ``splits.csv``; no volume is read.

    Raises:
        DataError: if ``dataset.json`` is missing or unreadable, or lacks ``modality``,
            ``labels`` (keys 0..K-1, K >= 2) or ``training``, or ``splits.csv`` lacks the
            ``case`` and ``split`` columns.
    """
    folder = Path(folder)
    path = folder / DATASET_FILE
    try:
        spec = read_json_object(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{path} cannot be read as a Decathlon dataset.json ({type(err).__name__})") from None
    missing = [key for key in ("modality", "labels", "training") if key not in spec]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}")
    classes = _classes(spec["labels"], path)
    if not isinstance(spec["training"], list):
        raise DataError(f"{path}: training must be a list of {{image, label}} objects")
    splits, problems = _read_splits(folder)
    cases: list[DecathlonCase] = []
    for number, entry in enumerate(spec["training"]):
        where = f"{DATASET_FILE}:training[{number}]"
        pair = [_safe_relative(entry.get(key) or "") if isinstance(entry, dict) else None for key in ("image", "label")]
        if pair[0] is None or pair[1] is None:
            problems.append(Problem(where, Reason.BAD_MANIFEST_ROW, "needs image and label paths inside the folder"))
            continue
        case = _case_name(pair[0])
        split = splits.pop(case, "train")
        if split:
            cases.append(DecathlonCase(case, pair[0], pair[1], split))
    problems += [
        Problem(f"{SPLITS_FILE}:{case}", Reason.MISSING_FILE, f"case not in {DATASET_FILE}") for case in sorted(splits)
    ]
    return DecathlonIndex(parse_modality(spec["modality"]), classes, cases, problems)


def _classes(labels: Any, path: Path) -> tuple[str, ...]:
    try:
        by_index = {int(key): str(name).strip().lower() for key, name in dict(labels).items()}
    except (TypeError, ValueError):
        raise DataError(f'{path}: labels must map indices to names, {{"0": "background", "1": ...}}') from None
    if sorted(by_index) != list(range(len(by_index))) or len(by_index) < 2:
        raise DataError(f"{path}: labels must be numbered 0..K-1 with K >= 2; got {sorted(by_index)}")
    return tuple(by_index[i] for i in range(len(by_index)))


def _read_splits(folder: Path) -> tuple[dict[str, str], list[Problem]]:
    """Case to split from ``splits.csv`` (``""`` for a bad row: the case is skipped)."""
    path = folder / SPLITS_FILE
    if not path.is_file():
        return {}, []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {c.strip().lower(): c for c in reader.fieldnames or []}
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path} cannot be read ({type(err).__name__})") from None
    if not {"case", "split"} <= set(columns):
        raise DataError(f"{path} needs the columns case and split; found: {', '.join(columns) or 'no header'}")
    splits: dict[str, str] = {}
    problems: list[Problem] = []
    for number, row in enumerate(rows, start=2):
        case = (row.get(columns["case"]) or "").strip()
        split = SPLIT_NAMES.get((row.get(columns["split"]) or "").strip().lower(), "")
        if not split:
            problems.append(Problem(f"{SPLITS_FILE}:{number}", Reason.BAD_MANIFEST_ROW, "split must be train/val/test"))
        splits[_case_name(case)] = split
    return splits, problems


def _case_name(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_decathlon(
    folder: Path,
    *,
    volume_size: Sequence[int] = (),
    spacing: Sequence[float] = (),
    intensity: Intensity = Intensity.AUTO,
    ct_window: Sequence[float] = DEFAULT_CT_WINDOW,
) -> FolderRead:
    """Read a Decathlon folder as 3D segmentation splits (see the module docstring).

    Args:
        folder: the folder holding ``dataset.json``.
        volume_size: the grid (D, H, W) in voxels; empty: the largest extent of the usable
            cases after resampling, per axis, rounded up to a multiple of 16 (a hospital of a
            federation must be given the federation's grid instead).
        spacing: voxel spacing (mm) along (D, H, W) to resample to; empty keeps each
            volume's own spacing.
        intensity: normalisation (``auto``: by the data set's modality).
        ct_window: (low, high) Hounsfield units for ``ct-window``.

    Returns:
        Schema (segmentation, the label names lower-cased, 1 channel, 3 spatial dims, the
        modality) and one :class:`~fedward.common.data.masksplit.MaskSplit` per split:
        images float32 (N, 1, D, H, W), masks uint8 (N, D, H, W), labels int64 zeros (N, 1),
        spacing float64 (N, 3) in mm of the final grid; ``cases`` names each split's rows
        (case names, row order: a skipped case shifts the rows after it). Skipped cases are
        problems: a missing image (``manifest-row-without-file``) or label map
        (``mask-missing``), a label map of another shape or affine (``mask-geometry-mismatch``),
        label values outside the declared labels (``label-value-out-of-range``), an
        unreadable NIfTI (``not-an-image``, ``truncated``, ``unreadable``, ``unsupported-image``).

    Raises:
        DataError: if the index cannot be read, or ``volume_size`` or ``spacing`` is not
            three positive numbers.
        NoUsableCaseError: if no case is usable.
    """
    folder = Path(folder)
    index = read_decathlon_index(folder)
    settings = volume_settings(volume_size, spacing, intensity, ct_window, index.modality)
    problems = list(index.problems)

    def prepare(case: DecathlonCase) -> PreparedVolume:
        image, affine, label = _read_case(folder, case, len(index.classes))
        return preprocess_volume(image, affine, label, settings)

    rows = [(case.split, case.case, case) for case in index.cases]
    splits, cases = prepare_cases(folder, rows, prepare, problems, settings.volume_size)
    log_read(log, "decathlon folder", splits, problems)
    schema = DatasetSchema(Task.SEGMENTATION, index.classes, 1, 3, index.modality)
    return FolderRead(schema, dict[str, MaskSplit | ArraySplit](splits), problems, cases=cases)


def _read_case(folder: Path, case: DecathlonCase, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One case's voxels, affine and label map as stored, once their files, grids and label values agree."""
    if not (folder / case.image).is_file():
        message = f"listed in {DATASET_FILE} but not in the folder"
        raise SkippedCaseError(Problem(case.image, Reason.MISSING_FILE, message))
    if not (folder / case.label).is_file():
        raise SkippedCaseError(Problem(case.label, Reason.MASK_MISSING, f"label map of {case.case} is missing"))
    image, image_affine = _load(folder, case.image)
    label, label_affine = _load(folder, case.label)
    if image.shape != label.shape or not np.allclose(image_affine, label_affine, atol=1e-3):
        message = f"label map {label.shape} does not share the grid (shape, affine) of its image {image.shape}"
        raise SkippedCaseError(Problem(case.label, Reason.MASK_MISMATCH, message))
    values = np.unique(label)
    bad = values[(values < 0) | (values > num_classes - 1) | ~(np.abs(values - np.round(values)) <= LABEL_TOLERANCE)]
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in bad[:10])
        message = f"label values {shown} are not among the declared labels 0..{num_classes - 1}"
        raise SkippedCaseError(Problem(case.label, Reason.LABEL_OUT_OF_RANGE, message))
    return image, image_affine, label


def _load(folder: Path, relative: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 (X, Y, Z) voxels and the 4x4 affine of one NIfTI file."""
    try:
        volume = nib.load(folder / relative)
        if not isinstance(volume, SpatialImage) or volume.affine is None:
            raise ImageFileError("not a spatial image")
        voxels = np.asarray(volume.get_fdata(dtype=np.float32))
        affine = np.asarray(volume.affine, dtype=np.float64)
    except ImageFileError:
        if _gzip_cut_short(folder / relative):
            raise SkippedCaseError(Problem(relative, Reason.TRUNCATED, "truncated NIfTI file")) from None
        raise SkippedCaseError(Problem(relative, Reason.NOT_IMAGE, "not a NIfTI file")) from None
    except (EOFError, zlib.error):
        raise SkippedCaseError(Problem(relative, Reason.TRUNCATED, "truncated NIfTI file")) from None
    except (OSError, ValueError, MemoryError) as err:
        message = f"cannot be read ({type(err).__name__})"
        raise SkippedCaseError(Problem(relative, Reason.UNREADABLE, message)) from None
    if voxels.ndim == 4 and voxels.shape[3] == 1:
        voxels = voxels[..., 0]
    if voxels.ndim != 3:
        message = f"a {voxels.ndim}D NIfTI; fedward reads single-channel 3D volumes"
        raise SkippedCaseError(Problem(relative, Reason.UNSUPPORTED_IMAGE, message))
    return voxels, affine


def _gzip_cut_short(path: Path) -> bool:
    """Whether ``path`` is a gzip stream that ends before its end-of-stream marker (a cut-short download)."""
    try:
        with open(path, "rb") as raw:
            if raw.read(2) != GZIP_MAGIC:
                return False
        with gzip.open(path, "rb") as stream:
            while stream.read(CHUNK_BYTES):
                pass
    except EOFError:
        return True
    except (OSError, zlib.error):
        return False
    return False
