"""Read and write DICOM SEG label maps of a DICOM series, with highdicom.

Standards: DICOM PS3.3 C.8.20 (Segmentation), A.51 (Segmentation IOD), through highdicom
(``highdicom.seg.Segmentation``, ``highdicom.seg.segread``; https://highdicom.readthedocs.io).

*Writing* (:func:`write_seg`): a BINARY Segmentation with **one segment per foreground label
of the schema**, present or not: segment number ``i`` is label index ``i`` and its Segment
Label is ``label_names[i]`` (index 0, the background, has no segment). A segment without
voxels has no frames (empty frames are omitted), so the segment list always says what the
federation's labels are. Segmented property codes (SNOMED CT, from ``pydicom.sr.codedict.codes``,
CID 7150/7151): labels named like a lesion (:data:`LESION_WORDS`) are
*Morphologically Abnormal Structure* / *Lesion*, every other label *Tissue* / *Tissue*; the
Segment Label carries the name. Frames reference their source slices (Derivation Image
Sequence) and keep their spatial locations.

*Reading* (:func:`read_seg`): each segment goes to the label index whose name equals its
Segment Label (case-insensitive), else to the index equal to its segment number (a
segment named like the background is ignored). Where
segments overlap, the higher label index wins (a lesion drawn inside its organ stays a
lesion). BINARY, FRACTIONAL (>= half the maximum value) and LABELMAP objects are read;
frames must reference slices of the given series and lie at those slices' positions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from fedward.common.data.dicom import Reason, UnusableFileError, read_dicom
from fedward.common.data.series import (
    ORIENTATION_TOLERANCE,
    SPACING_TOLERANCE,
    SeriesScan,
    SeriesVolume,
    naming,
    relative_name,
)
from fedward.common.version import fedward_version

log = logging.getLogger(__name__)

LESION_WORDS = ("lesion", "tumor", "tumour", "cancer", "carcinoma", "metasta", "nodule", "neoplasm", "mass", "edema")
"""A label whose name contains one of these is coded as a lesion, else as tissue."""
POSITION_TOLERANCE = 0.1
"""A SEG frame lies at its source slice when their positions differ by less than this share of a pixel."""
_HIGHDICOM_ERRORS = (ValueError, RuntimeError, KeyError, IndexError, AttributeError, TypeError)


def source_datasets(series: SeriesVolume) -> list[Dataset]:
    """The headers (no pixel data) of ``series``' slices, slice order, for :func:`write_seg`."""
    return [read_dicom(path, pixels=False) for path in series.files]


def find_seg_for(scan: SeriesScan, series: SeriesVolume | str) -> list[Path]:
    """The SEG files of ``scan`` whose Referenced Series Sequence names ``series`` (a volume or its UID)."""
    uid = series if isinstance(series, str) else series.series_uid
    return [seg.path for seg in scan.segs if uid in seg.referenced_series]


def read_seg(path: Path, series: SeriesVolume, label_names: Sequence[str], *, root: Path | None = None) -> np.ndarray:
    """The label map a DICOM SEG draws on ``series`` (PS3.3 C.8.20).

    Args:
        path: the SEG file.
        series: the volume it segments (:func:`~fedward.common.data.series.read_series`).
        label_names: the schema's label names, index 0 the background.
        root: folder that messages name ``path`` relative to (default: its own folder).

    Returns:
        uint8 (D, H, W) label map aligned with ``series.array``: 0 background, else the
        label index of the segment covering the voxel.

    Raises:
        UnusableFileError: ``seg-references-other-series`` if the SEG does not reference
            ``series``; ``mask-geometry-mismatch`` if its frames reference other instances,
            differ in size, orientation or position from their slices, or cannot be
            mapped; ``label-value-out-of-range`` for a segment matching no label;
            ``not-dicom``, ``unsupported-image`` and the like for a file that is not a SEG.
    """
    path = Path(path)
    relative = relative_name(path, root) if root is not None else path.name
    with naming(relative):
        seg = _open(path)
        _check_references(seg, series)
        _check_geometry(seg, series)
        targets = _segment_labels(seg, label_names)
        return _label_map(seg, series, targets)


def _open(path: Path) -> hd.seg.Segmentation:
    ds = read_dicom(path)
    if ds.get("Modality") != "SEG":
        raise UnusableFileError(Reason.UNSUPPORTED_IMAGE, "not a DICOM SEG (Modality is not SEG)")
    try:
        return hd.seg.Segmentation.from_dataset(ds, copy=False)
    except _HIGHDICOM_ERRORS as err:
        raise UnusableFileError(Reason.UNSUPPORTED_IMAGE, f"DICOM SEG cannot be read ({type(err).__name__})") from None


def _check_references(seg: hd.seg.Segmentation, series: SeriesVolume) -> None:
    """The SEG references ``series``, and every frame's source slice is one of its instances."""
    referenced = {str(item.get("SeriesInstanceUID", "")) for item in seg.get("ReferencedSeriesSequence", [])}
    if series.series_uid not in referenced:
        raise UnusableFileError(Reason.SEG_OTHER_SERIES, "DICOM SEG references another series than the one given")
    ours, theirs = str(seg.get("FrameOfReferenceUID", "")), series.frame_of_reference_uid
    if ours and theirs and ours != theirs:
        raise UnusableFileError(Reason.MASK_MISMATCH, "DICOM SEG is in another frame of reference than its series")
    instances = set(series.sop_instance_uids)
    frames = _frame_sources(seg)
    if len(frames) != int(seg.get("NumberOfFrames", 1) or 1):
        raise UnusableFileError(Reason.MASK_MISMATCH, "SEG frames lack their per-frame functional groups")
    for number, sources in enumerate(frames, start=1):
        if not sources:
            raise UnusableFileError(Reason.MASK_MISMATCH, f"SEG frame {number} references no source slice")
        if not sources <= instances:
            raise UnusableFileError(Reason.MASK_MISMATCH, f"SEG frame {number} references a slice not in the series")


def _frame_sources(seg: Dataset) -> list[set[str]]:
    """Per frame, the SOP Instance UIDs its Derivation Image Sequence names."""
    out = []
    for item in seg.get("PerFrameFunctionalGroupsSequence", []):
        out.append(
            {
                str(source.ReferencedSOPInstanceUID)
                for derivation in item.get("DerivationImageSequence", [])
                for source in derivation.get("SourceImageSequence", [])
                if "ReferencedSOPInstanceUID" in source
            }
        )
    return out


def _frame_value(seg: Dataset, frame: int, sequence: str, keyword: str) -> np.ndarray | None:
    """float64 value of ``keyword`` in functional group ``sequence`` of frame ``frame`` (0-based), else shared."""
    per_frame = seg.get("PerFrameFunctionalGroupsSequence", [])
    groups = [per_frame[frame]] if frame < len(per_frame) else []
    for group in [*groups, *seg.get("SharedFunctionalGroupsSequence", [])]:
        items = group.get(sequence)
        if items and keyword in items[0]:
            try:
                return np.array([float(v) for v in items[0][keyword].value], dtype=np.float64)
            except (TypeError, ValueError):
                raise UnusableFileError(
                    Reason.MASK_MISMATCH, f"SEG frame {frame + 1} has an invalid {keyword}"
                ) from None
    return None


def _check_geometry(seg: hd.seg.Segmentation, series: SeriesVolume) -> None:
    """Frames have the series' size, orientation and pixel spacing and lie on their source slices."""
    if (int(seg.Rows), int(seg.Columns)) != series.array.shape[1:]:
        raise UnusableFileError(Reason.MASK_MISMATCH, "SEG frames differ in Rows x Columns from the series' slices")
    positions = series.slice_positions()
    index = {uid: k for k, uid in enumerate(series.sop_instance_uids)}
    pixel = np.array(series.spacing[1:])
    for frame, sources in enumerate(_frame_sources(seg)):
        orientation = _frame_value(seg, frame, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = _frame_value(seg, frame, "PixelMeasuresSequence", "PixelSpacing")
        where = _frame_value(seg, frame, "PlanePositionSequence", "ImagePositionPatient")
        if (
            (orientation is not None and np.max(np.abs(orientation - series.orientation())) > ORIENTATION_TOLERANCE)
            or (spacing is not None and np.max(np.abs(spacing / pixel - 1)) > SPACING_TOLERANCE)
            or (
                where is not None
                and any(
                    np.linalg.norm(where - positions[index[uid]]) > POSITION_TOLERANCE * pixel.min() for uid in sources
                )
            )
        ):
            raise UnusableFileError(
                Reason.MASK_MISMATCH,
                f"SEG frame {frame + 1} differs in orientation, pixel spacing or position from its source slice",
            )


def _segment_labels(seg: hd.seg.Segmentation, label_names: Sequence[str]) -> dict[int, int]:
    """Segment number -> label index (0: the segment is background and ignored)."""
    lowered = [name.strip().lower() for name in label_names]
    targets = {}
    for number in seg.segment_numbers:
        label = str(seg.get_segment_description(number).get("SegmentLabel", "")).strip().lower()
        if label in lowered:
            targets[number] = lowered.index(label)
        elif 1 <= number < len(label_names):
            targets[number] = number
        else:
            raise UnusableFileError(
                Reason.LABEL_OUT_OF_RANGE,
                f"segment {number} matches no label by name or number ({len(label_names)} labels with background)",
            )
    return targets


def _label_map(seg: hd.seg.Segmentation, series: SeriesVolume, targets: dict[int, int]) -> np.ndarray:
    fractional = str(seg.get("SegmentationType", "BINARY")) == "FRACTIONAL"
    threshold = int(seg.get("MaximumFractionalValue", 255)) / 2 if fractional else 1
    out = np.zeros(series.array.shape, np.uint8)
    covered = np.zeros(series.array.shape, bool)
    overlap = False
    for number, target in sorted(targets.items(), key=lambda item: item[1]):
        try:
            pixels = seg.get_pixels_by_source_instance(
                list(series.sop_instance_uids),
                segment_numbers=[number],
                ignore_spatial_locations=True,  # checked by _check_geometry
                assert_missing_frames_are_empty=True,
                rescale_fractional=False,
                dtype=np.uint8,
            )
        except _HIGHDICOM_ERRORS as err:
            raise UnusableFileError(
                Reason.MASK_MISMATCH, f"SEG frames cannot be mapped onto the series' slices ({type(err).__name__})"
            ) from None
        mask = pixels[..., 0] >= threshold
        overlap = overlap or bool(np.any(covered & mask & (out != target)))
        covered |= mask
        if target:
            out[mask] = target
    if overlap:
        log.warning("DICOM SEG segments overlap; the higher label index wins")
    return out


def write_seg(
    label_map: np.ndarray,
    source_datasets: Sequence[Dataset],
    label_names: Sequence[str],
    out_path: Path,
    *,
    algorithm_name: str = "fedward",
    algorithm_version: str | None = None,
    algorithm_type: str = "AUTOMATIC",
    series_number: int = 100,
) -> Path:
    """Write ``label_map`` as a BINARY DICOM SEG of the series ``source_datasets`` (PS3.3 A.51, C.8.20).

    Args:
        label_map: uint8 (D, H, W) label indices, slice ``d`` drawn on ``source_datasets[d]``.
        source_datasets: the series' slices (headers suffice), the label map's slice order.
        label_names: label names, index 0 the background; one segment per other label.
        out_path: the file to write (parent folders are created).
        algorithm_name: Segment Algorithm Name and Manufacturer Model Name.
        algorithm_version: algorithm and software version (default: fedward's version).
        algorithm_type: ``AUTOMATIC``, ``SEMIAUTOMATIC`` or ``MANUAL`` (reference annotations:
            no algorithm identification is written).
        series_number: Series Number of the SEG series.

    Returns:
        ``out_path``.

    Raises:
        UnusableFileError: ``mask-geometry-mismatch`` if the label map does not have one
            slice per source dataset of their Rows x Columns; ``label-value-out-of-range``
            for a value >= ``len(label_names)``.
    """
    label_map = _checked_label_map(label_map, source_datasets, len(label_names))
    version = algorithm_version or fedward_version()
    seg = hd.seg.Segmentation(
        source_images=list(source_datasets),
        pixel_array=label_map,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_descriptions(label_names, algorithm_name, version, algorithm_type),
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="fedward",
        manufacturer_model_name=algorithm_name,
        software_versions=version,
        device_serial_number="0",
        content_label="LABELS",
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out_path, enforce_file_format=True)
    log.debug("wrote a DICOM SEG of %d segments over %d slices", len(label_names) - 1, len(label_map))
    return out_path


def _checked_label_map(label_map: np.ndarray, source_datasets: Sequence[Dataset], labels: int) -> np.ndarray:
    """``label_map`` as uint8 (D, H, W) if it has one slice per source dataset and values below ``labels``."""
    array = np.asarray(label_map)
    first = source_datasets[0] if source_datasets else Dataset()
    shape = (len(source_datasets), int(first.get("Rows", 0)), int(first.get("Columns", 0)))
    if not source_datasets or array.shape != shape:
        raise UnusableFileError(
            Reason.MASK_MISMATCH, f"label map {array.shape} does not fit its series {shape} (D, H, W)"
        )
    if array.size and (array.min() < 0 or array.max() >= labels):
        raise UnusableFileError(Reason.LABEL_OUT_OF_RANGE, f"label map values must be below {labels}")
    return array.astype(np.uint8)


def _descriptions(
    label_names: Sequence[str], algorithm_name: str, version: str, algorithm_type: str
) -> list[hd.seg.SegmentDescription]:
    kind = hd.seg.SegmentAlgorithmTypeValues(algorithm_type)
    algorithm = (
        None
        if kind is hd.seg.SegmentAlgorithmTypeValues.MANUAL
        else hd.AlgorithmIdentificationSequence(
            name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=version
        )
    )
    out = []
    for number, name in enumerate(label_names[1:], start=1):
        lesion = any(word in name.lower() for word in LESION_WORDS)
        out.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name[:64],
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure if lesion else codes.SCT.Tissue,
                segmented_property_type=codes.SCT.Lesion if lesion else codes.SCT.Tissue,
                algorithm_type=kind,
                algorithm_identification=algorithm,
            )
        )
    return out
