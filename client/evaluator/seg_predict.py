"""Predict label maps with a segmentation model and write them as PNG masks, NIfTI label maps or DICOM SEG.

What each input becomes (in ``out_dir``, which is created):

* a 2D image (PNG, JPEG, a single DICOM image) given to a 2D model:
  ``<stem>_seg.png``, an 8-bit grey PNG of the label values (0 background, 1..K-1), the
  size of the input image (predicted on the model's grid, resized back nearest-neighbour);
* a NIfTI volume (``.nii``, ``.nii.gz``) given to a 3D model: ``<stem>_seg.nii.gz``, a
  uint8 label map with the input's shape, affine and header (the input's voxels);
* a DICOM series folder given to a 3D model: ``<folder>_seg.dcm`` (``<folder>-series<k>_seg.dcm``
  when it holds several series), a BINARY DICOM SEG referencing the series' slices,
  one segment per structure (:func:`~fedward.common.data.seg.write_seg`);
* a folder holding NIfTI files, given to a 3D model: each NIfTI file below it.

Preprocessing and the way back to the input's grid are :mod:`fedward.client.evaluator.seg_input`;
the network runs in :mod:`fedward.client.evaluator.segmenter`. Each case reports its output
file and, per structure, its volume: mm³ for volumes (voxels times the voxel volume of the
input's affine), pixels for 2D images. A file that cannot be used gets a reason and never
stops the others. Nothing read from a header (names, UIDs, dates) is reported or logged.

Each input (image, NIfTI file, series) is checked against the model's schema first (the
modality guard; :mod:`fedward.client.evaluator.input_kind`): one of another modality,
channels or dimensionality is segmented with a warning, or with ``strict`` refused
(reason ``modality-mismatch``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image

from fedward.client.evaluator.input_kind import check_input, file_kind, nifti_kind, refusal, series_kind
from fedward.client.evaluator.loaded_model import LoadedModel
from fedward.client.evaluator.model_dir import ModelDir
from fedward.client.evaluator.predict import expand_files
from fedward.client.evaluator.seg_input import is_nifti, nifti_stem, planar_input, read_nifti, volume_input
from fedward.client.evaluator.segmenter import Segmenter, segmenter_for
from fedward.common.data.dicom import Reason, UnusableFileError
from fedward.common.data.modality import InputKind, ModalityMismatchError
from fedward.common.data.seg import source_datasets, write_seg
from fedward.common.data.series import SeriesVolume, ras_affine, read_series, scan_series
from fedward.common.errors import DataError

log = logging.getLogger(__name__)

SUFFIX = "_seg"
"""Appended to an input's stem to name its label map."""


@dataclass(frozen=True, slots=True)
class SegmentedCase:
    """One input's label map, or why it gave none.

    Attributes:
        input: the file or series as given (a series: its folder, and its number when the
            folder holds several).
        output: the label map written; ``None`` on failure.
        format: ``png``, ``nifti`` or ``dicom-seg``.
        unit: unit of ``volumes``: ``pixels`` (2D) or ``mm3`` (volumes).
        volumes: structure name to its predicted size (background left out).
        reason: failure code (a :class:`~fedward.common.data.dicom.Reason` value).
        message: one-line explanation of the failure (no patient data).
        warning: why the input may not fit the model (modality, channels, dimensions);
            ``None`` when it fits or nothing says.
    """

    input: str
    output: Path | None = None
    format: str = ""
    unit: str = ""
    volumes: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    message: str | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        """Whether a label map was written."""
        return self.output is not None


@dataclass(slots=True)
class SegPredictionReport:
    """Every case of a ``fedward predict`` call on a segmentation model.

    Attributes:
        model: one line describing the model.
        classes: label names, index 0 the background.
        out_dir: where the label maps were written.
        cases: one per image, volume or series (or failed input), in the order given.
        notes: what was set aside in DICOM folders (counts only).
    """

    model: str
    classes: tuple[str, ...]
    out_dir: Path
    cases: list[SegmentedCase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[SegmentedCase]:
        """The inputs that gave no label map."""
        return [c for c in self.cases if not c.ok]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable form (``--json``)."""
        return {
            "model": self.model,
            "task": "segmentation",
            "classes": list(self.classes),
            "out_dir": str(self.out_dir),
            "notes": list(self.notes),
            "predictions": [
                {
                    "input": c.input,
                    "output": str(c.output),
                    "format": c.format,
                    "unit": c.unit,
                    "volumes": c.volumes,
                    "warning": c.warning,
                }
                for c in self.cases
                if c.ok
            ],
            "failed": [
                {"input": c.input, "reason": c.reason, "message": c.message, "warning": c.warning} for c in self.failed
            ],
        }

    @property
    def warned(self) -> list[SegmentedCase]:
        """The cases whose input may not fit the model."""
        return [c for c in self.cases if c.warning]


def predict_segmentations(
    loaded: LoadedModel, inputs: Sequence[Path], out_dir: Path, *, strict: bool = False
) -> SegPredictionReport:
    """Label maps of every input, written into ``out_dir`` (see the module docstring).

    Args:
        loaded: a segmentation model.
        inputs: 2D models: image files or folders of them; 3D models: NIfTI files, folders
            of NIfTI files, or DICOM series folders.
        out_dir: folder for the label maps (created; files of the same name are replaced).
        strict: refuse inputs of another modality, channels or dimensionality instead of
            segmenting them with a warning.

    Returns:
        The report, cases in the order of ``inputs``.
    """
    model_dir = loaded.model_dir
    report = SegPredictionReport(model_dir.describe(), model_dir.classes, Path(out_dir))
    report.out_dir.mkdir(parents=True, exist_ok=True)
    writer = _CaseWriter(model_dir, segmenter_for(loaded), report, strict)
    if model_dir.schema.spatial_dims == 2:
        for path in expand_files(inputs):
            writer.guarded(str(path), functools.partial(writer.image, path), functools.partial(file_kind, path))
        return report
    for path in map(Path, inputs):
        if path.is_dir():
            niftis = sorted(p for p in path.rglob("*") if p.is_file() and is_nifti(p))
            for nifti in niftis:
                writer.guarded(str(nifti), functools.partial(writer.nifti, nifti), functools.partial(nifti_kind, nifti))
            if not niftis:
                writer.series_folder(path)
        elif is_nifti(path):
            writer.guarded(str(path), functools.partial(writer.nifti, path), functools.partial(nifti_kind, path))
        else:
            message = "a 3D model takes NIfTI files (.nii, .nii.gz) or DICOM series folders"
            report.cases.append(SegmentedCase(str(path), reason=Reason.UNSUPPORTED_IMAGE.value, message=message))
    return report


def label_volumes(labels: np.ndarray, classes: Sequence[str], unit_size: float) -> dict[str, float]:
    """Each structure's size: voxels (or pixels) of its label times ``unit_size`` (mm³ per voxel, or 1).

    Args:
        labels: integer label map (any shape), values 0..K-1.
        classes: the K label names, index 0 the background (left out).
        unit_size: size of one voxel or pixel.
    """
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(classes))
    return {name: float(counts[i]) * unit_size for i, name in enumerate(classes) if i > 0}


def series_label_map(segmenter: Segmenter, series: SeriesVolume, model_dir: ModelDir) -> np.ndarray:
    """uint8 (D, H, W) label map of a DICOM series, on its slices (``series.array``'s grid)."""
    prepared = volume_input(series.array, ras_affine(series.affine), model_dir)
    return prepared.restore(segmenter.probabilities(prepared.image)[0])


class _CaseWriter:
    """Predicts one input at a time and appends its case to the report."""

    def __init__(self, model_dir: ModelDir, segmenter: Segmenter, report: SegPredictionReport, strict: bool) -> None:
        self.model_dir = model_dir
        self.segmenter = segmenter
        self.report = report
        self.strict = strict
        self.used: set[str] = set()

    def guarded(self, name: str, predict: Callable[[], SegmentedCase], kind: Callable[[], InputKind | None]) -> None:
        """Guard the input (``kind()``), run ``predict() -> SegmentedCase`` and record its case, or why it failed."""
        warning = None
        try:
            warning = check_input(self.model_dir.schema, kind(), name, strict=self.strict)
            case = predict()
        except ModalityMismatchError as err:
            case = SegmentedCase(name, reason=Reason.MODALITY_MISMATCH.value, message=refusal(err, name))
        except UnusableFileError as err:
            case = SegmentedCase(name, reason=err.reason.value, message=str(err))
        except DataError as err:
            case = SegmentedCase(name, reason=Reason.UNREADABLE.value, message=str(err))
        except Exception as err:  # an unexpected reader failure must not stop the other inputs
            log.debug("predicting %s failed", name, exc_info=True)
            message = f"cannot be segmented ({type(err).__name__})"
            case = SegmentedCase(name, reason=Reason.UNREADABLE.value, message=message)
        self.report.cases.append(dataclasses.replace(case, warning=warning) if warning else case)

    def output(self, stem: str, suffix: str) -> Path:
        """``out_dir/<stem>_seg<suffix>``, numbered when this call already wrote that name."""
        name, number = f"{stem}{SUFFIX}{suffix}", 1
        while name in self.used:
            number += 1
            name = f"{stem}-{number}{SUFFIX}{suffix}"
        self.used.add(name)
        return self.report.out_dir / name

    def image(self, path: Path) -> SegmentedCase:
        prepared = planar_input(path, self.model_dir)
        labels = prepared.restore(self.segmenter.probabilities(prepared.image)[0])
        out = self.output(path.stem, ".png")
        Image.fromarray(labels, mode="L").save(out)
        return SegmentedCase(str(path), out, "png", "pixels", label_volumes(labels, self.model_dir.classes, 1.0))

    def nifti(self, path: Path) -> SegmentedCase:
        volume = read_nifti(path)
        prepared = volume_input(volume.array, volume.affine, self.model_dir)
        labels = prepared.restore(self.segmenter.probabilities(prepared.image)[0])
        header = volume.header
        header.set_data_dtype(np.uint8)
        image = nib.Nifti1Image(labels, volume.affine, header)  # type: ignore[no-untyped-call]
        image.header.set_slope_inter(1.0, 0.0)  # type: ignore[no-untyped-call]
        out = self.output(nifti_stem(path), ".nii.gz")
        nib.save(image, out)
        voxel = float(abs(np.linalg.det(volume.affine[:3, :3])))
        return SegmentedCase(str(path), out, "nifti", "mm3", label_volumes(labels, self.model_dir.classes, voxel))

    def series_folder(self, folder: Path) -> None:
        try:
            scan = scan_series(folder)
        except DataError as err:
            self.report.cases.append(SegmentedCase(str(folder), reason=Reason.UNREADABLE.value, message=str(err)))
            return
        if scan.problems:
            self.report.notes.append(f"{folder}: {len(scan.problems)} files that are not series images set aside")
        if not scan.series:
            message = "no NIfTI file and no DICOM series image in the folder"
            self.report.cases.append(SegmentedCase(str(folder), reason=Reason.NOT_IMAGE.value, message=message))
            return
        several = len(scan.series) > 1
        for number, files in enumerate(scan.series.values(), start=1):
            name = f"{folder} (series {number})" if several else str(folder)
            stem = f"{folder.name}-series{number}" if several else folder.name
            self.guarded(
                name, functools.partial(self.series, files, folder, name, stem), functools.partial(series_kind, files)
            )

    def series(self, files: list[Path], folder: Path, name: str, stem: str) -> SegmentedCase:
        series = read_series(files, root=folder)
        labels = series_label_map(self.segmenter, series, self.model_dir)
        out = write_seg(labels, source_datasets(series), self.model_dir.classes, self.output(stem, ".dcm"))
        voxel = float(np.prod(series.spacing))
        return SegmentedCase(name, out, "dicom-seg", "mm3", label_volumes(labels, self.model_dir.classes, voxel))
