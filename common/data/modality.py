"""The modality guard: whether an input image fits the model in modality, channels and dimensions.

A model is trained on one kind of image (its schema records the DICOM modality, the
channels and 2D or 3D). Shown another kind — a colour ultrasound to a chest X-ray
classifier, a CT slice to an MR hippocampus model — it still answers, confidently and
wrongly. :func:`input_mismatches` lists what does not fit; ``fedward predict``,
``fedward model evaluate`` and ``fedward client check-data`` warn with these reasons, and
with ``--strict`` refuse the input (:class:`ModalityMismatchError`).

What is compared:

* **modality**: the DICOM header's Modality (0008,0060) against the schema's; CR and DX
  count as one kind (radiography). Files without a header (PNG, JPEG, NIfTI) and schemas
  without a modality are not compared (nothing says what they are);
* **channels**: 1 (grey) or 3 (colour) after decoding, against the schema's;
* **dimensions**: a 2D image against a 3D model, or a volume against a 2D model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fedward.common.choices import RADIOGRAPHY, Modality
from fedward.common.errors import DataError
from fedward.common.schema import DatasetSchema

log = logging.getLogger(__name__)


class ModalityMismatchError(DataError):
    """An input that does not fit the model, refused under ``--strict``."""


@dataclass(frozen=True, slots=True)
class InputKind:
    """What an input image is, as far as its file says (no pixel values, no patient data).

    Attributes:
        modality: the DICOM Modality (``"US"``, ``"CR"``...), or ``""`` when the file has no header.
        channels: 1 (grey) or 3 (colour) after decoding.
        spatial_dims: 2 for an image, 3 for a volume.
    """

    modality: str
    channels: int
    spatial_dims: int


def header_modality(modality: str) -> str:
    """A header's Modality as the guard compares it: upper case; ``""`` for none and for ``OT``.

    ``OT`` ("other") says nothing about the image: Secondary Capture objects carry it,
    including the ones ``fedward data export`` writes of MedMNIST images.
    """
    value = modality.strip().upper()
    return "" if value == Modality.OT.value else value


def same_modality(trained: Modality, seen: str) -> bool:
    """Whether a header's Modality names the kind of image a model was trained on (CR = DX)."""
    if seen.upper() == trained.value:
        return True
    return trained in RADIOGRAPHY and seen.upper() in {m.value for m in RADIOGRAPHY}


def input_mismatches(schema: DatasetSchema, kind: InputKind) -> list[str]:
    """Every way ``kind`` does not fit a model of ``schema``, one line each ([] when it fits).

    Args:
        schema: the model's schema (modality, channels, dimensions).
        kind: the input's modality, channels and dimensions.

    Returns:
        Reasons such as ``"modality US, but the model was trained on DX images"``.
    """
    reasons: list[str] = []
    trained = schema.modality
    if (
        trained is not None
        and trained is not Modality.OT
        and kind.modality
        and not same_modality(trained, kind.modality)
    ):
        reasons.append(f"modality {kind.modality}, but the model was trained on {trained.value} images")
    if kind.channels != schema.channels:
        reasons.append(
            f"{_channels(kind.channels)} image, but the model was trained on {_channels(schema.channels)} ones"
        )
    if kind.spatial_dims != schema.spatial_dims:
        reasons.append(
            f"{kind.spatial_dims}D input, but the model takes {schema.spatial_dims}D "
            f"{'volumes' if schema.spatial_dims == 3 else 'images'}"
        )
    return reasons


def guard_input(schema: DatasetSchema, kind: InputKind, where: str, *, strict: bool) -> list[str]:
    """Warn about (or, with ``strict``, refuse) an input that does not fit the model.

    Args:
        schema: the model's schema.
        kind: the input's modality, channels and dimensions.
        where: the input, as the user named it (a file or folder on their machine).
        strict: refuse instead of warning.

    Returns:
        The reasons (also logged as a warning); ``[]`` when the input fits.

    Raises:
        ModalityMismatchError: with ``strict``, when anything does not fit.
    """
    reasons = input_mismatches(schema, kind)
    if reasons and strict:
        raise ModalityMismatchError(f"{where}: {'; '.join(reasons)} (--strict)")
    for reason in reasons:
        log.warning("%s: %s; its result may be meaningless", where, reason)
    return reasons


def _channels(channels: int) -> str:
    return "colour" if channels == 3 else "grey" if channels == 1 else f"{channels}-channel"
