"""Read a folder of DICOM files as image volumes, one per series, in patient coordinates.

Standards: DICOM PS3.3 C.7.6.2 (Image Plane: Image Position/Orientation (Patient), Pixel
Spacing), C.11.1 (Modality LUT: Rescale Slope/Intercept, so CT values are HU) and C.8.20
(Segmentation, only to recognise and set DICOM SEG objects aside).

A *series* is every single-frame grayscale image file sharing a Series Instance UID. Its
slices are ordered by Image Position (Patient) projected on the slice normal
``n = row cosines x column cosines`` (ascending), and must be evenly spaced along ``n``
with no in-plane drift; orientation, Rows, Columns and Pixel Spacing must agree.

A series of **one** file is a 1-slice volume when that file has the Image Plane module (a
CT or MR slice): its slice step is *Spacing Between Slices*, else *Slice Thickness*, else
1 mm (nominal). Files without the Image Plane module (radiographs, secondary captures) and
multi-frame files are not volumes here.

Coordinates: :attr:`SeriesVolume.affine` maps array indices ``(d, h, w, 1)`` (slice, row,
column) to the DICOM patient coordinate system **LPS** (x to the patient's Left, y to
Posterior, z to Superior), mm, exactly as highdicom's ``Volume`` does; :func:`ras_affine`
and :func:`nifti_layout` give what nibabel expects (RAS).

Messages name files relative to the folder, never UIDs or other header values.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, pixel_array

from fedward.common.data.dicom import Reason, UnusableFileError, check_decoder, image_info, read_dicom, transfer_syntax
from fedward.common.data.files import is_raster
from fedward.common.data.folder import Problem
from fedward.common.errors import DataError

log = logging.getLogger(__name__)

SEG_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"})
"""Segmentation Storage and Label Map Segmentation Storage (PS3.4 B.5)."""
ORIENTATION_TOLERANCE = 1e-3
"""Largest difference between two slices' direction cosines still taken as the same orientation."""
SPACING_TOLERANCE = 0.01
"""Relative tolerance on Pixel Spacing and on each slice step (1 %)."""
STEP_TOLERANCE_MM = 0.01
"""Absolute tolerance on each slice step and on in-plane drift, mm (positions are rounded in headers)."""
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Flips x and y: DICOM LPS patient coordinates to the RAS coordinates of NIfTI and nibabel."""


@dataclass(frozen=True, slots=True, eq=False)
class SeriesVolume:
    """One DICOM series as a volume.

    Attributes:
        array: float32 (D, H, W) = (slice, row, column) modality values (Rescale Slope and
            Intercept applied: HU for CT).
        spacing: (slice step, row spacing, column spacing), mm, (D, H, W) order.
        affine: float64 (4, 4): index ``(d, h, w, 1)`` to LPS patient coordinates, mm.
        modality: DICOM Modality (``CT``, ``MR``...), ``""`` if absent.
        series_uid: Series Instance UID.
        sop_instance_uids: SOP Instance UID of each slice, slice order (length D).
        frame_of_reference_uid: Frame of Reference UID, ``""`` if absent.
        files: the file of each slice, slice order (length D).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    modality: str
    series_uid: str
    sop_instance_uids: tuple[str, ...]
    frame_of_reference_uid: str
    files: tuple[Path, ...]

    def slice_positions(self) -> np.ndarray:
        """float64 (D, 3): Image Position (Patient) of each slice, LPS mm."""
        index = np.zeros((self.array.shape[0], 4))
        index[:, 0] = np.arange(self.array.shape[0])
        index[:, 3] = 1.0
        return np.asarray((index @ self.affine.T)[:, :3], dtype=np.float64)

    def orientation(self) -> np.ndarray:
        """float64 (6,): Image Orientation (Patient), row then column direction cosines."""
        return np.concatenate([self.affine[:3, 2] / self.spacing[2], self.affine[:3, 1] / self.spacing[1]])


@dataclass(frozen=True, slots=True)
class SegFile:
    """A DICOM SEG found in a folder.

    Attributes:
        path: the file.
        referenced_series: Series Instance UIDs its Referenced Series Sequence names.
    """

    path: Path
    referenced_series: tuple[str, ...]


@dataclass(slots=True)
class SeriesScan:
    """A folder's DICOM files grouped by series, its SEGs, and what was set aside.

    Attributes:
        folder: the folder scanned.
        series: Series Instance UID -> image files (sorted by path), in order of first file.
        segs: DICOM SEG objects (sorted by path).
        problems: files that are neither series images nor SEGs, with reasons; SEGs that
            reference no series of the folder (``seg-references-other-series``).
    """

    folder: Path
    series: dict[str, list[Path]] = field(default_factory=dict)
    segs: list[SegFile] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def relative(self, path: Path) -> str:
        """``path`` relative to the folder (POSIX form), for messages."""
        return relative_name(path, self.folder)


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (POSIX form), else its file name: how messages name files."""
    try:
        return PurePosixPath(Path(path).relative_to(root)).as_posix()
    except ValueError:
        return Path(path).name


@contextmanager
def naming(relative: str) -> Iterator[None]:
    """Prefix the message of an :class:`UnusableFileError` raised inside with ``relative``."""
    try:
        yield
    except UnusableFileError as err:
        raise UnusableFileError(err.reason, f"{relative}: {err}") from None


def scan_series(folder: Path) -> SeriesScan:
    """Group every DICOM file below ``folder`` (recursively, headers only) by series.

    Hidden files and folders are skipped; PNG/JPEG, non-DICOM and non-image DICOM files
    (reports, RT objects, DICOMDIR) go to :attr:`SeriesScan.problems`.

    Raises:
        DataError: if ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data directory {folder} does not exist")
    scan = SeriesScan(folder)
    for path in sorted(folder.rglob("*")):
        relative = relative_name(path, folder)
        if not path.is_file() or any(part.startswith(".") for part in PurePosixPath(relative).parts):
            continue
        if is_raster(path):
            scan.problems.append(Problem(relative, Reason.NOT_DICOM, "PNG/JPEG file in a DICOM series folder; ignored"))
            continue
        try:
            ds = read_dicom(path, pixels=False)
        except UnusableFileError as err:
            scan.problems.append(Problem(relative, err.reason, str(err)))
            continue
        _file_into(scan, path, relative, ds)
    known = set(scan.series)
    for seg in scan.segs:
        if not known & set(seg.referenced_series):
            scan.problems.append(
                Problem(scan.relative(seg.path), Reason.SEG_OTHER_SERIES, "DICOM SEG of a series not in the folder")
            )
    log.debug("scanned %d series and %d SEG objects", len(scan.series), len(scan.segs))
    return scan


def _file_into(scan: SeriesScan, path: Path, relative: str, ds: Dataset) -> None:
    """Sort one file's header into the scan: a SEG, a series image or a problem."""
    if str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES or ds.get("Modality") == "SEG":
        refs = tuple(str(item.get("SeriesInstanceUID", "")) for item in ds.get("ReferencedSeriesSequence", []))
        scan.segs.append(SegFile(path, refs))
        return
    series_uid = str(ds.get("SeriesInstanceUID", ""))
    if "Rows" not in ds or "Columns" not in ds:
        scan.problems.append(Problem(relative, Reason.NO_PIXEL_DATA, "DICOM object without an image; ignored"))
    elif not series_uid:
        scan.problems.append(Problem(relative, Reason.UNSUPPORTED_IMAGE, "image without a Series Instance UID"))
    else:
        scan.series.setdefault(series_uid, []).append(path)


def read_series(files: Sequence[Path], *, root: Path | None = None) -> SeriesVolume:
    """Read the image files of one series as a volume (PS3.3 C.7.6.2, C.11.1).

    Args:
        files: the series' files, any order.
        root: folder that messages name files relative to (default: their common folder).

    Returns:
        The volume, slices ordered along the slice normal.

    Raises:
        DataError: if ``files`` is empty.
        UnusableFileError: ``inconsistent-slice-spacing`` for a missing slice, uneven steps or
            several images at one position (echoes, phases, a duplicated file);
            ``unsupported-image`` for files of several series, multi-frame or color
            files, files without the Image Plane module, or slices that disagree in
            orientation, size or pixel spacing, or drift in-plane (gantry tilt); any
            reason :func:`~fedward.common.data.dicom.read_dicom` gives, file named.
    """
    if not files:
        raise DataError("a series needs at least one file")
    paths = [Path(f) for f in files]
    base = Path(root) if root is not None else Path(os.path.commonpath([p.parent for p in paths]))
    names = [relative_name(p, base) for p in paths]
    datasets = []
    for path, name in zip(paths, names, strict=True):
        with naming(name):
            ds = read_dicom(path)
            _check_slice(ds)
        datasets.append(ds)
    _check_same_series(datasets, names)
    row, column, spacing = _plane(datasets, names)
    normal = np.cross(row, column)
    positions = np.array([_floats(ds, "ImagePositionPatient", 3) for ds in datasets])
    order = np.argsort(positions @ normal, kind="stable")
    step = _slice_step(positions[order], normal, [names[i] for i in order], datasets[0])
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = step * normal, spacing[0] * column, spacing[1] * row
    affine[:3, 3] = positions[order[0]]
    slices = []
    for i in order:
        with naming(names[i]):
            slices.append(modality_values(datasets[i]))
    first = datasets[0]
    log.debug("read a series of %d slices", len(order))
    return SeriesVolume(
        array=np.stack(slices),
        spacing=(float(step), float(spacing[0]), float(spacing[1])),
        affine=affine,
        modality=str(first.get("Modality", "")),
        series_uid=str(first.SeriesInstanceUID),
        sop_instance_uids=tuple(str(datasets[i].SOPInstanceUID) for i in order),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
        files=tuple(paths[i] for i in order),
    )


def _check_slice(ds: Dataset) -> None:
    """A single-frame grayscale image with the Image Plane module, or UNSUPPORTED_IMAGE."""
    info = image_info(ds)
    if info.frames != 1 or info.channels != 1:
        kind = "multi-frame" if info.frames != 1 else "color"
        raise UnusableFileError(Reason.UNSUPPORTED_IMAGE, f"{kind} image: a series is read from single-frame slices")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise UnusableFileError(
            Reason.NO_PIXEL_DATA, "no Pixel Data: the image attributes are there but the pixels are not"
        )
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if k not in ds]
    if missing:
        raise UnusableFileError(
            Reason.UNSUPPORTED_IMAGE, f"not a slice of a volume: no {', '.join(missing)} (Image Plane module)"
        )


def _check_same_series(datasets: list[Dataset], names: list[str]) -> None:
    first = datasets[0].get("SeriesInstanceUID")
    for ds, name in zip(datasets, names, strict=True):
        if ds.get("SeriesInstanceUID") != first:
            raise UnusableFileError(Reason.UNSUPPORTED_IMAGE, f"{name}: belongs to another series than {names[0]}")


def _floats(ds: Dataset, keyword: str, count: int) -> np.ndarray:
    try:
        values = np.array([float(v) for v in ds[keyword].value], dtype=np.float64)
    except (TypeError, ValueError, KeyError) as err:
        raise UnusableFileError(Reason.UNSUPPORTED_IMAGE, f"{keyword} is invalid ({type(err).__name__})") from None
    if values.shape != (count,) or not np.all(np.isfinite(values)):
        raise UnusableFileError(Reason.UNSUPPORTED_IMAGE, f"{keyword} must hold {count} numbers")
    return values


def _plane(datasets: list[Dataset], names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column direction cosines and Pixel Spacing (row, column) shared by every slice."""
    with naming(names[0]):
        orientation = _floats(datasets[0], "ImageOrientationPatient", 6)
        spacing = _floats(datasets[0], "PixelSpacing", 2)
    row, column = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(column) - 1) > 0.01 or abs(row @ column) > 0.01:
        raise UnusableFileError(Reason.UNSUPPORTED_IMAGE, f"{names[0]}: Image Orientation is not two unit vectors")
    if np.any(spacing <= 0):
        raise UnusableFileError(Reason.UNSUPPORTED_IMAGE, f"{names[0]}: Pixel Spacing must be positive")
    size = (int(datasets[0].Rows), int(datasets[0].Columns))
    for ds, name in zip(datasets[1:], names[1:], strict=True):
        with naming(name):
            if np.max(np.abs(_floats(ds, "ImageOrientationPatient", 6) - orientation)) > ORIENTATION_TOLERANCE:
                raise UnusableFileError(Reason.UNSUPPORTED_IMAGE, f"orientation differs from {names[0]}'s")
            if (int(ds.Rows), int(ds.Columns)) != size:
                raise UnusableFileError(Reason.UNSUPPORTED_IMAGE, f"Rows x Columns differ from {names[0]}'s")
            if np.max(np.abs(_floats(ds, "PixelSpacing", 2) / spacing - 1)) > SPACING_TOLERANCE:
                raise UnusableFileError(Reason.UNSUPPORTED_IMAGE, f"Pixel Spacing differs from {names[0]}'s")
    return row / np.linalg.norm(row), column / np.linalg.norm(column), spacing


def _slice_step(positions: np.ndarray, normal: np.ndarray, names: list[str], first: Dataset) -> float:
    """The even slice step along ``normal`` of sorted ``positions`` (D, 3), mm."""
    if len(positions) == 1:
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            value = first.get(keyword)
            if value is not None and value != "" and float(value) > 0:
                return float(value)
        return 1.0
    steps = np.diff(positions @ normal)
    typical = float(np.median(steps))
    tolerance = max(SPACING_TOLERANCE * typical, STEP_TOLERANCE_MM)
    duplicates = np.flatnonzero(steps <= STEP_TOLERANCE_MM)
    if duplicates.size:
        i = int(duplicates[0])
        raise UnusableFileError(
            Reason.SLICE_SPACING,
            f"{names[i]} and {names[i + 1]} lie at the same position "
            "(several echoes or phases in one series, or a duplicated file)",
        )
    worst = int(np.argmax(np.abs(steps - typical)))
    if abs(steps[worst] - typical) > tolerance:
        raise UnusableFileError(
            Reason.SLICE_SPACING,
            f"slice step {steps[worst]:.3f} mm between {names[worst]} and {names[worst + 1]} differs from the "
            f"series' usual {typical:.3f} mm (a missing slice?)",
        )
    mean = float((positions[-1] - positions[0]) @ normal) / (len(positions) - 1)
    offsets = positions - positions[0]
    drift = offsets - np.outer(offsets @ normal, normal)
    if np.max(np.linalg.norm(drift, axis=1)) > max(tolerance, ORIENTATION_TOLERANCE * float(offsets[-1] @ normal)):
        raise UnusableFileError(
            Reason.UNSUPPORTED_IMAGE, f"slices from {names[0]} drift in-plane (gantry tilt or sheared series)"
        )
    return mean


def modality_values(ds: Dataset) -> np.ndarray:
    """float32 (H, W) modality values of a single-frame image: Modality LUT or Rescale applied (HU for CT).

    Raises:
        UnusableFileError: ``unsupported-transfer-syntax``, ``truncated`` or ``corrupt-pixel-data``.
    """
    syntax = transfer_syntax(ds)
    check_decoder(syntax)
    try:
        stored = pixel_array(ds)
    except ValueError as err:
        truncated = "less than expected" in str(err) or "number of bytes" in str(err).lower()
        reason = Reason.TRUNCATED if truncated else Reason.CORRUPT_PIXEL_DATA
        raise UnusableFileError(reason, f"pixel data cannot be decoded ({type(err).__name__})") from None
    except (NotImplementedError, RuntimeError, OSError, IndexError, KeyError, TypeError) as err:
        raise UnusableFileError(
            Reason.CORRUPT_PIXEL_DATA, f"{syntax.name} pixel data cannot be decoded ({type(err).__name__})"
        ) from None
    return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)


def ras_affine(affine: np.ndarray) -> np.ndarray:
    """The same index-to-patient mapping in RAS (nibabel, NIfTI) instead of LPS (DICOM).

    Args:
        affine: float (4, 4) index to LPS mm, e.g. :attr:`SeriesVolume.affine`.

    Returns:
        float64 (4, 4) mapping the same array indices to RAS mm.
    """
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def nifti_layout(volume: SeriesVolume) -> tuple[np.ndarray, np.ndarray]:
    """The volume as NIfTI tools store it: ``nibabel.Nifti1Image(*nifti_layout(volume))``.

    Returns:
        float32 (W, H, D) array (x fastest, as ITK and most NIfTI files) and its float64
        (4, 4) RAS affine.
    """
    return volume.array.transpose(2, 1, 0), ras_affine(volume.affine[:, [2, 1, 0, 3]])
