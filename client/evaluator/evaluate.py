"""Evaluate a model directory on labelled data: metrics, bootstrap intervals, ROC curves.

Data (``--data``) is read with fedward's own readers:

* a MedMNIST-layout ``.npz`` (or a folder holding exactly one): its ``test`` (or ``val``)
  split, exactly as the server's test evaluation reads it;
* a hospital image folder (``labels.csv`` or class sub-folders; DICOM, PNG, JPEG): the
  rows of the requested split when the manifest assigns splits, else every image. Files
  that do not decode are skipped and listed, as in training.

Metrics are those of :mod:`fedward.common.ml.metrics` (AUC, accuracy, sensitivity,
specificity, F1). Their 95% intervals are percentile bootstrap intervals (Efron &
Tibshirani, "An Introduction to the Bootstrap", 1993): images are resampled with
replacement ``resamples`` times with a seeded NumPy generator and the metrics recomputed;
a resample where a metric is undefined (e.g. AUC when it holds one class only) is
skipped for that metric and counted. ROC curves (one per class one-vs-rest, or per
label) are drawn with matplotlib, AUC in the legend.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedward.client.evaluator.model_dir import LoadedModel, ModelDir
from fedward.common.choices import Task
from fedward.common.data.cache import DecodeCache
from fedward.common.data.folder import FolderScan, Problem, is_image_folder, label_index, multi_hot, scan_folder
from fedward.common.data.images import ImageDataset, make_dataset
from fedward.common.data.load import decode_scan, unknown_labels
from fedward.common.data.npz import SPLITS, ArraySplit, read_npz
from fedward.common.errors import DataError
from fedward.common.ml.metrics import classification_metrics

log = logging.getLogger(__name__)

DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95
REPORTED = ("auc", "accuracy", "sensitivity", "specificity", "f1")
"""Metrics evaluated and bootstrapped, in report order."""


@dataclass(frozen=True, slots=True)
class LabelledData:
    """Labelled images ready for the model.

    Attributes:
        source: what was read (file and split, or folder and layout).
        split: the split evaluated (``test``, ``val``...) or ``all`` (folder without splits).
        dataset: uint8 images (N, C, S, S) and their labels.
        problems: files or manifest rows that were skipped.
    """

    source: str
    split: str
    dataset: ImageDataset
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Percentile bootstrap intervals.

    Attributes:
        intervals: metric -> (low, high), ``None`` when too few resamples define it.
        resamples: resamples drawn.
        skipped: metric -> resamples where it was undefined and left out.
        seed: seed of the NumPy generator.
        confidence: coverage of the intervals (0.95).
    """

    intervals: dict[str, tuple[float, float] | None]
    resamples: int
    skipped: dict[str, int]
    seed: int
    confidence: float


@dataclass(frozen=True, slots=True)
class RocCurve:
    """One ROC curve.

    Attributes:
        name: class or label name.
        fpr: false positive rates, float64 (T,), from 0 to 1.
        tpr: true positive rates, float64 (T,).
        auc: area under it (MONAI ``compute_roc_auc``).
    """

    name: str
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Result of :func:`evaluate_model`.

    Attributes:
        model: one line describing the model.
        data: :class:`LabelledData` description.
        metrics: point estimates (``None``: undefined on this data).
        bootstrap: intervals.
        class_auc: one-vs-rest (or per-label) AUC per class, ``None`` where undefined.
        class_counts: images per class (positives per label).
        threshold: decision threshold used for binary and multi-label predictions.
        roc_png: the ROC figure, if written.
        results_json: the results file, if written.
    """

    model: ModelDir
    data: LabelledData
    metrics: dict[str, float | None]
    bootstrap: Bootstrap
    class_auc: dict[str, float | None]
    class_counts: dict[str, int]
    threshold: float
    roc_png: Path | None = None
    results_json: Path | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable form (``results.json``, ``--json``)."""
        boot = self.bootstrap
        return {
            "model": self.model.describe(),
            "model_dir": str(self.model.path),
            "weights": {"file": str(self.model.weights), "round": self.model.round, "sha256": self.model.sha256},
            "data": self.data.source,
            "split": self.data.split,
            "images": len(self.data.dataset),
            "task": self.model.task.value,
            "classes": list(self.model.classes),
            "class_counts": self.class_counts,
            "threshold": self.threshold,
            "metrics": {
                name: {"value": self.metrics.get(name), "ci95": _pair(boot.intervals.get(name))} for name in REPORTED
            },
            "class_auc": self.class_auc,
            "bootstrap": {
                "method": "percentile",
                "resamples": boot.resamples,
                "confidence": boot.confidence,
                "seed": boot.seed,
                "skipped": boot.skipped,
            },
            "roc_png": str(self.roc_png) if self.roc_png else None,
            "skipped_files": [
                {"file": p.file, "reason": p.reason.value, "message": p.message} for p in self.data.problems
            ],
        }


# ------------------------------------------------------------------------------ data
def load_labelled(data: Path, model_dir: ModelDir, split: str = "test") -> LabelledData:
    """Read labelled images for a model: a MedMNIST ``.npz`` or a hospital folder.

    Args:
        data: an ``.npz`` file, a folder holding one, or a hospital image folder.
        model_dir: the model (schema, image size, frames).
        split: the split to evaluate (``test`` or ``val``; ``train`` is allowed).

    Raises:
        DataError: if the data is missing, unreadable, has labels outside the model's
            classes or images of other channels, or holds no usable image.
    """
    data = Path(data)
    if split not in SPLITS:
        raise DataError(f"--split must be one of {', '.join(SPLITS)}; got {split!r}")
    if data.is_file():
        return _from_npz(data, model_dir, split)
    if not data.is_dir():
        raise DataError(f"--data {data} does not exist")
    if is_image_folder(data):
        return _from_folder(data, model_dir, split)
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


def _from_folder(folder: Path, model_dir: ModelDir, split: str) -> LabelledData:
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
    return LabelledData(f"{folder} ({scan.layout}, split {used})", used, dataset, decoded.problems)


# --------------------------------------------------------------------------- statistics
def bootstrap_intervals(
    task: Task,
    labels: np.ndarray,
    probabilities: np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    threshold: float = 0.5,
) -> Bootstrap:
    """Percentile bootstrap intervals of :data:`REPORTED` metrics.

    Args:
        task: the task.
        labels: int (N, 1) class indices or (N, K) 0/1 labels.
        probabilities: float (N, K).
        resamples: number of resamples (>= 1).
        seed: seed of ``numpy.random.default_rng``.
        confidence: interval coverage in (0, 1).
        threshold: decision threshold (binary, multi-label).

    Returns:
        Intervals and, per metric, how many resamples were skipped because it was undefined.

    Raises:
        DataError: if ``resamples`` < 1, ``confidence`` is outside (0, 1) or there are no images.
    """
    if resamples < 1:
        raise DataError(f"--resamples must be >= 1; got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise DataError(f"confidence must be in (0, 1); got {confidence}")
    n = labels.shape[0]
    if n == 0:
        raise DataError("no images to bootstrap")
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {name: [] for name in REPORTED}
    for _ in range(resamples):
        rows = rng.integers(0, n, size=n)
        metrics = classification_metrics(task, labels[rows], probabilities[rows], threshold=threshold)
        for name in REPORTED:
            value = getattr(metrics, name)
            if value is not None:
                values[name].append(value)
    tail = 100.0 * (1.0 - confidence) / 2.0
    intervals: dict[str, tuple[float, float] | None] = {}
    for name, found in values.items():
        if len(found) < 2:
            intervals[name] = None
            continue
        low, high = np.percentile(np.asarray(found), [tail, 100.0 - tail])
        intervals[name] = (float(low), float(high))
    skipped = {name: resamples - len(found) for name, found in values.items()}
    if skipped["auc"]:
        log.info("bootstrap: %d of %d resamples had a single class and were skipped for AUC", skipped["auc"], resamples)
    return Bootstrap(intervals, resamples, skipped, seed, confidence)


def roc_points(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve of one column: (fpr, tpr), float64 (T,), one point per distinct score.

    Args:
        scores: float (N,), higher means more likely positive.
        truth: bool or 0/1 (N,), with both classes present.
    """
    order = np.argsort(-scores, kind="mergesort")
    ranked, hits = scores[order], truth[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]  # last index of each distinct score
    tps = np.cumsum(hits)[last]
    fps = (last + 1) - tps
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def roc_curves(task: Task, labels: np.ndarray, probabilities: np.ndarray, classes: tuple[str, ...]) -> list[RocCurve]:
    """One ROC curve per class (one-vs-rest) or label; binary tasks: the positive class only.

    Classes whose labels are all equal have no curve.
    """
    from monai.metrics import compute_roc_auc

    multilabel = task is Task.MULTILABEL
    truth = labels.astype(bool) if multilabel else np.eye(len(classes), dtype=bool)[labels[:, 0]]
    columns = [1] if task is Task.BINARY else list(range(len(classes)))
    curves = []
    for column in columns:
        positives = int(truth[:, column].sum())
        if positives in (0, truth.shape[0]):
            continue
        scores = probabilities[:, column].astype(np.float64)
        fpr, tpr = roc_points(scores, truth[:, column])
        auc = compute_roc_auc(torch.from_numpy(scores), torch.from_numpy(truth[:, column].astype(np.int64)))
        curves.append(RocCurve(classes[column], fpr, tpr, float(auc)))  # type: ignore[arg-type]
    return curves


def plot_roc(curves: list[RocCurve], path: Path, title: str) -> Path:
    """Draw ROC curves (AUC in the legend) into a PNG (matplotlib, no display needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5.0))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    for curve in curves:
        ax.plot(curve.fpr, curve.tpr, linewidth=1.5, label=f"{curve.name} (AUC {curve.auc:.3f})")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false positive rate (1 - specificity)",
        ylabel="true positive rate (sensitivity)",
        title=title,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


# ------------------------------------------------------------------------------- driver
def evaluate_model(
    loaded: LoadedModel,
    data: Path,
    *,
    split: str = "test",
    out_dir: Path | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    threshold: float = 0.5,
) -> Evaluation:
    """Evaluate a loaded model on labelled data; write ``results.json`` and ``roc.png``.

    Args:
        loaded: the model.
        data: see :func:`load_labelled`.
        split: the split to evaluate.
        out_dir: folder for ``results.json`` and ``roc.png`` (``None``: write nothing).
        resamples: bootstrap resamples.
        seed: bootstrap seed.
        threshold: decision threshold for binary and multi-label predictions, in [0, 1].

    Raises:
        DataError: as :func:`load_labelled` and :func:`bootstrap_intervals`, or a
            threshold outside [0, 1].
    """
    if not 0.0 <= threshold <= 1.0:
        raise DataError(f"--threshold must be in [0, 1]; got {threshold}")
    model_dir = loaded.model_dir
    labelled = load_labelled(data, model_dir, split)
    probabilities = loaded.probabilities(labelled.dataset.images)
    labels = labelled.dataset.labels
    task, classes = model_dir.task, model_dir.classes
    point = classification_metrics(task, labels, probabilities, threshold=threshold)
    metrics = {name: getattr(point, name) for name in REPORTED}
    boot = bootstrap_intervals(task, labels, probabilities, resamples=resamples, seed=seed, threshold=threshold)
    curves = roc_curves(task, labels, probabilities, classes)
    by_name = {c.name: c.auc for c in curves}
    class_auc = {c: by_name.get(c) for c in classes if task is not Task.BINARY or c == classes[1]}
    counts = labelled.dataset.class_counts()
    result = Evaluation(
        model_dir,
        labelled,
        metrics,
        boot,
        class_auc,
        {c: int(k) for c, k in zip(classes, counts, strict=True)},
        threshold,
    )
    if out_dir is None:
        return result
    out_dir = Path(out_dir)
    png = None
    if curves:
        png = plot_roc(
            curves, out_dir / "roc.png", f"ROC: {model_dir.run_name} on {Path(data).name} ({labelled.split})"
        )
    else:
        log.warning("no ROC curve: every class is absent or is the only one in the data")
    written = Evaluation(
        model_dir, labelled, metrics, boot, class_auc, result.class_counts, threshold, png, out_dir / "results.json"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(
        json.dumps(written.to_json(), indent=2, default=_plain) + "\n", encoding="utf-8"
    )
    return written


def default_out_dir(model_dir: ModelDir, data: Path, split: str) -> Path:
    """``<model dir>/evaluations/<data name>-<split>``."""
    return model_dir.path / "evaluations" / f"{Path(data).stem or 'data'}-{split}"


def _pair(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [interval[0], interval[1]]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
