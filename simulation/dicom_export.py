"""Write a MedMNIST split as per-hospital DICOM folders, for demos and deployment tests.

Each image becomes a valid DICOM Secondary Capture Image (SOP Class
1.2.840.10008.5.1.4.1.1.7, PS3.3 A.8.1) with fresh UIDs and a synthetic patient
(``SYNTHETIC^<hospital>^<n>``); 8-bit MONOCHROME2 (or RGB) pixels carry a
LINEAR_EXACT window (center 127.5, width 255, PS3.3 C.11.2.1.3.2) that displays the
stored values unchanged, so a folder trains exactly like the ``.npz`` it came from.
Pixel data is written uncompressed, RLE Lossless or JPEG 2000 Lossless.

Folder layout: ``<out>/<hospital>/images/img-NNNNN.dcm`` and ``<out>/<hospital>/labels.csv``
(``path,label,split``), rows in the hospital's partition order.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from fedward.common.data.folder import MANIFEST
from fedward.common.data.npz import ArraySplit
from fedward.common.data.plan import PartitionPlan
from fedward.common.data.series_write import add_file_meta, set_patient_study
from fedward.common.errors import DataError
from fedward.common.schema import DatasetSchema

SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")


class Compression(StrEnum):
    """Transfer syntax of exported pixel data."""

    NONE = "none"
    RLE = "rle"
    JPEG2000 = "jpeg2000"


_SYNTAX = {Compression.RLE: RLELossless, Compression.JPEG2000: JPEG2000Lossless}
JPEG2000_MIN_SIZE = 32
"""openjpeg (via pylibjpeg) always codes 6 resolution levels, which needs images of >= 32 px."""


def secondary_capture(
    pixels: np.ndarray,
    *,
    patient_name: str,
    patient_id: str,
    institution: str,
    compression: Compression = Compression.NONE,
) -> Dataset:
    """A Secondary Capture Image holding ``pixels``.

    Args:
        pixels: uint8 (H, W) grayscale or (H, W, 3) RGB.
        patient_name: synthetic Patient's Name (PN, e.g. ``SYNTHETIC^H0^00001``).
        patient_id: synthetic Patient ID.
        institution: Institution Name (the hospital).
        compression: pixel data encoding.

    Returns:
        A dataset with File Meta, ready for ``save_as(..., enforce_file_format=True)``.

    Raises:
        DataError: if ``pixels`` is not uint8 of a supported shape.
    """
    if pixels.dtype != np.uint8 or not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] == 3)):
        raise DataError(f"exported images must be uint8 (H, W) or (H, W, 3); got {pixels.dtype} {pixels.shape}")
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    _set_patient_study_series(ds, patient_name, patient_id, institution)
    _set_image_pixel(ds, pixels)
    add_file_meta(ds)
    if compression is not Compression.NONE:
        ds.compress(_SYNTAX[compression], np.ascontiguousarray(pixels))
    return ds


def _set_patient_study_series(ds: Dataset, patient_name: str, patient_id: str, institution: str) -> None:
    """Patient, General Study, General Series, SC Equipment and General Image attributes (dated now, UTC)."""
    set_patient_study(ds, patient_name=patient_name, patient_id=patient_id, institution=institution)
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "NO"
    ds.ImageType = ["DERIVED", "SECONDARY"]


def _set_image_pixel(ds: Dataset, pixels: np.ndarray) -> None:
    """Image Pixel and VOI LUT attributes of uint8 ``pixels`` (H, W) or (H, W, 3), and the native Pixel Data."""
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    ds.PhotometricInterpretation = "RGB" if pixels.ndim == 3 else "MONOCHROME2"
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if pixels.ndim == 2:
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 127.5, 255, "LINEAR_EXACT"
    ds.LossyImageCompression = "00"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()


def export_folder(
    folder: Path,
    split: ArraySplit,
    rows: Sequence[tuple[int, str]],
    schema: DatasetSchema,
    hospital: str,
    compression: Compression = Compression.NONE,
) -> Path:
    """Write images of ``split`` as DICOM files plus ``labels.csv``.

    Args:
        folder: the hospital folder to create (must not exist or be empty).
        split: the source arrays.
        rows: ``(index into split, split name)`` per image, in the order to write.
        schema: the dataset's classes (labels are written as class names).
        hospital: hospital name (Institution Name, synthetic patient names).
        compression: pixel data encoding.

    Returns:
        The folder.

    Raises:
        DataError: if ``folder`` exists and is not empty, or JPEG 2000 is asked for images
            smaller than 32 px.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise DataError(f"{folder} is not empty; export into a new folder")
    if compression is Compression.JPEG2000 and min(split.images.shape[1:3]) < JPEG2000_MIN_SIZE:
        raise DataError(
            f"JPEG 2000 export needs images of at least {JPEG2000_MIN_SIZE} px (these are "
            f"{split.images.shape[1]} px): use --compression rle or none, or a larger MedMNIST size"
        )
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with open(folder / MANIFEST, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for number, (index, split_name) in enumerate(rows, start=1):
            relative = f"images/img-{number:05d}.dcm"
            patient_name, patient_id = synthetic_patient(hospital, number)
            ds = secondary_capture(
                split.images[index],
                patient_name=patient_name,
                patient_id=patient_id,
                institution=hospital,
                compression=compression,
            )
            ds.save_as(folder / relative, enforce_file_format=True)
            writer.writerow([relative, _label(split.labels[index], schema), split_name])
    return folder


def synthetic_patient(hospital: str, number: int) -> tuple[str, str]:
    """The pseudonymous Patient's Name and Patient ID of a hospital's ``number``-th exported case.

    ``("SYNTHETIC^HOSPITAL0^00001", "HOSPITAL0-00001")`` for ``("hospital-0", 1)``: derived
    from the hospital's name and the case's export order only, never from the source.
    """
    tag = hospital.upper().replace("-", "")
    return f"SYNTHETIC^{tag}^{number:05d}", f"{tag}-{number:05d}"


def _label(row: np.ndarray, schema: DatasetSchema) -> str:
    if row.shape[0] > 1:
        return "|".join(name for name, on in zip(schema.classes, row, strict=True) if on)
    return schema.classes[int(row[0])]


def export_plan(
    out: Path,
    splits: dict[str, ArraySplit],
    schema: DatasetSchema,
    plan: PartitionPlan,
    compression: Compression = Compression.NONE,
    include_test: bool = False,
) -> list[Path]:
    """Write one DICOM folder per planned hospital (train and val rows), optionally the test split.

    Returns:
        The hospital folders in plan order (then the ``test`` folder if written).
    """
    folders = []
    for hospital in plan.hospitals:
        rows = [(int(i), "train") for i in hospital.train] + [(int(i), "val") for i in hospital.val]
        folders.append(
            export_folder(Path(out) / hospital.name, splits["train"], rows, schema, hospital.name, compression)
        )
    if include_test and len(splits["test"]):
        rows = [(i, "test") for i in range(len(splits["test"]))]
        folders.append(export_folder(Path(out) / "test", splits["test"], rows, schema, "test", compression))
    return folders
