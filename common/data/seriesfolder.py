"""DICOM series with their DICOM SEG label maps (a PACS export) read into 3D segmentation training cases.

Layout: any folder tree of DICOM files (one folder per series, or several series mixed in
one folder), grouped by Series Instance UID with
:func:`~fedward.common.data.series.scan_series`, plus DICOM SEG objects (PS3.3 A.51,
C.8.20) each referencing the series it segments. A PACS export carries no split: every
case is a training case and the caller holds out validation.

Per series with exactly one SEG, the volume (:func:`~fedward.common.data.series.read_series`,
PS3.3 C.7.6.2 and C.11.1: HU for CT) and its label map
(:func:`~fedward.common.data.seg.read_seg`) are put in nibabel's voxel order with a RAS
affine (:func:`~fedward.common.data.series.nifti_layout`) and preprocessed by
:func:`~fedward.common.data.volumeprep.preprocess_volume`, exactly as a Decathlon NIfTI
case: a NIfTI volume exported to DICOM and read back gives the same arrays.

**Label names** are given (the federation's ``data.classes``), else read from the SEGs:
segment number ``n`` is label ``n``, named by the Segment Label most SEGs give it; numbers
that fewer than half of the SEGs use are left out (so one SEG with stray segments does not
widen the data set's labels), ``"background"`` is label 0.

**Grid.** Without ``volume_size`` the grid is the hospital's own largest extent (see
:mod:`fedward.common.data.volumeprep`): a hospital of a federation must be given the
federation's ``data.volume-size``.

Messages name files relative to the folder, never UIDs or other header values.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from fedward.common.choices import DEFAULT_CT_WINDOW, Intensity, Modality, Task
from fedward.common.data.decathlon import parse_modality
from fedward.common.data.dicom import Reason, UnusableFileError, read_dicom
from fedward.common.data.files import is_raster
from fedward.common.data.folder import Problem, SkippedCaseError, log_read
from fedward.common.data.maskfolder import FolderRead
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.npz import ArraySplit
from fedward.common.data.seg import find_seg_for, read_seg
from fedward.common.data.series import (
    SEG_SOP_CLASSES,
    SeriesScan,
    nifti_layout,
    read_series,
    relative_name,
    scan_series,
)
from fedward.common.data.volumeprep import (
    NoUsableCaseError,
    PreparedVolume,
    VolumeSettings,
    prepare_cases,
    preprocess_volume,
    volume_settings,
)
from fedward.common.errors import DataError
from fedward.common.schema import DatasetSchema

log = logging.getLogger(__name__)

BACKGROUND = "background"
_META_ERRORS = (InvalidDicomError, OSError, ValueError, EOFError, KeyError, IndexError, TypeError, AttributeError)


@dataclass(frozen=True, slots=True)
class SeriesCase:
    """A series and the one DICOM SEG that segments it.

    Attributes:
        name: how reports name the series: its folder relative to the data set folder, or
            its first file when the folder holds other series too (POSIX form).
        files: the series' files.
        seg: the SEG file.
    """

    name: str
    files: tuple[Path, ...]
    seg: Path


def holds_dicom_seg(folder: Path) -> bool:
    """Whether any (non-hidden) file below ``folder`` is a DICOM SEG; reads File Meta Information only (PS3.10 7.1)."""
    folder = Path(folder)
    for path in folder.rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(folder).parts) or not path.is_file():
            continue
        if is_raster(path):
            continue
        try:
            meta = read_file_meta_info(path)
        except _META_ERRORS:
            continue
        if str(meta.get("MediaStorageSOPClassUID", "")) in SEG_SOP_CLASSES:
            return True
    return False


def read_series_folder(
    folder: Path,
    *,
    label_names: Sequence[str] | None = None,
    volume_size: Sequence[int] = (),
    spacing: Sequence[float] = (),
    intensity: Intensity = Intensity.AUTO,
    ct_window: Sequence[float] = DEFAULT_CT_WINDOW,
) -> FolderRead:
    """Read DICOM series and their SEGs as a 3D segmentation training split (module docstring).

    Args:
        folder: the folder (searched recursively).
        label_names: the label names, index 0 the background; ``None``: from the SEGs.
        volume_size: the grid (D, H, W) in voxels; empty: the data set's largest extent,
            rounded up to a multiple of 16 (deployments give the federation's grid).
        spacing: voxel spacing (mm) along (D, H, W) to resample to; empty keeps each series'.
        intensity: normalisation (``auto``: CT window for CT, z-score otherwise).
        ct_window: (low, high) Hounsfield units for ``ct-window``.

    Returns:
        Schema (segmentation, the label names lower-cased, 1 channel, 3 spatial dims, the
        most common Modality of the series' headers) and ``{"train": MaskSplit}``: images
        float32 (N, 1, D, H, W), masks uint8 (N, D, H, W), labels int64 zeros (N, 1),
        spacing float64 (N, 3) mm. Skipped, as problems (file relative to ``folder``): a
        series without SEG (``mask-missing``) or with several (``unsupported-image``), a SEG
        of a series not in the folder (``seg-references-other-series``), a missing or
        duplicated slice (``inconsistent-slice-spacing``), a SEG whose frames do not fit the
        series (``mask-geometry-mismatch``), a segment matching no label
        (``label-value-out-of-range``), files that are not DICOM images or cannot be decoded.

    Raises:
        DataError: if the folder is missing, ``label_names`` has fewer than two names, no
            SEG names its segments, or ``volume_size``/``spacing`` is not three positive numbers.
        NoUsableCaseError: if no series can be used.
    """
    folder = Path(folder)
    scan = scan_series(folder)
    cases, problems = series_cases(scan)
    problems = [*scan.problems, *problems]
    if not cases:
        raise NoUsableCaseError(folder, problems)
    names = _given_names(label_names) if label_names is not None else seg_label_names(scan)
    modality = _modality(cases)
    settings = volume_settings(volume_size, spacing, intensity, ct_window, modality)

    def prepare(case: SeriesCase) -> PreparedVolume:
        return _read_case(folder, case, names, settings)

    rows = [("train", case.name, case) for case in cases]
    volumes, _ = prepare_cases(folder, rows, prepare, problems, settings.volume_size)
    splits: dict[str, MaskSplit | ArraySplit] = dict(volumes)
    log_read(log, "DICOM series folder", splits, problems)
    return FolderRead(DatasetSchema(Task.SEGMENTATION, names, 1, 3, modality), splits, problems)


def series_cases(scan: SeriesScan) -> tuple[list[SeriesCase], list[Problem]]:
    """Pair every series of ``scan`` with its one SEG.

    Returns:
        The pairs, in order of the series' first file, and a problem per series without a
        SEG (``mask-missing``) or with several (``unsupported-image``).
    """
    folders = Counter(_common_parent(files) for files in scan.series.values())
    cases: list[SeriesCase] = []
    problems: list[Problem] = []
    for uid, files in scan.series.items():
        parent = _common_parent(files)
        name = scan.relative(parent) if folders[parent] == 1 and parent != scan.folder else scan.relative(files[0])
        segs = find_seg_for(scan, uid)
        if not segs:
            problems.append(Problem(name, Reason.MASK_MISSING, "no DICOM SEG in the folder references this series"))
        elif len(segs) > 1:
            listed = ", ".join(scan.relative(seg) for seg in segs)
            message = f"{len(segs)} DICOM SEGs reference this series ({listed}); keep one"
            problems.append(Problem(name, Reason.UNSUPPORTED_IMAGE, message))
        else:
            cases.append(SeriesCase(name, tuple(files), segs[0]))
    return cases, problems


def _common_parent(files: Sequence[Path]) -> Path:
    return Path(os.path.commonpath([Path(path).parent for path in files]))


def seg_label_names(scan: SeriesScan) -> tuple[str, ...]:
    """The data set's label names from the Segment Sequence of its SEGs (module docstring), lower-cased.

    Only SEGs referencing a series of the folder vote. Returns ``("background", ...)``.

    Raises:
        DataError: if no such SEG has a segment.
    """
    votes: dict[int, Counter[str]] = {}
    voters = 0
    for seg in scan.segs:
        if not set(seg.referenced_series) & set(scan.series):
            continue
        try:
            ds = read_dicom(seg.path, pixels=False)
        except UnusableFileError:
            continue
        voters += 1
        for item in ds.get("SegmentSequence", []):
            number = int(item.get("SegmentNumber", 0) or 0)
            if number >= 1:
                votes.setdefault(number, Counter())[str(item.get("SegmentLabel", "")).strip().lower()] += 1
    kept = [number for number, counts in votes.items() if 2 * sum(counts.values()) >= voters]
    if not kept:
        raise DataError(f"{scan.folder}: no DICOM SEG names its segments; declare the label names (data.classes)")
    labels = [votes[n].most_common(1)[0][0] if n in votes else "" for n in range(1, max(kept) + 1)]
    return (BACKGROUND, *(label or f"segment {n}" for n, label in enumerate(labels, start=1)))


def _given_names(label_names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(name.strip().lower() for name in label_names)
    if len(names) < 2:
        raise DataError(f"a segmentation needs at least two label names (background first); got {len(names)}")
    return names


def _modality(cases: list[SeriesCase]) -> Modality:
    """The most common Modality (0008,0060) of the series' first files (MR, CT...; OT when none)."""
    seen: Counter[Modality] = Counter()
    for case in cases:
        try:
            seen[parse_modality(str(read_dicom(case.files[0], pixels=False).get("Modality", "")))] += 1
        except UnusableFileError:
            continue
    if len(seen) > 1:
        listing = ", ".join(f"{m.value} {n}" for m, n in seen.most_common())
        log.warning("series of several modalities (%s); all are normalised as the most common", listing)
    return seen.most_common(1)[0][0] if seen else Modality.OT


def _read_case(folder: Path, case: SeriesCase, names: tuple[str, ...], settings: VolumeSettings) -> PreparedVolume:
    """One series and its label map, preprocessed; a file that cannot be used is a skipped case."""
    try:
        volume = read_series(case.files, root=folder)
    except UnusableFileError as err:
        raise SkippedCaseError(Problem(case.name, err.reason, str(err))) from None
    try:
        label = read_seg(case.seg, volume, names, root=folder)
    except UnusableFileError as err:
        raise SkippedCaseError(Problem(relative_name(case.seg, folder), err.reason, str(err))) from None
    array, affine = nifti_layout(volume)
    return preprocess_volume(array, affine, label.transpose(2, 1, 0), settings)
