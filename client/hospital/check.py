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

When the federation's schema is known (:mod:`fedward.client.hospital.check_fit`), every
usable file's header (a ``.npz`` split's channels, a folder data set's modality and
dimensions) is compared with it: a file of another modality or channels is listed as a
warning (``modality-mismatch``; exit code unchanged, the file still counted), or with
``strict`` as an unusable file (not counted, exit code 1).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from fedward.client.hospital.check_fit import (
    FOLDER,
    dataset_mismatches,
    file_mismatches,
    log_mismatches,
    npz_mismatches,
)
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
from fedward.common.schema import DatasetSchema

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
        warnings: usable files (``.npz`` splits, the whole folder data set: ``.``) that may not
            fit the federation's images (``modality-mismatch``); with ``strict`` these are
            problems instead.
        strict: files that do not fit the federation's images are unusable.
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
    warnings: list[Problem] = field(default_factory=list)
    strict: bool = False
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
        """0 when the check passes; 1 when the folder is unusable, (folder data sets) has any problem, or
        (``strict``) holds a file that does not fit the federation's images."""
        refused = any(p.reason is Reason.MODALITY_MISMATCH for p in self.problems)
        return 0 if self.usable and not (self.every_problem_fails and self.problems) and not refused else 1

    def add_mismatch(self, file: str, reasons: list[str]) -> None:
        """Record a file that does not fit the federation's images: a warning, or with ``strict`` a problem."""
        entry = Problem(file, Reason.MODALITY_MISMATCH, "; ".join(reasons))
        (self.problems if self.strict else self.warnings).append(entry)

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
            "problems": [p.to_json() for p in self.problems],
            "problem_counts": dict(self.reasons),
            "warnings": [p.to_json() for p in self.warnings],
            "strict": self.strict,
        }


def check_folder(
    folder: Path,
    classes: Sequence[str] | None = None,
    task: Task | None = Task.BINARY,
    frames: FrameMode = FrameMode.MIDDLE,
    *,
    data: DataConfig | None = None,
    schema: DatasetSchema | None = None,
    strict: bool = False,
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
        schema: the federation's schema (modality, channels, dimensions); ``None``: unknown,
            files are not compared with it.
        strict: files that do not fit ``schema`` are unusable (exit code 1), not warnings.

    Raises:
        DataError: if the folder is missing or its manifest cannot be read at all.
    """
    folder = Path(folder)
    layout = folder_layout(folder)
    fit = (schema, strict)
    if layout is not None:
        report = check_dataset(folder, layout, data or folder_config(layout, classes, task), fit)
    elif folder.is_dir() and not is_image_folder(folder):
        report = _check_npz(folder, classes, task, fit)
    else:
        report = _check_images(folder, classes, task, frames, fit)
    log_mismatches([*report.warnings, *(p for p in report.problems if p.reason is Reason.MODALITY_MISMATCH)], strict)
    return report


Fit = tuple[DatasetSchema | None, bool]
"""The federation's schema (``None``: unknown) and ``strict``."""


def _check_images(
    folder: Path, classes: Sequence[str] | None, task: Task | None, frames: FrameMode, fit: Fit
) -> CheckReport:
    """Decode every image of a manifest or class-folder layout, check its label and its fit to the schema."""
    scan = scan_folder(folder)
    if classes is None:
        found = (
            {part.strip() for s in scan.samples for part in s.label.split("|")}
            if task is Task.MULTILABEL
            else {s.label.strip() for s in scan.samples}
        )
        classes = sorted(c for c in found if c)
    report = CheckReport(Path(folder), scan.layout, tuple(classes), problems=list(scan.problems), strict=fit[1])
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
        if fit[0] is not None and (reasons := file_mismatches(fit[0], info)):
            report.add_mismatch(sample.file, reasons)
            if report.strict:
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


def check_dataset(folder: Path, layout: FolderLayout, data: DataConfig, fit: Fit = (None, False)) -> CheckReport:
    """Read a folder data set as training would and report its problems and usable cases per split.

    ``fit`` is the federation's schema and ``strict``: the data set's modality, channels and
    dimensions are compared with the schema's once (file ``.``: the whole folder).

    Raises:
        DataError: if the folder cannot be read at all (a reader's index or settings error).
    """
    report = CheckReport(
        folder, layout.value, data.classes, unit="cases", every_problem_fails=True, sizes_title="model grid"
    )
    report.strict = fit[1]
    try:
        read = read_folder_dataset(folder, data, cache_root=None)
    except NoUsableCaseError as err:
        report.problems = list(err.problems)
        return report
    report.classes, report.problems = read.schema.classes, sorted(read.problems, key=lambda p: p.file)
    if fit[0] is not None:
        # Without data.volume-size a segmentation is 2D or 3D as its data set is (run setup's rule).
        dims = fit[0].spatial_dims if data.volume_size or fit[0].task is not Task.SEGMENTATION else None
        federation = dataclasses.replace(fit[0], spatial_dims=dims or read.schema.spatial_dims)
        if reasons := dataset_mismatches(federation, read.schema):
            report.add_mismatch(FOLDER, reasons)
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


def _check_npz(folder: Path, classes: Sequence[str] | None, task: Task | None, fit: Fit) -> CheckReport:
    files = sorted(folder.glob("*.npz"))
    if len(files) != 1:
        raise DataError(f"{folder} holds neither labels.csv, class sub-folders nor exactly one .npz file")
    splits = read_npz(files[0], ["train", "val", "test"])
    first = splits["train"]
    width = first.labels.shape[1]
    if classes is None:
        top = max((int(a.labels.max()) for a in splits.values() if len(a)), default=0)
        classes = [str(i) for i in range(max(width, top + 1) if width == 1 else width)]
    report = CheckReport(folder, "npz", tuple(classes), strict=fit[1])
    for split, arrays in splits.items():
        if not len(arrays):
            continue
        if fit[0] is not None and (reasons := npz_mismatches(fit[0], 3 if arrays.images.ndim == 4 else 1)):
            report.add_mismatch(f"{files[0].name}:{split}", reasons)
            if report.strict:
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
        parts.append(_problem_table(f"{len(report.problems)} unusable files, rows or cases", report.problems))
    if report.warnings:
        title = f"{len(report.warnings)} files that may not fit the federation's images (--strict: unusable)"
        parts.append(_problem_table(title, report.warnings))
    verdict = "NOT usable" if not report.usable else ("problems to fix" if report.exit_code else "usable")
    summary = f"{verdict}: {report.usable_files} usable {report.unit}, {len(report.problems)} problems"
    if report.problems:
        summary += " (" + ", ".join(f"{k} {v}" for k, v in sorted(report.reasons.items())) + ")"
    if report.warnings:
        summary += f", {len(report.warnings)} warnings (modality-mismatch)"
    style = "bold red" if report.exit_code else ("bold yellow" if report.warnings else "bold green")
    parts.append(Text(summary, style=style))
    return Group(*parts)


def _problem_table(title: str, problems: list[Problem]) -> Table:
    """File, reason and detail of each problem (or warning)."""
    table = Table(title=title)
    table.add_column("file")
    table.add_column("reason")
    table.add_column("detail")
    for problem in problems:
        table.add_row(problem.file, problem.reason.value, problem.message)
    return table
