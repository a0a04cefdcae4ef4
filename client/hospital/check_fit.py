"""The federation's schema that ``fedward client check-data`` compares files with, and what does not fit it.

The schema (modality, channels, 2D or 3D) is known when the config declares one
(``data.task``/``classes``/``channels``, ``data.modality``, ``data.volume-size``) or the
data set is catalogued (pneumoniamnist: DX, 1 channel, 2D); a declaration without a
modality takes the catalog's.

Files are compared with the modality guard's rules
(:func:`~fedward.common.data.modality.input_mismatches`), from headers only: a DICOM
file's Modality and channels, a PNG/JPEG's channels, a ``.npz`` array's channels, a folder
data set's modality (``dataset.json``, its series' headers) and dimensions. Modality ``OT``
("other": Secondary Capture, what ``fedward data export`` writes) is not compared, as a
file without a header is not.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

from fedward.common.config import RunConfig
from fedward.common.data.catalog import lookup
from fedward.common.data.dicom import ImageInfo
from fedward.common.data.folder import Problem
from fedward.common.data.modality import InputKind, header_modality, input_mismatches
from fedward.common.schema import DatasetSchema

log = logging.getLogger(__name__)

FOLDER = "."
"""The file a whole folder data set's mismatch is reported under."""


def federation_schema(dataset: str | None, cfg: RunConfig | None) -> DatasetSchema | None:
    """The federation's schema when something says it (see the module docstring), else ``None``."""
    name = dataset or (cfg.data.dataset if cfg is not None else None)
    entry = lookup(name) if name else None
    declared = cfg.data.declared_schema() if cfg is not None else None
    if declared is not None:
        if declared.modality is None and entry is not None:
            return dataclasses.replace(declared, modality=entry.modality)
        return declared
    if entry is None:
        return None
    return DatasetSchema(entry.task, entry.classes, entry.channels, 2, entry.modality)


def file_mismatches(schema: DatasetSchema, info: ImageInfo) -> list[str]:
    """Why an image file (its header) does not fit the federation's 2D schema; ``[]`` when it fits."""
    return input_mismatches(schema, InputKind(header_modality(info.modality), info.channels, 2))


def dataset_mismatches(schema: DatasetSchema, found: DatasetSchema) -> list[str]:
    """Why a folder data set (the schema its reader found) does not fit the federation's; ``[]`` when it fits."""
    modality = header_modality(found.modality.value) if found.modality is not None else ""
    return input_mismatches(schema, InputKind(modality, found.channels, found.spatial_dims))


def npz_mismatches(schema: DatasetSchema, channels: int) -> list[str]:
    """Why a ``.npz`` split's images (no header: their channels, 2D) do not fit; ``[]`` when they fit."""
    return input_mismatches(schema, InputKind("", channels, 2))


def log_mismatches(found: list[Problem], strict: bool) -> None:
    """One warning for all the ``modality-mismatch`` entries of a check (counts and reasons; no file names)."""
    if not found:
        return
    reasons = Counter(p.message for p in found)
    log.warning(
        "%d files or splits do not fit the federation's images (%s): %s",
        len(found),
        "unusable with --strict" if strict else "warnings",
        " | ".join(f"{reason} ({count})" for reason, count in reasons.most_common(5)),
    )
