"""Labelled images to evaluate a model on: a MedMNIST ``.npz`` split or a hospital folder, read as training reads them.

Data (``--data``) is read with fedward's own readers:

* a MedMNIST-layout ``.npz`` (or a folder holding exactly one): its ``test`` (or ``val``)
  split, exactly as the server's test evaluation reads it;
* a hospital image folder (``labels.csv`` or class sub-folders; DICOM, PNG, JPEG): the
  rows of the requested split when the manifest assigns splits, else every image. Files
  that do not decode are skipped and listed, as in training.

Labels must be the model's classes and images its channels; the images are resized to
the model's input size.

A folder's images are checked against the model's schema from their headers (the modality
guard; :mod:`fedward.client.evaluator.input_kind`): an image of another modality or channels
is evaluated and listed as a warning (``modality-mismatch``), or with ``strict`` left out
and listed with the skipped files (per-file exclusion, like an undecodable file). A
``.npz`` has no header: its channels must already be the model's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedward.client.evaluator.input_kind import file_kind
from fedward.client.evaluator.model_dir import ModelDir
from fedward.common.choices import Task
from fedward.common.data.cache import DecodeCache
from fedward.common.data.dicom import Reason
from fedward.common.data.folder import (
    FolderScan,
    Problem,
    Sample,
    is_image_folder,
    label_index,
    multi_hot,
    scan_folder,
)
from fedward.common.data.images import ImageDataset, make_dataset
from fedward.common.data.load import decode_scan, unknown_labels
from fedward.common.data.modality import ModalityMismatchError, input_mismatches
from fedward.common.data.npz import SPLITS, ArraySplit, read_npz
from fedward.common.errors import DataError
from fedward.common.schema import DatasetSchema

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LabelledData:
    """Labelled images ready for the model.

    Attributes:
        source: what was read (file and split, or folder and layout).
        split: the split evaluated (``test``, ``val``...) or ``all`` (folder without splits).
        dataset: uint8 images (N, C, S, S) and their labels.
        problems: files or manifest rows that were skipped.
        warnings: images evaluated although they may not fit the model (reason
            ``modality-mismatch``).
    """

    source: str
    split: str
    dataset: ImageDataset
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def load_labelled(data: Path, model_dir: ModelDir, split: str = "test", *, strict: bool = False) -> LabelledData:
    """Read labelled images for a model: a MedMNIST ``.npz`` or a hospital folder.

    Args:
        data: an ``.npz`` file, a folder holding one, or a hospital image folder.
        model_dir: the model (schema, image size, frames).
        split: the split to evaluate (``test`` or ``val``; ``train`` is allowed).
        strict: leave out a folder's images of another modality or channels (listed with
            the skipped files) instead of evaluating them with a warning.

    Raises:
        DataError: if the data is missing, unreadable, has labels outside the model's
            classes or images of other channels, or holds no usable image.
        ModalityMismatchError: with ``strict``, when no image of the folder fits the model.
    """
    data = Path(data)
    if split not in SPLITS:
        raise DataError(f"--split must be one of {', '.join(SPLITS)}; got {split!r}")
    if data.is_file():
        return _from_npz(data, model_dir, split)
    if not data.is_dir():
        raise DataError(f"--data {data} does not exist")
    if is_image_folder(data):
        return _from_folder(data, model_dir, split, strict)
    files = sorted(data.glob("*.npz"))
    if len(files) != 1:
        raise DataError(f"{data} holds neither labels.csv, class sub-folders nor exactly one .npz file")
    return _from_npz(files[0], model_dir, split)


def _from_npz(path: Path, model_dir: ModelDir, split: str) -> LabelledData:
    if path.suffix.lower() != ".npz":
        raise DataError(f"--data {path}: give a MedMNIST-layout .npz file or a hospital folder")
    arrays = read_npz(path, [split])[split]
    if len(arrays) == 0:
        raise DataError(f"{path.name} has no {split} images")
    _check_fits(path, split, arrays, model_dir)
    dataset = make_dataset(arrays, model_dir.schema, model_dir.cfg.data.image_size)
    return LabelledData(f"{path} ({split} split)", split, dataset)


def _check_fits(path: Path, split: str, arrays: ArraySplit, model_dir: ModelDir) -> None:
    schema = model_dir.schema
    channels = 3 if arrays.images.ndim == 4 else 1
    if channels != schema.channels:
        raise DataError(f"{path.name}: {split} images have {channels} channel(s); the model takes {schema.channels}")
    if schema.task is Task.MULTILABEL:
        if arrays.labels.shape[1] != len(schema.classes):
            raise DataError(
                f"{path.name}: {arrays.labels.shape[1]} labels per image; the model has {len(schema.classes)}"
            )
    elif arrays.labels.shape[1] != 1 or int(arrays.labels.max()) >= len(schema.classes):
        raise DataError(
            f"{path.name}: {split}_labels are not class indices of the model's {len(schema.classes)} classes "
            f"({', '.join(schema.classes)})"
        )


def _from_folder(folder: Path, model_dir: ModelDir, split: str, strict: bool) -> LabelledData:
    schema = model_dir.schema
    scan = scan_folder(folder)
    bad = unknown_labels(scan.samples, schema)
    if bad:
        listed = ", ".join(f"{label!r} ({count})" for label, count in bad.most_common(10))
        raise DataError(f"{folder}: labels that are not the model's classes ({', '.join(schema.classes)}): {listed}")
    if any(s.split for s in scan.samples):
        chosen = [s for s in scan.samples if s.split == split]
        if not chosen:
            raise DataError(f"{folder}: the manifest assigns splits but no row is in split {split!r}")
        used = split
    else:
        chosen, used = list(scan.samples), "all"
    chosen, mismatched = _guard_samples(folder, chosen, schema, strict)
    cache = DecodeCache(None, folder, ())
    frames = model_dir.cfg.data.frames
    decoded = decode_scan(
        FolderScan(folder, scan.layout, chosen, list(scan.problems)),
        schema,
        model_dir.cfg.data.image_size,
        frames,
        cache,
    )
    if not decoded.samples:
        raise DataError(f"{folder}: no image decodes ({len(decoded.problems)} files or rows skipped)")
    evaluated = {sample.file for sample in decoded.samples}
    warnings = [] if strict else [w for w in mismatched if w.file in evaluated]
    problems = decoded.problems + (mismatched if strict else [])
    width = len(schema.classes) if schema.task is Task.MULTILABEL else 1
    labels: list[list[int]] = []
    for sample, frames_tensor in zip(decoded.samples, decoded.images, strict=True):
        target = (
            multi_hot(sample.label, schema.classes)
            if schema.task is Task.MULTILABEL
            else [label_index(sample.label, schema.classes) or 0]
        )
        labels += [list(target or [0] * width)] * int(frames_tensor.shape[0])
    images = torch.cat(decoded.images)
    dataset = ImageDataset(
        images, np.asarray(labels, dtype=np.int64).reshape(-1, width), schema.task, len(schema.classes)
    )
    return LabelledData(f"{folder} ({scan.layout}, split {used})", used, dataset, problems, warnings)


def _guard_samples(
    folder: Path, samples: list[Sample], schema: DatasetSchema, strict: bool
) -> tuple[list[Sample], list[Problem]]:
    """The samples to evaluate and, one per image that does not fit the model, a ``modality-mismatch`` entry.

    Without ``strict`` every sample is kept; with it the mismatched ones are left out.

    Raises:
        ModalityMismatchError: with ``strict``, when no sample fits.
    """
    kept: list[Sample] = []
    mismatched: list[Problem] = []
    seen: set[str] = set()
    for sample in samples:
        kind = file_kind(folder / sample.file)
        reasons = input_mismatches(schema, kind) if kind is not None else []
        if reasons:
            mismatched.append(Problem(sample.file, Reason.MODALITY_MISMATCH, "; ".join(reasons)))
            seen.update(reasons)
        if not (reasons and strict):
            kept.append(sample)
    if mismatched:
        action = "left out (--strict)" if strict else "evaluated; their results may be meaningless"
        log.warning(
            "%d of %d images do not fit the model (%s): %s",
            len(mismatched),
            len(samples),
            "; ".join(sorted(seen)),
            action,
        )
    if strict and samples and not kept:
        raise ModalityMismatchError(f"{folder}: no image fits the model: {'; '.join(sorted(seen))} (--strict)")
    return kept, mismatched
