"""Load a hospital image folder (DICOM, PNG, JPEG) as training and validation data.

Labels are checked against the federation's classes *before* any decoding: a hospital
whose labels do not map onto them fails at once, naming the offending labels. Files that
cannot be decoded are skipped and counted by reason; they never stop training. Decoded
files are cached on disk (:class:`~fedward.common.data.cache.DecodeCache`), so rounds
after the first, in new processes, do not decode again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedward.common.choices import FrameMode, TargetKind, Task
from fedward.common.config import RunConfig
from fedward.common.data.cache import DecodeCache, default_cache_root
from fedward.common.data.dicom import UnusableFileError
from fedward.common.data.files import decode_file, to_model_input
from fedward.common.data.folder import FolderScan, Problem, Sample, is_image_folder, label_index, multi_hot, scan_folder
from fedward.common.data.hospital import HospitalData, holdout_split, hospital_from_folder
from fedward.common.data.images import ImageDataset, make_dataset
from fedward.common.data.sources import folder_layout, read_folder_dataset
from fedward.common.errors import DataError
from fedward.common.ml.runtime import derive_seed
from fedward.common.schema import DatasetSchema
from fedward.common.wire import FILES_SKIPPED, FILES_USED, SKIPPED_PREFIX

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decoded:
    """Model inputs of the usable files of a folder, and the problems met.

    Attributes:
        samples: the usable samples, in folder order.
        images: one uint8 tensor (F, C, S, S) per usable sample.
        problems: every file or row that was skipped, with its reason.
    """

    samples: list[Sample]
    images: list[torch.Tensor]
    problems: list[Problem]


def unknown_labels(samples: Sequence[Sample], schema: DatasetSchema) -> Counter[str]:
    """Labels (with their row counts) that are not among the federation's classes."""
    bad: Counter[str] = Counter()
    for sample in samples:
        ok = (
            multi_hot(sample.label, schema.classes) is not None
            if schema.task is Task.MULTILABEL
            else label_index(sample.label, schema.classes) is not None
        )
        if not ok:
            bad[sample.label] += 1
    return bad


def decode_scan(
    scan: FolderScan, schema: DatasetSchema, image_size: int, frames: FrameMode, cache: DecodeCache
) -> Decoded:
    """Decode (or fetch from the cache) every sample of a scan."""
    samples, images, problems = [], [], list(scan.problems)
    for sample in scan.samples:
        path = scan.folder / sample.file
        try:
            tensor = cache.get(path)
            if tensor is None:
                try:
                    tensor = to_model_input(decode_file(path, frames), schema.channels, image_size)
                except UnusableFileError as err:
                    cache.put(path, err)
                    raise
                cache.put(path, tensor)
        except UnusableFileError as err:
            problems.append(Problem(sample.file, err.reason, str(err)))
            continue
        samples.append(sample)
        images.append(tensor)
    return Decoded(samples, images, problems)


def load_image_folder(
    folder: Path,
    schema: DatasetSchema,
    image_size: int,
    *,
    frames: FrameMode,
    val_fraction: float,
    seed: int,
    name: str,
    cache_root: Path | None,
) -> HospitalData:
    """A hospital's training and validation data from an image folder.

    Args:
        folder: the hospital folder (manifest or class sub-folders).
        schema: the federation's task, classes and channels.
        image_size: model input side, pixels.
        frames: which frames of multi-frame images become samples.
        val_fraction: share held out for validation when the manifest gives no splits.
        seed: seed of that hold-out draw.
        name: hospital name.
        cache_root: decode cache root (``None``: no cache).

    Returns:
        The data; ``inventory`` counts used and skipped files (by reason) for the server.

    Raises:
        DataError: if the folder or manifest is unusable, a label is not one of the
            federation's classes (the message names them), or no training image decodes.
    """
    scan = scan_folder(folder)
    _refuse_unknown_labels(folder, scan.samples, schema)
    cache = DecodeCache(cache_root, folder, (image_size, schema.channels, frames.value))
    decoded = decode_scan(scan, schema, image_size, frames, cache)
    targets = [_target(s.label, schema) for s in decoded.samples]
    train_rows, val_rows = _split_rows(decoded.samples, targets, val_fraction, seed)
    if not train_rows:
        raise DataError(f"{folder.name}: no usable training image ({len(decoded.problems)} files or rows skipped)")
    skipped = Counter(p.reason.value for p in decoded.problems)
    _log_files(name, decoded, cache.hits, skipped)
    return HospitalData(
        name=name,
        schema=schema,
        train=_dataset(decoded, targets, train_rows, schema, image_size),
        val=_dataset(decoded, targets, val_rows, schema, image_size),
        inventory={FILES_USED: len(decoded.samples), FILES_SKIPPED: len(decoded.problems)}
        | {f"{SKIPPED_PREFIX}{reason}": count for reason, count in sorted(skipped.items())},
    )


def _refuse_unknown_labels(folder: Path, samples: Sequence[Sample], schema: DatasetSchema) -> None:
    """Raise DataError naming (up to 10 of) the labels that are not the federation's classes."""
    bad = unknown_labels(samples, schema)
    if bad:
        listed = ", ".join(
            f"{label!r} ({count} file{'s' if count > 1 else ''})" for label, count in bad.most_common(10)
        )
        raise DataError(
            f"{folder.name}: labels that are not the federation's classes ({', '.join(schema.classes)}): {listed}"
        )


def _split_rows(
    samples: Sequence[Sample], targets: list[list[int]], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Training and validation rows: the manifest's splits, else a stratified hold-out of the unsplit rows."""
    train_rows = [i for i, s in enumerate(samples) if s.split in ("train", None)]
    val_rows = [i for i, s in enumerate(samples) if s.split == "val"]
    undrawn = [i for i in train_rows if samples[i].split is None]
    if undrawn and not val_rows:
        labels = np.array([targets[i] for i in undrawn], dtype=np.int64).reshape(len(undrawn), -1)
        _, held = holdout_split(labels, val_fraction, seed)
        val_rows = [undrawn[i] for i in held]
        train_rows = sorted(set(train_rows) - set(val_rows))
    return train_rows, val_rows


def _log_files(name: str, decoded: Decoded, cache_hits: int, skipped: Counter[str]) -> None:
    """Log the hospital's usable, cached and skipped (by reason) file counts."""
    log.info(
        "hospital %s: %d usable files (%d cache hits), %d skipped%s",
        name,
        len(decoded.samples),
        cache_hits,
        len(decoded.problems),
        f" ({', '.join(f'{k} {v}' for k, v in sorted(skipped.items()))})" if skipped else "",
    )


def _target(label: str, schema: DatasetSchema) -> list[int]:
    if schema.task is Task.MULTILABEL:
        vector = multi_hot(label, schema.classes)
        if vector is None:  # checked before decoding
            raise DataError(f"label {label!r} is not a class")
        return vector
    index = label_index(label, schema.classes)
    if index is None:
        raise DataError(f"label {label!r} is not a class")
    return [index]


def _dataset(
    decoded: Decoded, targets: list[list[int]], rows: list[int], schema: DatasetSchema, image_size: int
) -> ImageDataset:
    """Stack the chosen samples (every frame of each) into one dataset."""
    images, labels = [], []
    for i in rows:
        frames = decoded.images[i]
        images.append(frames)
        labels.extend([targets[i]] * frames.shape[0])
    width = len(schema.classes) if schema.task is Task.MULTILABEL else 1
    if not images:
        empty = torch.zeros((0, schema.channels, image_size, image_size), dtype=torch.uint8)
        return ImageDataset(empty, np.zeros((0, width), np.int64), schema.task, len(schema.classes))
    stacked = np.asarray(labels, dtype=np.int64).reshape(-1, width)
    return ImageDataset(torch.cat(images), stacked, schema.task, len(schema.classes))


def load_site_folder(
    folder: Path, cfg: RunConfig, schema: DatasetSchema, *, name: str, cache_root: Path | None
) -> HospitalData:
    """A hospital folder of any supported layout, loaded as a run's settings say.

    A folder data set (image + mask folders, Decathlon NIfTI, DICOM series with SEG;
    :mod:`fedward.common.data.sources`) is read through the prepared cache; an image folder
    (``labels.csv`` or class sub-folders) is decoded through the decode cache; else the
    folder's MedMNIST ``.npz`` is read; image size, frames, validation share and seed come
    from ``cfg``. The one loader of a hospital's folder, shared by hospitals (deployment and
    simulation) and the centralized baseline, so both see the same images.

    Raises:
        DataError: if the folder does not exist; if the run learns classes with lesion
            masks (``data.target = "class+mask"``) and the folder holds none; or as
            :func:`load_image_folder` and :func:`~fedward.common.data.hospital.hospital_from_folder`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data directory {folder} does not exist")
    site = _load_folder(folder, cfg, schema, name=name, cache_root=cache_root)
    require_lesion_masks(cfg, site.train, folder)
    return site


def require_lesion_masks(cfg: RunConfig, train: object, source: Path) -> None:
    """Refuse training data without lesion masks when the run learns classes with them.

    The one check of ``data.target = "class+mask"`` against the data, made where data
    enters: a hospital's folder when it loads (enrolment) and the simulated data set when
    the run is set up, so such a run never starts training on images without masks.

    Args:
        cfg: the run's settings.
        train: the training split as read (an ``ArraySplit`` or an ``ImageDataset``); it
            holds masks when its ``masks`` attribute is not ``None``.
        source: the folder or file it was read from, for the message.

    Raises:
        DataError: if the run's target is ``class+mask`` and ``train`` holds no masks.
    """
    if cfg.data.target is TargetKind.CLASS_AND_MASK and getattr(train, "masks", None) is None:
        raise DataError(
            f'{source}: the run learns classes with lesion masks (data.target = "class+mask") but these '
            "images have no masks: it needs an image + mask folder (<class>/<name>.png with <name>_mask.png)"
        )


def _load_folder(
    folder: Path, cfg: RunConfig, schema: DatasetSchema, *, name: str, cache_root: Path | None
) -> HospitalData:
    """:func:`load_site_folder` before its check of lesion masks."""
    data = cfg.data
    seed = derive_seed(cfg.run.seed, "holdout")
    if folder_layout(folder) is not None:
        return hospital_from_dataset_folder(folder, cfg, schema, name=name, cache_root=cache_root)
    if not is_image_folder(folder):
        return hospital_from_folder(folder, data.dataset, schema, data.image_size, data.val_fraction, seed, name)
    return load_image_folder(
        folder,
        schema,
        data.image_size,
        frames=data.frames,
        val_fraction=data.val_fraction,
        seed=seed,
        name=name,
        cache_root=cache_root,
    )


def cache_root_for(cfg: RunConfig, override: str | Path | None = None) -> Path | None:
    """Where decoded images are cached: ``override`` (the agent's ``--cache-dir``), else
    ``data.cache-dir``, else ``~/.fedward/cache/decoded``; ``None`` when ``data.cache`` is off."""
    if not cfg.data.cache:
        return None
    return Path(str(override or cfg.data.cache_dir or default_cache_root())).expanduser()


def hospital_from_dataset_folder(
    folder: Path, cfg: RunConfig, schema: DatasetSchema, *, name: str, cache_root: Path | None
) -> HospitalData:
    """A hospital's data from a folder data set (segmentation folders, BUSI-style image + mask folders).

    Its ``train`` split trains; its ``val`` split validates, else a seeded stratified share
    (``data.val-fraction``) of the training cases is held out. Cases that cannot be used
    are counted by reason in the inventory, never named to the coordinator.

    Raises:
        DataError: if the folder cannot be read or its task or labels differ from the federation's.
    """
    read = read_folder_dataset(folder, cfg.data, cache_root=cache_root)
    found = read.schema
    if (found.task, found.num_outputs, found.spatial_dims) != (schema.task, schema.num_outputs, schema.spatial_dims):
        raise DataError(
            f"{folder.name} holds a {found.spatial_dims}D {found.task.value} data set with {found.num_outputs} "
            f"labels; the federation trains a {schema.spatial_dims}D {schema.task.value} task with "
            f"{schema.num_outputs} ({', '.join(schema.classes)})"
        )
    if "train" not in read.splits:
        raise DataError(f"{folder.name}: no usable training case ({len(read.problems)} skipped)")
    train, val = read.splits["train"], read.splits.get("val")
    if val is None or len(val) == 0:
        keep, held = holdout_split(train.labels, cfg.data.val_fraction, derive_seed(cfg.run.seed, "holdout"))
        train, val = train.subset(keep), train.subset(held)
    skipped = Counter(p.reason.value for p in read.problems)
    size = cfg.data.image_size
    return HospitalData(
        name=name,
        schema=schema,
        train=make_dataset(train, schema, size),
        val=make_dataset(val, schema, size),
        inventory={FILES_USED: len(train) + len(val), FILES_SKIPPED: len(read.problems)}
        | {f"{SKIPPED_PREFIX}{reason}": count for reason, count in sorted(skipped.items())},
    )
