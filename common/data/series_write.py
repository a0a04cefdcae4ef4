"""Write a volume as a DICOM CT or MR series, one single-frame file per slice, pseudonymous patient.

Each slice is a CT Image (PS3.3 A.3) or MR Image (A.4) with fresh UIDs, explicit VR little
endian, 16-bit MONOCHROME2 pixels and the Image Plane module (C.7.6.2): Image Orientation
(Patient) ``[1, 0, 0, 0, 1, 0]`` (rows along +x, columns along +y, LPS), Image Position
(Patient) stepping along the slice normal +z, Pixel Spacing, Slice Thickness and Spacing
Between Slices. :func:`~fedward.common.data.series.read_series` reads the files back as the
same array and spacing.

Pixel values (C.11.1 Modality LUT): integers that fit int16 (or, if non-negative, uint16)
are stored exactly (slope 1, intercept 0); anything else is quantised to int16 with one
Rescale Slope/Intercept for the whole volume (error at most half the slope). MR Image
objects do not list the Modality LUT module, but readers (pydicom, highdicom, ITK) apply
Rescale Slope/Intercept when present.

Patient and study attributes follow :mod:`fedward.simulation.dicom_export`: a synthetic
patient (``SYNTHETIC^<id>``), no birth date or sex, dated now (UTC). Nothing from a real
patient is written.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from fedward.common.data.series import LPS_TO_RAS
from fedward.common.errors import DataError

log = logging.getLogger(__name__)

IMAGE_STORAGE = {"CT": UID("1.2.840.10008.5.1.4.1.1.2"), "MR": UID("1.2.840.10008.5.1.4.1.1.4")}
"""SOP Class UID of CT Image Storage and MR Image Storage, by modality."""
ROW_COSINES = (1.0, 0.0, 0.0)
COLUMN_COSINES = (0.0, 1.0, 0.0)


def set_patient_study(ds: Dataset, *, patient_name: str, patient_id: str, institution: str) -> None:
    """Patient and General Study attributes of a synthetic patient, dated now (UTC); content date and time too.

    Shared by every fedward DICOM writer (PS3.3 C.7.1.1 Patient, C.7.2.1 General Study).

    Args:
        ds: the dataset to fill.
        patient_name: synthetic Patient's Name (PN, e.g. ``SYNTHETIC^H0^00001``).
        patient_id: synthetic Patient ID (a pseudonym, never a real identifier).
        institution: Institution Name (the hospital), may be empty.
    """
    now = datetime.now(UTC)
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.InstitutionName = institution


def add_file_meta(ds: Dataset, syntax: UID = ExplicitVRLittleEndian) -> None:
    """File Meta Information (PS3.10 7.1) for ``ds``, whose SOP Class and Instance UIDs are set."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID


def write_series(
    volume: np.ndarray,
    spacing: Sequence[float],
    out_dir: Path,
    *,
    patient_id: str,
    modality: str = "MR",
    patient_name: str | None = None,
    institution: str = "",
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_description: str = "",
) -> list[Path]:
    """Write ``volume`` as one DICOM file per slice, ``slice-NNNN.dcm``.

    Args:
        volume: (D, H, W) = (slice, row, column) values, float or integer (HU for CT).
        spacing: (slice step, row spacing, column spacing), mm, all positive.
        out_dir: folder to create (must not exist or be empty).
        patient_id: pseudonymous Patient ID.
        modality: ``MR`` or ``CT``.
        patient_name: synthetic Patient's Name (default ``SYNTHETIC^<patient_id>``).
        institution: Institution Name (the hospital).
        origin: Image Position (Patient) of the first slice, LPS mm.
        study_uid: Study Instance UID (default: a new one).
        series_uid: Series Instance UID (default: a new one).
        series_description: Series Description.

    Returns:
        The files, slice order.

    Raises:
        DataError: if the volume is not 3-D, holds non-finite values, the spacing or
            modality is invalid, or ``out_dir`` is not empty.
    """
    volume, spacing_mm = _checked(volume, spacing, modality)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DataError(f"{out_dir} is not empty; write a series into a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    stored, slope, intercept = _quantised(volume)
    template = Dataset()
    set_patient_study(
        template, patient_name=patient_name or f"SYNTHETIC^{patient_id}", patient_id=patient_id, institution=institution
    )
    template.StudyInstanceUID = study_uid or generate_uid()
    template.SeriesInstanceUID = series_uid or generate_uid()
    template.FrameOfReferenceUID = generate_uid()
    template.SeriesDescription = series_description
    _set_series_image(template, modality, spacing_mm, slope, intercept)
    template.PixelRepresentation = 1 if stored.dtype.kind == "i" else 0
    template.Rows, template.Columns = int(stored.shape[1]), int(stored.shape[2])
    paths = _write_slices(template, stored, spacing_mm[0], origin, out_dir)
    log.debug("wrote a %s series of %d slices", modality, len(paths))
    return paths


def _write_slices(
    template: Dataset, stored: np.ndarray, step: float, origin: Sequence[float], out_dir: Path
) -> list[Path]:
    """One file per plane of ``stored`` (D, H, W): ``template`` plus SOP Instance UID, number and position."""
    x, y = format_number_as_ds(float(origin[0])), format_number_as_ds(float(origin[1]))
    paths = []
    for k, plane in enumerate(stored):
        ds = copy.deepcopy(template)
        ds.SOPClassUID = IMAGE_STORAGE[str(template.Modality)]
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        z = format_number_as_ds(float(origin[2]) + k * step)
        ds.ImagePositionPatient = [x, y, z]
        ds.SliceLocation = z
        ds.PixelData = np.ascontiguousarray(plane).tobytes()
        add_file_meta(ds)
        path = out_dir / f"slice-{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _checked(volume: np.ndarray, spacing: Sequence[float], modality: str) -> tuple[np.ndarray, tuple[float, ...]]:
    array = np.asarray(volume)
    if array.ndim != 3 or 0 in array.shape:
        raise DataError(f"a series is written from a (D, H, W) volume; got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating) or array.dtype == bool):
        raise DataError(f"a series is written from integer or float values; got {array.dtype}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise DataError("the volume holds NaN or infinite values")
    spacing_mm = tuple(float(s) for s in spacing)
    if len(spacing_mm) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing_mm):
        raise DataError(f"spacing must be three positive numbers (mm, D, H, W order); got {tuple(spacing)}")
    if modality not in IMAGE_STORAGE:
        raise DataError(f"modality must be one of {', '.join(IMAGE_STORAGE)}; got {modality!r}")
    return array, spacing_mm


def _quantised(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Stored values (int16 or uint16, (D, H, W)) and the Rescale Slope and Intercept that give ``volume`` back."""
    low, high = float(volume.min()), float(volume.max())
    integral = volume.dtype.kind in "iub" or bool(np.array_equal(volume, np.round(volume)))
    if integral and low >= -32768 and high <= 32767:
        return volume.astype("<i2"), 1.0, 0.0
    if integral and low >= 0 and high <= 65535:
        return volume.astype("<u2"), 1.0, 0.0
    # DS values hold 16 characters: quantise with the slope and intercept exactly as they will be read.
    if low <= 0.0 <= high:  # keep 0 exactly 0 (background stays out of non-zero statistics such as MR z-scores)
        slope, intercept = float(format_number_as_ds(max(-low, high) / 32767.0 if high > low else 1.0)), 0.0
    else:
        slope = float(format_number_as_ds((high - low) / 65534.0 if high > low else 1.0))
        intercept = float(format_number_as_ds((high + low) / 2.0))
    stored = np.clip(np.round((volume.astype(np.float64) - intercept) / slope), -32768, 32767)
    return stored.astype("<i2"), slope, intercept


def _set_series_image(ds: Dataset, modality: str, spacing: tuple[float, ...], slope: float, intercept: float) -> None:
    """General Series, Equipment, Image Plane, Image Pixel, CT/MR Image and Modality LUT attributes of every slice."""
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.Manufacturer = "fedward"
    ds.PositionReferenceIndicator = ""
    ds.PatientOrientation = ""
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.ImageOrientationPatient = [*ROW_COSINES, *COLUMN_COSINES]
    ds.PixelSpacing = [format_number_as_ds(spacing[1]), format_number_as_ds(spacing[2])]
    ds.SliceThickness = ds.SpacingBetweenSlices = format_number_as_ds(spacing[0])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.RescaleSlope = format_number_as_ds(slope)
    ds.RescaleIntercept = format_number_as_ds(intercept)
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    if modality == "CT":
        ds.KVP = ""
        ds.AcquisitionNumber = ""
        ds.RescaleType = "HU"
    else:
        ds.ScanningSequence = ["RM"]  # research mode: not acquired by a scanner
        ds.SequenceVariant = ["NONE"]
        ds.ScanOptions = ""
        ds.MRAcquisitionType = ""
        ds.RepetitionTime = ds.EchoTime = ds.EchoTrainLength = ""


def volume_from_nifti(
    array: np.ndarray, affine: np.ndarray
) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float]]:
    """A NIfTI volume on the axes :func:`write_series` writes; undoes :func:`~fedward.common.data.series.nifti_layout`.

    The array is transposed and flipped (no resampling) so that its axes (D, H, W) run
    along +z (Superior), +y (Posterior) and +x (Left) of LPS, as the written Image
    Orientation (Patient) ``[1, 0, 0, 0, 1, 0]`` says. An oblique volume is put on the
    patient axes closest to its own: its obliquity is not kept.

    Args:
        array: (I, J, K) voxel values as nibabel gives them (``np.asanyarray(img.dataobj)``).
        affine: float (4, 4) voxel index to RAS mm (``img.affine``).

    Returns:
        The (D, H, W) volume (same dtype), its spacing (mm, D, H, W order) and the LPS
        position of its first voxel (mm): ``write_series(volume, spacing, ..., origin=origin)``.

    Raises:
        DataError: if ``array`` is not 3-D, or ``affine`` is not 4 x 4 with one array axis
            closest to each patient axis.
    """
    array = np.asarray(array)
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    nearest = np.argmax(np.abs(lps[:3, :3]), axis=0) if lps.shape == (4, 4) else np.zeros(3, int)
    if array.ndim != 3 or sorted(nearest.tolist()) != [0, 1, 2]:
        raise DataError(
            f"a NIfTI volume needs a 3-D array and an axis-aligned or mildly oblique affine; got {array.shape}"
        )
    source = [int(np.flatnonzero(nearest == world)[0]) for world in (2, 1, 0)]  # array axis along z, y, x
    signs = [float(np.sign(lps[world, axis])) for world, axis in zip((2, 1, 0), source, strict=True)]
    volume = array.transpose(source)
    first = np.zeros(4)
    first[3] = 1.0
    for out_axis, (axis, sign) in enumerate(zip(source, signs, strict=True)):
        if sign < 0:
            volume = np.flip(volume, axis=out_axis)
            first[axis] = array.shape[axis] - 1
    spacing = np.linalg.norm(lps[:3, source], axis=0)
    origin = lps @ first
    return (
        np.ascontiguousarray(volume),
        (float(spacing[0]), float(spacing[1]), float(spacing[2])),
        (float(origin[0]), float(origin[1]), float(origin[2])),
    )
