"""What kind of image each evaluator input is, read from its header, and the modality guard's verdict on it.

``fedward predict`` and ``fedward model evaluate`` call the guard
(:func:`~fedward.common.data.modality.guard_input`) once per input with the
:class:`~fedward.common.data.modality.InputKind` read here, without decoding pixels:

* DICOM: the header's Modality and Samples per Pixel / Photometric Interpretation
  (:func:`~fedward.common.data.files.probe`); 2D (a multi-frame object is read as its
  middle frame);
* PNG / JPEG: channels from the image mode, no modality; 2D;
* NIfTI: no modality, one channel, 3D (2D when the third axis has a single slice);
* a DICOM series: the first slice's Modality and channels; 3D.

Modality ``OT`` ("other", what Secondary Capture objects such as ``fedward data export``'s
files carry) says no more than a PNG does, so it is not compared. A header that cannot be
read gives no kind: the decoder then reports why the input cannot be used.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
from nibabel.filebasedimages import ImageFileError

from fedward.common.choices import Modality
from fedward.common.data.dicom import UnusableFileError, image_info, read_dicom
from fedward.common.data.files import probe
from fedward.common.data.modality import InputKind, ModalityMismatchError, guard_input, header_modality
from fedward.common.schema import DatasetSchema

log = logging.getLogger(__name__)

NIFTI_ENDINGS = (".nii.gz", ".nii")


def schema_modality(modality: Modality | None) -> str:
    """A data set's modality as an input's (``""`` when unknown or ``OT``)."""
    return header_modality(modality.value) if modality is not None else ""


def file_kind(path: Path) -> InputKind | None:
    """The kind of a DICOM, PNG/JPEG or NIfTI file, from its header; ``None`` if the header cannot be read."""
    path = Path(path)
    if path.name.lower().endswith(NIFTI_ENDINGS):
        return nifti_kind(path)
    try:
        info = probe(path)
    except UnusableFileError:
        return None
    return InputKind(header_modality(info.modality), info.channels, 2)


def nifti_kind(path: Path) -> InputKind | None:
    """A NIfTI file's kind from its header (no voxels read); ``None`` if it is not a readable NIfTI file."""
    try:
        shape = tuple(int(n) for n in nib.load(Path(path)).shape)  # type: ignore[attr-defined]
    except (ImageFileError, OSError, ValueError, EOFError, AttributeError, zlib.error):
        return None
    channels = shape[3] if len(shape) == 4 else 1
    dims = 3 if len(shape) >= 3 and shape[2] > 1 else 2
    return InputKind("", channels, dims)


def series_kind(files: Sequence[Path]) -> InputKind | None:
    """A DICOM series' kind: its first slice's Modality and channels, 3D; ``None`` if that header cannot be read."""
    if not files:
        return None
    try:
        info = image_info(read_dicom(Path(files[0]), pixels=False))
    except UnusableFileError:
        return None
    return InputKind(header_modality(info.modality), info.channels, 3)


def check_input(schema: DatasetSchema, kind: InputKind | None, where: str, *, strict: bool) -> str | None:
    """The guard's warning for one input (``None`` when it fits or its kind is unknown).

    Args:
        schema: the model's schema.
        kind: the input's kind (``None``: unknown, not compared).
        where: the input as the user named it (logged with the warning).
        strict: refuse instead of warning.

    Returns:
        The reasons joined by ``"; "``, e.g. ``"modality US, but the model was trained on DX
        images; colour image, but the model was trained on grey ones"``.

    Raises:
        ModalityMismatchError: with ``strict``, when the input does not fit.
    """
    if kind is None:
        return None
    return "; ".join(guard_input(schema, kind, where, strict=strict)) or None


def refusal(err: ModalityMismatchError, where: str) -> str:
    """A strict refusal's message without the input's name (the report's row already names it)."""
    return str(err).removeprefix(f"{where}: ")
