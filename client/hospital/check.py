"""``fedward client check-data``: validate a hospital folder without training.

Every file is decoded as training would decode it. The report gives counts per class and
split, image sizes, modalities and transfer syntaxes seen, and each unusable file or row
with a one-line reason. It stays at the hospital: it names files (never header values).

A folder is *usable* when its manifest parses, every label maps onto the federation's
classes and at least one training image decodes. Unreadable files alone do not make it
unusable: training skips and counts them.

Folder data sets (:func:`~fedward.common.data.sources.folder_layout`: image + mask folders,
Decathlon NIfTI, DICOM series with DICOM SEG) are read by the same reader and settings as
training (:func:`~fedward.common.data.sources.read_folder_dataset`, no cache): the report
lists the reader's problems per file (mask or SEG of another size or geometry, label values
outside the declared labels, missing masks, uneven slice spacing, a SEG of another series)
and counts the usable cases per split. There any problem fails the check (exit code 1),
while the good cases are still counted as usable: a bad case is a case the federation
silently loses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from fedward.common.choices import FrameMode, TargetKind, Task
from fedward.common.config.sections import DataConfig
from fedward.common.data.dicom import Reason, UnusableFileError
from fedward.common.data.files import decode_file, probe
from fedward.common.data.folder import Problem, is_image_folder, label_index, multi_hot, scan_folder
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.npz import read_npz
from fedward.common.data.sources import LABEL_MAP_LAYOUTS, FolderLayout, folder_layout, read_folder_dataset
from fedward.common.data.volumeprep import NoUsableCaseError
from fedward.common.errors import DataError

BLOCKING = frozenset({Reason.LABEL_UNKNOWN, Reason.BAD_MANIFEST_ROW})
"""Problems that make a folder unusable (they need the site's staff to fix the manifest)."""


@dataclass(slots=True)
class CheckReport:
    """What a hospital folder holds and what of it can be used.

    Attributes:
        folder: the folder checked.
        layout: ``manifest``, ``class-folders``, ``npz`` or a folder data set's
            :class:`~fedward.common.data.sources.FolderLayout` (``dicom-series``...).
        classes: the class (segmentation: label) names labels were checked against.
        counts: usable images per split and class, ``{split: {class: n}}`` (``unassigned``:
            no split given; training draws validation from those); segmentation data sets
            count cases, ``{split: {"cases": n}}``.
        sizes: ``"rows x columns"`` -> number of files (folder data sets: the model grid,
            ``"D x H x W"`` for volumes).
        modalities: DICOM Modality (``PNG``/``JPEG`` for other images) -> number of files.
        transfer_syntaxes: transfer syntax (or image format) -> number of files.
        problems: every unusable file or row, with its reason.
        unit: what the counts count: ``files`` (images) or ``cases`` (folder data sets).
        columns: keys of ``counts`` to tabulate; empty: ``classes``.
        every_problem_fails: any problem fails the check (folder data sets), not only
            those in :data:`BLOCKING`.
        sizes_title: what :attr:`sizes` counts, for the console.
    """

    folder: Path
    layout: str
    classes: tuple[str, ...]
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    sizes: Counter[str] = field(default_factory=Counter)
    modalities: Counter[str] = field(default_factory=Counter)
    transfer_syntaxes: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    unit: str = "files"
    columns: tuple[str, ...] = ()
    every_problem_fails: bool = False
    sizes_title: str = "image sizes"

    @property
    def usable_files(self) -> int:
        """Files that decode and carry a known label."""
        return sum(sum(c.values()) for c in self.counts.values())

    @property
    def reasons(self) -> Counter[str]:
        """Number of problems per reason code."""
        return Counter(p.reason.value for p in self.problems)

    @property
    def usable(self) -> bool:
        """Whether training can start on this folder."""
        trainable = sum(sum(self.counts.get(s, Counter()).values()) for s in ("train", "unassigned"))
        return trainable > 0 and not any(p.reason in BLOCKING for p in self.problems)

    @property
    def exit_code(self) -> int:
        """0 when the check passes, 1 when the folder is unusable or (folder data sets) has any problem."""
        return 0 if self.usable and not (self.every_problem_fails and self.problems) else 1

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable form (for ``--json``)."""
        return {
            "folder": str(self.folder),
            "layout": self.layout,
            "usable": self.usable,
            "exit_code": self.exit_code,
            "classes": list(self.classes),
            "unit": self.unit,
            "usable_files": self.usable_files,
            "counts": {split: dict(c) for split, c in self.counts.items()},
            "sizes": dict(self.sizes),
            "modalities": dict(self.modalities),
            "transfer_syntaxes": dict(self.transfer_syntaxes),
            "problems": [{"file": p.file, "reason": p.reason.value, "message": p.message} for p in self.problems],
            "problem_counts": dict(self.reasons),
        }


def check_folder(
    folder: Path,
    classes: Sequence[str] | None = None,
    task: Task | None = Task.BINARY,
    frames: FrameMode = FrameMode.MIDDLE,
    *,
    data: DataConfig | None = None,
) -> CheckReport:
    """Decode and label-check every image of a hospital folder.

    A folder data set (:func:`~fedward.common.data.sources.folder_layout`) is checked by its
    reader (:func:`check_dataset`). A folder holding a MedMNIST-layout ``.npz`` (and no
    manifest or class sub-folders) is checked by reading the file: its arrays, label range
    and split sizes.

    Args:
        folder: the hospital folder (``labels.csv``, class sub-folders, one ``.npz`` or a
            folder data set).
        classes: the federation's classes (segmentation: label names, background first);
            ``None`` accepts the labels found (sorted).
        task: ``multilabel`` reads ``|``-joined labels; any other task one label per image;
            ``segmentation`` reads an image + mask folder's masks. ``None``: not known.
        frames: frames decoded for multi-frame images.
        data: the run's data section, for folder data sets (grid, spacing, intensity...);
            ``None``: defaults with ``classes`` and ``task``.

    Raises:
        DataError: if the folder is missing or its manifest cannot be read at all.
    """
    folder = Path(folder)
    layout = folder_layout(folder)
    if layout is not None:
        return check_dataset(folder, layout, data or folder_config(layout, classes, task))
    if folder.is_dir() and not is_image_folder(folder):
        return _check_npz(folder, classes, task)
    return _check_images(folder, classes, task, frames)


def _check_images(folder: Path, classes: Sequence[str] | None, task: Task | None, frames: FrameMode) -> CheckReport:
    """Decode every image of a manifest or class-folder layout and check its label."""
    scan = scan_folder(folder)
    if classes is None:
        found = (
            {part.strip() for s in scan.samples for part in s.label.split("|")}
            if task is Task.MULTILABEL
            else {s.label.strip() for s in scan.samples}
        )
        classes = sorted(c for c in found if c)
    report = CheckReport(Path(folder), scan.layout, tuple(classes), problems=list(scan.problems))
    for sample in scan.samples:
        known = (
            multi_hot(sample.label, classes) is not None
            if task is Task.MULTILABEL
            else label_index(sample.label, classes) is not None
        )
        if not known:
            report.problems.append(
                Problem(sample.file, Reason.LABEL_UNKNOWN, f"label {sample.label!r} is not one of {', '.join(classes)}")
            )
            continue
        path = scan.folder / sample.file
        try:
            info = probe(path)
            decode_file(path, frames)
        except UnusableFileError as err:
            report.problems.append(Problem(sample.file, err.reason, str(err)))
            continue
        name = sample.label if task is Task.MULTILABEL else classes[label_index(sample.label, classes) or 0]
        report.counts.setdefault(sample.split or "unassigned", Counter())[name] += 1
        report.sizes[f"{info.rows} x {info.columns}"] += 1
        report.modalities[info.modality or info.transfer_syntax] += 1
        report.transfer_syntaxes[info.transfer_syntax] += 1
    return report


def folder_config(layout: FolderLayout, classes: Sequence[str] | None, task: Task | None) -> DataConfig:
    """Data settings that read a folder data set as the federation's ``task`` and ``classes`` would.

    Label-map layouts (Decathlon, DICOM series) are always segmentation; a mask folder is
    segmentation (its masks) when ``task`` is, else classification or whatever ``auto`` finds.
    """
    kind = Task.SEGMENTATION if layout in LABEL_MAP_LAYOUTS else task
    target = TargetKind.MASK if kind is Task.SEGMENTATION else TargetKind.AUTO
    if not classes or kind is None:
        return DataConfig(target=target)
    return DataConfig(task=kind, classes=tuple(classes), channels=1, target=target)


def check_dataset(folder: Path, layout: FolderLayout, data: DataConfig) -> CheckReport:
    """Read a folder data set as training would and report its problems and usable cases per split.

    Raises:
        DataError: if the folder cannot be read at all (a reader's index or settings error).
    """
    report = CheckReport(
        folder, layout.value, data.classes, unit="cases", every_problem_fails=True, sizes_title="model grid"
    )
    try:
        read = read_folder_dataset(folder, data, cache_root=None)
    except NoUsableCaseError as err:
        report.problems = list(err.problems)
        return report
    report.classes, report.problems = read.schema.classes, sorted(read.problems, key=lambda p: p.file)
    modality = read.schema.modality.value if read.schema.modality else "unknown"
    for split, arrays in read.splits.items():
        if isinstance(arrays, MaskSplit):
            report.columns = ("cases",)
            report.counts[split] = Counter({"cases": len(arrays)})
        else:
            report.counts[split] = Counter(read.schema.classes[int(i)] for i in arrays.labels[:, 0])
        report.sizes[" x ".join(str(n) for n in arrays.images.shape[-read.schema.spatial_dims :])] += len(arrays)
        report.modalities[modality] += len(arrays)
    return report


def _check_npz(folder: Path, classes: Sequence[str] | None, task: Task | None) -> CheckReport:
    files = sorted(folder.glob("*.npz"))
    if len(files) != 1:
        raise DataError(f"{folder} holds neither labels.csv, class sub-folders nor exactly one .npz file")
    splits = read_npz(files[0], ["train", "val", "test"])
    first = splits["train"]
    width = first.labels.shape[1]
    if classes is None:
        top = max((int(a.labels.max()) for a in splits.values() if len(a)), default=0)
        classes = [str(i) for i in range(max(width, top + 1) if width == 1 else width)]
    report = CheckReport(folder, "npz", tuple(classes))
    for split, arrays in splits.items():
        if not len(arrays):
            continue
        counts: Counter[str] = Counter()
        unknown = 0
        for row in arrays.labels:
            if task is Task.MULTILABEL or width > 1:
                counts.update(name for name, on in zip(classes, row, strict=False) if on)
            elif int(row[0]) < len(classes):
                counts[classes[int(row[0])]] += 1
            else:
                unknown += 1
        if unknown:
            message = f"{unknown} labels are not among the {len(classes)} classes"
            report.problems.append(Problem(f"{files[0].name}:{split}", Reason.LABEL_UNKNOWN, message))
        report.counts[split] = counts
        size = f"{arrays.images.shape[1]} x {arrays.images.shape[2]}"
        report.sizes[size] += len(arrays)
        report.modalities["npz"] += len(arrays)
        report.transfer_syntaxes["MedMNIST .npz"] += len(arrays)
    return report


def render(report: CheckReport) -> Group:
    """The report as rich renderables for the hospital's console."""
    counts = Table(title=f"{report.folder} ({report.layout})")
    counts.add_column("split")
    columns = report.columns or report.classes
    for name in columns:
        counts.add_column(name, justify="right")
    counts.add_column("total", justify="right")
    for split in ("train", "val", "test", "unassigned"):
        if split in report.counts:
            row = report.counts[split]
            counts.add_row(split, *(str(row.get(c, 0)) for c in columns), str(sum(row.values())))
    seen = Table(title=f"Seen in the usable {report.unit}", show_header=True)
    seen.add_column("what")
    seen.add_column("values")
    for label, counter in (
        (report.sizes_title, report.sizes),
        ("modalities", report.modalities),
        ("transfer syntaxes", report.transfer_syntaxes),
    ):
        seen.add_row(label, ", ".join(f"{k} ({v})" for k, v in counter.most_common()) or "-")
    parts: list[Any] = [counts, seen]
    if report.problems:
        bad = Table(title=f"{len(report.problems)} unusable files, rows or cases")
        bad.add_column("file")
        bad.add_column("reason")
        bad.add_column("detail")
        for problem in report.problems:
            bad.add_row(problem.file, problem.reason.value, problem.message)
        parts.append(bad)
    verdict = "NOT usable" if not report.usable else ("problems to fix" if report.exit_code else "usable")
    summary = f"{verdict}: {report.usable_files} usable {report.unit}, {len(report.problems)} problems"
    if report.problems:
        summary += " (" + ", ".join(f"{k} {v}" for k, v in sorted(report.reasons.items())) + ")"
    parts.append(Text(summary, style="bold red" if report.exit_code else "bold green"))
    return Group(*parts)
