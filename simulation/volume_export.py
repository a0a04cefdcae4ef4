"""Write each planned hospital's share of a Decathlon NIfTI data set as DICOM series with DICOM SEG (a PACS export).

Per hospital, the layout :mod:`fedward.common.data.seriesfolder` reads::

    <out>/<hospital>/case-NNNNN/series/slice-NNNN.dcm   the case's image: MR Image or CT Image
                                                         (PS3.3 A.4, A.3), one file per slice
    <out>/<hospital>/case-NNNNN/seg.dcm                  its label map: a BINARY DICOM SEG
                                                         (PS3.3 A.51), one segment per label

Each series is written from the case's **original NIfTI** image and affine
(:func:`~fedward.common.data.series_write.volume_from_nifti`,
:func:`~fedward.common.data.series_write.write_series`), not from the preprocessed grid, so
the hospital's reader redoes the simulation's preprocessing (orientation, resampling,
normalisation, padding to ``data.volume-size``). Values the NIfTI stores as integers are
stored exactly; float volumes are quantised to int16 with one Rescale Slope (a z-scored voxel
moves by about 1e-3 relative, and a voxel stored as exactly 0 may come back a hair off 0 and
so count in the MR z-score). The SEG's segments are the schema's labels, in index order
(:func:`~fedward.common.data.seg.write_seg`, reference annotations: ``MANUAL``).

**Patients.** Every case gets a synthetic patient of its hospital (``SYNTHETIC^HOSPITAL0^00001``,
:func:`~fedward.simulation.dicom_export.synthetic_patient`), fresh UIDs, and no series
description: nothing of the source's file names reaches a DICOM header.

**Validation split.** A DICOM series folder carries no split: the deployed hospital holds out
``data.val-fraction`` of its cases with seed ``derive_seed(run.seed, "holdout")``. The cases
are numbered so that this hold-out picks exactly the plan's validation cases
(:func:`~fedward.simulation.seg_export.holdout_aligned_rows`): a deployment with the export's
``run.seed``, ``data.val-fraction`` and data section trains and validates on what the
simulated hospital did, in the same order. With another seed or share the hospital re-draws
its validation cases from the same pool (same number for the same share); its training
cases then differ from the simulated hospital's by the swapped cases.

The test split (``--include-test``) is written alike to ``<out>/test``; read as a series
folder its cases are all ``train`` cases (series folders carry no split). The source's own
``val`` split is not part of the plan and is not written.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from fedward.common.choices import Modality
from fedward.common.config import RunConfig
from fedward.common.data.decathlon import DecathlonCase, read_decathlon_index
from fedward.common.data.maskfolder import FolderRead
from fedward.common.data.opening import OpenedDataset
from fedward.common.data.plan import PartitionPlan
from fedward.common.data.seg import source_datasets, write_seg
from fedward.common.data.series import read_series
from fedward.common.data.series_write import volume_from_nifti, write_series
from fedward.common.errors import DataError
from fedward.common.schema import DatasetSchema
from fedward.simulation.dicom_export import synthetic_patient
from fedward.simulation.seg_export import ExportedFolder, check_out_folder, holdout_aligned_rows, source_read

log = logging.getLogger(__name__)

SERIES_MODALITIES = frozenset({Modality.MR, Modality.CT})
"""Modalities written as series (MR Image, CT Image Storage)."""


def export_volumes(
    out: Path, found: OpenedDataset, cfg: RunConfig, plan: PartitionPlan, include_test: bool = False
) -> list[ExportedFolder]:
    """Write one DICOM series folder per planned hospital (module docstring), optionally the test split.

    Args:
        out: the folder to create the hospital folders in.
        found: the Decathlon folder as the run opened it.
        cfg: the run's config: its data section reads the source as the simulation did;
            ``run.seed`` and ``data.val-fraction`` order the cases for the deployed hold-out.
        plan: the hospitals' rows of the source's ``train`` split.
        include_test: also write the source's ``test`` cases to ``<out>/test``.

    Returns:
        The folders written, plan order (then ``test``).

    Raises:
        DataError: if a hospital folder exists and is not empty, the data set's modality is
            neither MR nor CT, or the source cannot be read as the plan read it.
    """
    read = source_read(found, cfg)
    by_name = _cases_by_name(found.path)
    train = case_ids(read, "train")
    written = []
    for hospital in plan.hospitals:
        rows, aligned = holdout_aligned_rows(hospital, cfg.data.val_fraction, cfg.run.seed)
        if not aligned:
            log.warning("%s: the deployed hospital will draw its own validation cases", hospital.name)
        cases = [(by_name[train[index]], split) for index, split in rows]
        written.append(write_series_folder(Path(out) / hospital.name, found.path, cases, read.schema, hospital.name))
    if include_test and "test" in read.splits:
        cases = [(by_name[name], "test") for name in case_ids(read, "test")]
        written.append(write_series_folder(Path(out) / "test", found.path, cases, read.schema, "test"))
    return written


def case_ids(read: FolderRead, split: str) -> tuple[str, ...]:
    """The case name of every row of ``read``'s split ``split``, row order (the reader's own record).

    Raises:
        DataError: if the reader recorded no case names for the split.
    """
    ids = read.cases.get(split, ())
    if len(ids) != len(read.splits[split]):
        raise DataError(f"the {split} split has {len(read.splits[split])} rows but {len(ids)} recorded cases")
    return ids


def _cases_by_name(folder: Path) -> dict[str, DecathlonCase]:
    cases = read_decathlon_index(folder).cases
    by_name = {case.case: case for case in cases}
    if len(by_name) != len(cases):
        raise DataError(f"{folder.name}: several dataset.json entries share a case name; cases cannot be told apart")
    return by_name


def write_series_folder(
    folder: Path, source: Path, rows: Sequence[tuple[DecathlonCase, str]], schema: DatasetSchema, hospital: str
) -> ExportedFolder:
    """Write ``rows``' cases as ``case-NNNNN`` series + SEG folders, in row order.

    Args:
        folder: the folder to create (must not exist or be empty).
        source: the Decathlon folder.
        rows: each case with the split it plays (counted only: series folders carry no split).
        schema: the data set's schema (modality, label names).
        hospital: the hospital's name (Institution Name, synthetic patients).

    Returns:
        The folder with its series and SEG counts.

    Raises:
        DataError: if ``folder`` is not empty, the modality is neither MR nor CT, or a
            case's NIfTI files cannot be read.
    """
    if schema.modality not in SERIES_MODALITIES:
        raise DataError(f"volumes are exported as MR or CT series; this data set's modality is {schema.modality}")
    folder = check_out_folder(folder)
    for number, (case, _) in enumerate(rows, start=1):
        patient_name, patient_id = synthetic_patient(hospital, number)
        image, affine = _nifti(source, case.image)
        labels, label_affine = _nifti(source, case.label)
        volume, spacing, origin = volume_from_nifti(image, affine)
        label_map, _, _ = volume_from_nifti(np.rint(labels).astype(np.uint8), label_affine)
        dest = folder / f"case-{number:05d}"
        files = write_series(
            volume,
            spacing,
            dest / "series",
            patient_id=patient_id,
            patient_name=patient_name,
            modality=str(schema.modality),
            institution=hospital,
            origin=origin,
        )
        write_seg(
            label_map, source_datasets(read_series(files)), schema.classes, dest / "seg.dcm", algorithm_type="MANUAL"
        )
    log.info("series folder written: %d series with their SEGs", len(rows))
    return ExportedFolder(folder, {"series": len(rows), "SEG files": len(rows)}, dict(Counter(s for _, s in rows)))


def _nifti(source: Path, relative: str) -> tuple[np.ndarray, np.ndarray]:
    """Voxels (I, J, K) as stored (scaled, native dtype when unscaled) and the (4, 4) affine of one NIfTI file.

    Raises:
        DataError: if the file cannot be read as a 3D NIfTI image (the reader read it: it changed).
    """
    try:
        image = nib.load(source / relative)
        voxels = np.asanyarray(image.dataobj)  # type: ignore[attr-defined]
        affine = np.asarray(image.affine, dtype=np.float64)  # type: ignore[attr-defined]
    except (ImageFileError, OSError, ValueError, EOFError) as err:
        raise DataError(f"{relative} cannot be read ({type(err).__name__}); export again") from None
    if voxels.ndim == 4 and voxels.shape[3] == 1:
        voxels = voxels[..., 0]
    return voxels, affine
