"""``fedward client check-data``: validate a hospital folder without training.

Every file is decoded as training would decode it. The report gives counts per class and
split, image sizes, modalities and transfer syntaxes seen, and each unusable file or row
with a one-line reason. It stays at the hospital: it names files (never header values).

A folder is *usable* when its manifest parses, every label maps onto the federation's
classes and at least one training image decodes. Unreadable files alone do not make it
unusable: training skips and counts them.
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

from fedward.common.choices import FrameMode, Task
from fedward.common.data.dicom import Reason, UnusableFileError
from fedward.common.data.files import decode_file, probe
from fedward.common.data.folder import Problem, is_image_folder, label_index, multi_hot, scan_folder
from fedward.common.data.npz import read_npz
from fedward.common.errors import DataError

BLOCKING = frozenset({Reason.LABEL_UNKNOWN, Reason.BAD_MANIFEST_ROW})
"""Problems that make a folder unusable (they need the site's staff to fix the manifest)."""


@dataclass(slots=True)
class CheckReport:
    """What a hospital folder holds and what of it can be used.

    Attributes:
        folder: the folder checked.
        layout: ``manifest`` or ``class-folders``.
        classes: the class names labels were checked against.
        counts: usable images per split and class, ``{split: {class: n}}`` (``unassigned``:
            no split given; training draws validation from those).
        sizes: ``"rows x columns"`` -> number of files.
        modalities: DICOM Modality (``PNG``/``JPEG`` for other images) -> number of files.
        transfer_syntaxes: transfer syntax (or image format) -> number of files.
        problems: every unusable file or row, with its reason.
    """

    folder: Path
    layout: str
    classes: tuple[str, ...]
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    sizes: Counter[str] = field(default_factory=Counter)
    modalities: Counter[str] = field(default_factory=Counter)
    transfer_syntaxes: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)

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

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable form (for ``--json``)."""
        return {
            "folder": str(self.folder),
            "layout": self.layout,
            "usable": self.usable,
            "classes": list(self.classes),
            "usable_files": self.usable_files,
            "counts": {split: dict(c) for split, c in self.counts.items()},
            "sizes": dict(self.sizes),
            "modalities": dict(self.modalities),
            "transfer_syntaxes": dict(self.transfer_syntaxes),
            "problems": [{"file": p.file, "reason": p.reason.value, "message": p.message} for p in self.problems],
            "problem_counts": dict(self.reasons),
        }


def check_folder(
    folder: Path, classes: Sequence[str] | None = None, task: Task = Task.BINARY, frames: FrameMode = FrameMode.MIDDLE
) -> CheckReport:
    """Decode and label-check every image of a hospital folder.

    A folder holding a MedMNIST-layout ``.npz`` (and no manifest or class sub-folders) is
    checked by reading the file: its arrays, label range and split sizes.

    Args:
        folder: the hospital folder (``labels.csv``, class sub-folders or one ``.npz``).
        classes: the federation's classes; ``None`` accepts the labels found (sorted).
        task: ``multilabel`` reads ``|``-joined labels; any other task one label per image.
        frames: frames decoded for multi-frame images.

    Raises:
        DataError: if the folder is missing or its manifest cannot be read at all.
    """
    folder = Path(folder)
    if folder.is_dir() and not is_image_folder(folder):
        return _check_npz(folder, classes, task)
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


def _check_npz(folder: Path, classes: Sequence[str] | None, task: Task) -> CheckReport:
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
    for name in report.classes:
        counts.add_column(name, justify="right")
    counts.add_column("total", justify="right")
    for split in ("train", "val", "test", "unassigned"):
        if split in report.counts:
            row = report.counts[split]
            counts.add_row(split, *(str(row.get(c, 0)) for c in report.classes), str(sum(row.values())))
    seen = Table(title="Seen in the usable files", show_header=True)
    seen.add_column("what")
    seen.add_column("values")
    for label, counter in (
        ("image sizes", report.sizes),
        ("modalities", report.modalities),
        ("transfer syntaxes", report.transfer_syntaxes),
    ):
        seen.add_row(label, ", ".join(f"{k} ({v})" for k, v in counter.most_common()) or "-")
    parts: list[Any] = [counts, seen]
    if report.problems:
        bad = Table(title=f"{len(report.problems)} unusable files or rows")
        bad.add_column("file")
        bad.add_column("reason")
        bad.add_column("detail")
        for problem in report.problems:
            bad.add_row(problem.file, problem.reason.value, problem.message)
        parts.append(bad)
    verdict = "usable" if report.usable else "NOT usable"
    summary = f"{verdict}: {report.usable_files} usable files, {len(report.problems)} problems"
    if report.problems:
        summary += " (" + ", ".join(f"{k} {v}" for k, v in sorted(report.reasons.items())) + ")"
    parts.append(Text(summary, style="bold green" if report.usable else "bold red"))
    return Group(*parts)
