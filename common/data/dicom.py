"""Decode DICOM images the way a viewer displays them, or say exactly why not.

Pipeline (DICOM PS3.3), per frame, with pydicom and its pylibjpeg / Pillow plugins
(JPEG baseline and lossless, JPEG-LS, JPEG 2000, RLE; big- and little-endian):

1. Stored values: :func:`pydicom.pixels.pixel_array` decodes the transfer syntax, honours
   *Bits Stored*, *Pixel Representation* and *Planar Configuration*, and converts
   YBR_FULL / YBR_FULL_422 to RGB (YBR_RCT / YBR_ICT are undone by the JPEG 2000 codec).
2. Grayscale (MONOCHROME1/2):

   * modality LUT — *Rescale Slope/Intercept* or a *Modality LUT Sequence* (C.11.1);
   * VOI LUT — a *VOI LUT Sequence*, else *Window Center/Width* with the *VOI LUT
     Function* LINEAR, LINEAR_EXACT or SIGMOID (C.11.2), first view when several are given;
     mapped to [0, 1] over the transform's nominal output range;
   * **fallback** when the file has neither: the frame's own minimum and maximum after the
     modality LUT map to 0 and 1 (min-max windowing);
   * MONOCHROME1 is inverted so that 1 is always white (C.7.6.3.1.2).

3. PALETTE COLOR: the palette (C.7.6.3.1.5) gives RGB, scaled by the LUT's bit depth.
4. RGB: scaled by ``2**BitsStored - 1``.

Frames: the middle frame of a multi-frame object, or every frame.

Nothing read from a header other than pixel geometry, modality and transfer syntax is
kept, logged or put in an error message: :class:`UnusableFileError` messages are safe to send to
a coordinator and to print in a hospital's report.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from fedward.common.choices import FrameMode
from fedward.common.errors import DataError

log = logging.getLogger(__name__)
# pydicom logs parser warnings with the file path; paths can carry patient names.
logging.getLogger("pydicom").setLevel(logging.ERROR)


class Reason(StrEnum):
    """Why a file cannot be used (stable codes for reports, metrics and tests)."""

    NOT_DICOM = "not-dicom"
    TRUNCATED = "truncated"
    NO_PIXEL_DATA = "no-pixel-data"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported-transfer-syntax"
    UNSUPPORTED_IMAGE = "unsupported-image"
    CORRUPT_PIXEL_DATA = "corrupt-pixel-data"
    UNREADABLE = "unreadable"
    NOT_IMAGE = "not-an-image"
    LABEL_UNKNOWN = "label-unknown"
    BAD_MANIFEST_ROW = "bad-manifest-row"
    MISSING_FILE = "manifest-row-without-file"
    NOT_IN_MANIFEST = "file-without-manifest-row"
    MASK_MISSING = "mask-missing"
    """A segmentation image without its mask (or label volume)."""
    MASK_MISMATCH = "mask-geometry-mismatch"
    """A mask whose size, spacing, orientation or origin differs from its image's."""
    LABEL_OUT_OF_RANGE = "label-value-out-of-range"
    """A mask holding a value that is not one of the declared labels."""
    SLICE_SPACING = "inconsistent-slice-spacing"
    """A DICOM series whose slices are not evenly spaced (a missing or duplicated slice)."""
    SEG_OTHER_SERIES = "seg-references-other-series"
    """A DICOM SEG whose referenced series is not in the folder."""
    MODALITY_MISMATCH = "modality-mismatch"
    """An image whose modality, channels or dimensionality do not fit the model or federation
    (:mod:`fedward.common.data.modality`); a warning unless ``--strict``."""


class UnusableFileError(DataError):
    """A file that cannot be used, with a stable :class:`Reason` and a one-line explanation."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What a report may say about an image (no patient data).

    Attributes:
        rows: image height in pixels.
        columns: image width in pixels.
        frames: number of frames.
        channels: 1 (grayscale) or 3 (color) after decoding.
        modality: DICOM Modality (``CR``, ``CT``...) or ``""`` (other images).
        transfer_syntax: transfer syntax name, or the file format for non-DICOM images.
    """

    rows: int
    columns: int
    frames: int
    channels: int
    modality: str
    transfer_syntax: str


_PARSE_ERRORS = (ValueError, IndexError, KeyError, EOFError, OverflowError, TypeError, AttributeError)


def read_dicom(path: Path, *, pixels: bool = True) -> Dataset:
    """Read a DICOM file, recovering files that lack the File Meta header.

    Args:
        path: the file.
        pixels: also read Pixel Data (``False`` reads headers only, fast).

    Raises:
        UnusableFileError: ``not-dicom``, ``truncated`` or ``unreadable``.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds: Dataset
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
            except InvalidDicomError:
                ds = _read_without_meta(path, pixels)
    except OSError as err:
        raise UnusableFileError(Reason.UNREADABLE, f"cannot be read ({err.strerror or type(err).__name__})") from None
    except _PARSE_ERRORS as err:
        raise UnusableFileError(
            Reason.TRUNCATED, f"truncated or corrupt: the header cannot be parsed ({type(err).__name__})"
        ) from None
    if any("end of file" in str(w.message).lower() for w in caught) or _short_elements(ds):
        raise UnusableFileError(Reason.TRUNCATED, "truncated: the file ends inside a data element")
    return ds


def _read_without_meta(path: Path, pixels: bool) -> Dataset:
    """Old archives hold datasets without preamble and File Meta; accept them if they are images."""
    ds = pydicom.dcmread(path, force=True, stop_before_pixels=not pixels)
    plausible = "SOPClassUID" in ds or ("Rows" in ds and "Columns" in ds)
    if not plausible:
        raise UnusableFileError(Reason.NOT_DICOM, "not a DICOM file (no DICM prefix and no DICOM image header)")
    implicit, little = ds.original_encoding
    if not ds.file_meta or "TransferSyntaxUID" not in ds.file_meta:
        syntax = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
    return ds


def _short_elements(ds: Dataset) -> bool:
    """Whether an element (still raw) holds fewer bytes than its header declares."""
    for element in ds._dict.values():
        if (
            isinstance(element, RawDataElement)
            and element.value is not None
            and element.length != 0xFFFFFFFF
            and len(element.value) < element.length
        ):
            return True
    return False


def transfer_syntax(ds: Dataset) -> UID:
    """The dataset's transfer syntax (Implicit VR Little Endian when undeclared)."""
    meta = getattr(ds, "file_meta", None)
    return UID(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else ImplicitVRLittleEndian


def image_info(ds: Dataset) -> ImageInfo:
    """Geometry, modality and transfer syntax of a DICOM image.

    Raises:
        UnusableFileError: ``no-pixel-data`` if the dataset holds no image.
    """
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")) and "Rows" not in ds:
        raise UnusableFileError(Reason.NO_PIXEL_DATA, "no Pixel Data: not an image object")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        photometric = str(ds.get("PhotometricInterpretation", ""))
        channels = 3 if int(ds.get("SamplesPerPixel", 1)) == 3 or photometric == "PALETTE COLOR" else 1
        return ImageInfo(
            int(ds.Rows), int(ds.Columns), frames, channels, str(ds.get("Modality", "")), transfer_syntax(ds).name
        )
    except _PARSE_ERRORS as err:
        raise UnusableFileError(
            Reason.UNSUPPORTED_IMAGE, f"image attributes are missing or invalid ({type(err).__name__})"
        ) from None


def decode_dicom(ds: Dataset, frames: FrameMode = FrameMode.MIDDLE) -> np.ndarray:
    """Display values of a DICOM image.

    Args:
        ds: a dataset read with pixels (:func:`read_dicom`).
        frames: the middle frame, or every frame.

    Returns:
        float32 in [0, 1] of shape (F, H, W) (grayscale) or (F, H, W, 3) (color); F = 1 for
        single-frame images and for ``FrameMode.MIDDLE``.

    Raises:
        UnusableFileError: ``no-pixel-data``, ``unsupported-transfer-syntax``, ``truncated``,
            ``corrupt-pixel-data`` or ``unsupported-image``.
    """
    info = image_info(ds)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise UnusableFileError(
            Reason.NO_PIXEL_DATA, "no Pixel Data: the image attributes are there but the pixels are not"
        )
    syntax = transfer_syntax(ds)
    check_decoder(syntax)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    index = info.frames // 2 if (frames is FrameMode.MIDDLE and info.frames > 1) else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored = pixel_array(ds, index=index)
    except ValueError as err:
        if "less than expected" in str(err) or "number of bytes" in str(err).lower():
            raise UnusableFileError(
                Reason.TRUNCATED, "truncated: the Pixel Data is shorter than the image needs"
            ) from None
        raise UnusableFileError(
            Reason.CORRUPT_PIXEL_DATA, f"pixel data cannot be decoded ({type(err).__name__})"
        ) from None
    except (NotImplementedError, RuntimeError, OSError, IndexError, KeyError, TypeError) as err:
        raise UnusableFileError(
            Reason.CORRUPT_PIXEL_DATA, f"{syntax.name} pixel data cannot be decoded ({type(err).__name__})"
        ) from None
    multi = info.frames > 1 and index is None
    stack = stored if multi else stored[None]
    try:
        return np.stack([_display(frame, ds, photometric) for frame in stack]).astype(np.float32)
    except _PARSE_ERRORS as err:
        raise UnusableFileError(Reason.UNSUPPORTED_IMAGE, f"display transforms failed ({type(err).__name__})") from None


def check_decoder(syntax: UID) -> None:
    if not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise UnusableFileError(
            Reason.UNSUPPORTED_TRANSFER_SYNTAX, f"unsupported transfer syntax {syntax.name} ({syntax})"
        ) from None
    if not decoder.is_available:
        raise UnusableFileError(
            Reason.UNSUPPORTED_TRANSFER_SYNTAX,
            f"transfer syntax {syntax.name} ({syntax}) needs a decoder plugin that is not installed",
        )


def _display(frame: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    """One frame's stored values to display values in [0, 1]."""
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        return _grayscale(frame, ds, invert=photometric == "MONOCHROME1")
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, _little_endian_palette(ds)).astype(np.float64)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        top = float(2 ** (16 if bits not in (8, 16) else bits) - 1)
        return np.clip(rgb / top, 0.0, 1.0)
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"):
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise UnusableFileError(Reason.UNSUPPORTED_IMAGE, f"{photometric} image does not have 3 samples per pixel")
        top = float(2 ** int(ds.BitsStored) - 1)
        return np.clip(frame.astype(np.float64) / top, 0.0, 1.0)
    raise UnusableFileError(Reason.UNSUPPORTED_IMAGE, f"photometric interpretation {photometric} is not supported")


def _little_endian_palette(ds: Dataset) -> Dataset:
    """Work around pydicom 3.0 reading non-segmented palette LUT data as little-endian.

    For a big-endian dataset, returns a small dataset holding copies of the palette
    elements with the OW LUT words byte-swapped, which
    :func:`pydicom.pixels.apply_color_lut` then reads correctly; ``ds`` is not modified.
    Segmented palettes are read with the right byte order by pydicom and pass through.
    """
    if ds.original_encoding[1] is not False or "RedPaletteColorLookupTableData" not in ds:
        return ds
    fixed = Dataset()
    for element in ds:
        if "PaletteColorLookupTable" in element.keyword or element.keyword in (
            "PhotometricInterpretation",
            "BitsStored",
        ):
            fixed.add(copy.deepcopy(element))
    for color in ("Red", "Green", "Blue", "Alpha"):
        keyword = f"{color}PaletteColorLookupTableData"
        if keyword in fixed and len(fixed[keyword].value) % 2 == 0:
            fixed[keyword].value = np.frombuffer(fixed[keyword].value, dtype=">u2").astype("<u2").tobytes()
    return fixed


def _grayscale(frame: np.ndarray, ds: Dataset, invert: bool) -> np.ndarray:
    modality = apply_modality_lut(frame, ds)
    values = modality.astype(np.float64)
    low, high = _voi_range(ds)
    if low is not None and high is not None:
        try:  # a VOI LUT indexes with the modality LUT's own (integer) output
            values = apply_voi_lut(modality, ds).astype(np.float64)
        except ValueError:  # e.g. a window width below 1: fall back to the frame's range
            low, high = None, None
    if low is None or high is None:
        low, high = float(values.min()), float(values.max())
    span = high - low
    out = np.zeros_like(values) if span <= 0 else np.clip((values - low) / span, 0.0, 1.0)
    return 1.0 - out if invert else out


def _voi_range(ds: Dataset) -> tuple[float | None, float | None]:
    """Nominal output range of the VOI transform the file asks for; (None, None) if none.

    Mirrors pydicom's ``apply_voi_lut``: a VOI LUT Sequence outputs [0, 2**n - 1] with n
    its descriptor's bit depth; windowing outputs the range of the modality LUT's output.
    """
    sequence = ds.get("VOILUTSequence")
    if sequence:
        descriptor = sequence[0].get("LUTDescriptor")
        if descriptor is not None and "LUTData" in sequence[0]:
            return 0.0, float(2 ** int(descriptor[2]) - 1)
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None, None
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.BitsStored)
    low, high = (
        (0.0, float(2**bits - 1)) if int(ds.PixelRepresentation) == 0 else (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)
    )
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return low, high
