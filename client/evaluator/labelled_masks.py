"""Labelled segmentation data to evaluate a model on: a mask or Decathlon folder read as training reads it, one split.

Data (``--data``) is read by :func:`~fedward.common.data.sources.read_folder_dataset` with
the model's own data settings (image size, volume size, spacing, intensity, CT window),
always as label maps (``data.target = mask``), without the prepared-data cache. Images
and label maps arrive on the model's grid (:class:`~fedward.common.data.masksplit.MaskSplit`).

The split evaluated is the requested one when the folder's ``splits.csv`` assigns it;
without ``splits.csv`` every case is evaluated (split ``all``).

The folder's modality (its ``dataset.json``, or its DICOM series' headers) and channels are
checked against the model's schema once (the modality guard): a data set of another kind
is evaluated with a warning, or with ``strict`` refused as a whole
(:class:`~fedward.common.data.modality.ModalityMismatchError`, exit code 2).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from fedward.client.evaluator.input_kind import check_input, schema_modality
from fedward.client.evaluator.model_dir import ModelDir
from fedward.common.choices import TargetKind, Task
from fedward.common.data.dicom import Reason
from fedward.common.data.folder import Problem
from fedward.common.data.maskscan import SPLITS_FILE
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.modality import InputKind
from fedward.common.data.npz import SPLITS
from fedward.common.data.segdata import concat_mask_splits
from fedward.common.data.sources import read_folder_dataset
from fedward.common.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LabelledMasks:
    """Images and label maps ready for a segmentation model.

    Attributes:
        source: what was read (the folder and its split).
        split: the split evaluated (``test``, ``val``...) or ``all`` (folder without splits).
        masks: images float32 (N, C, *S), label maps uint8 (N, *S) and spacing (N, dims)
            on the model's grid.
        problems: cases or files that were skipped, with reasons.
        warnings: why the data set may not fit the model (reason ``modality-mismatch``,
            file ``.``: the whole folder).
    """

    source: str
    split: str
    masks: MaskSplit
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def load_labelled_masks(data: Path, model_dir: ModelDir, split: str = "test", *, strict: bool = False) -> LabelledMasks:
    """Read a mask folder (BUSI layout) or a Decathlon folder for a segmentation model.

    Args:
        data: the folder.
        model_dir: the model (schema and data settings).
        split: the split to evaluate.
        strict: refuse a data set of another modality or channels instead of warning.

    Raises:
        DataError: if the folder is missing or of neither layout, its labels or dimensions
            differ from the model's, the split is not assigned, or no case is usable.
        ModalityMismatchError: with ``strict``, a data set of another modality or channels.
    """
    data = Path(data)
    if split not in SPLITS:
        raise DataError(f"--split must be one of {', '.join(SPLITS)}; got {split!r}")
    if not data.is_dir():
        raise DataError(f"--data {data} does not exist or is not a folder")
    settings = dataclasses.replace(model_dir.cfg.data, target=TargetKind.MASK)
    read = read_folder_dataset(data, settings, cache_root=None)
    schema = model_dir.schema
    found = read.schema
    if found.task is not Task.SEGMENTATION or found.spatial_dims != schema.spatial_dims:
        raise DataError(
            f"{data} holds {found.spatial_dims}D {found.task.value} data; the model segments "
            f"{schema.spatial_dims}D {'volumes' if schema.spatial_dims == 3 else 'images'}"
        )
    if [c.lower() for c in found.classes] != [c.lower() for c in schema.classes]:
        raise DataError(f"{data} labels {', '.join(found.classes)}; the model's labels are {', '.join(schema.classes)}")
    kind = InputKind(schema_modality(found.modality), found.channels, found.spatial_dims)
    warning = check_input(schema, kind, str(data), strict=strict)
    warnings = [Problem(".", Reason.MODALITY_MISMATCH, warning)] if warning else []
    splits = {name: part for name, part in read.splits.items() if isinstance(part, MaskSplit)}
    if split in splits:
        chosen, used = splits[split], split
    elif not (data / SPLITS_FILE).is_file() and splits:
        chosen, used = concat_mask_splits(list(splits.values())), "all"
    else:
        raise DataError(f"{data}: {SPLITS_FILE} assigns no usable case to split {split!r}")
    log.info("evaluating %d cases (split %s); %d skipped", len(chosen), used, len(read.problems))
    return LabelledMasks(f"{data} (split {used})", used, chosen, list(read.problems), warnings)
