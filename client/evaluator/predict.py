"""Per-image probabilities of a model on image files: DICOM, PNG/JPEG and ``.npz``.

Files are decoded with fedward's readers and preprocessed as training does
(:class:`~fedward.client.evaluator.model_dir.Preprocessing`):

* DICOM (any other extension): :func:`fedward.common.data.files.decode_file` (display
  pipeline of :mod:`fedward.common.data.dicom`), middle frame of multi-frame objects;
* PNG/JPEG: the same function (Pillow);
* ``.npz``: uint8 arrays of shape (N, H, W) or (N, H, W, 3): the ``images`` array if there
  is one, else ``test_images`` (MedMNIST's test split), else every ``*_images`` array; the
  report says which were used, and every image is a row ``file[key:index]``.

Probabilities are calibrated (the logits divided by the model's temperature) and each
image's decision is taken at the model's operating point
(:attr:`~fedward.client.evaluator.model_dir.ModelDir.operating`: the thresholds the run
chose on validation, else 0.5), or at ``threshold`` for every label when one is given;
the report states the point once (:attr:`PredictionReport.operating`).

A file that cannot be used gets a one-line reason (the stable codes of
:class:`~fedward.common.data.dicom.Reason`) and never stops the other files.

Every input is checked against the model's schema first (the modality guard, once per
file, per ``.npz`` array; :mod:`fedward.client.evaluator.input_kind`): an image whose
header names another modality, or whose channels or dimensionality differ from the
model's, is predicted with a warning, or with ``strict`` refused (reason
``modality-mismatch``).
:class:`LoadModelInputd` is the same decoding as a MONAI dictionary transform, for the
MONAI bundle that :mod:`fedward.client.evaluator.monai_bundle` writes.
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from fedward.client.evaluator.card_operating_point import AppliedPoint
from fedward.client.evaluator.input_kind import check_input, file_kind, refusal
from fedward.client.evaluator.loaded_model import LoadedModel
from fedward.common.choices import FrameMode, Task
from fedward.common.data.dicom import Reason, UnusableFileError
from fedward.common.data.files import decode_file, to_model_input
from fedward.common.data.folder import MANIFEST
from fedward.common.data.images import RESIZE_CHUNK
from fedward.common.data.modality import InputKind, ModalityMismatchError
from fedward.common.schema import DatasetSchema

log = logging.getLogger(__name__)

NPZ_SUFFIX = ".npz"


@dataclass(frozen=True, slots=True)
class Prediction:
    """One image's result, or why the file gave none.

    Attributes:
        file: the file as given (``.npz`` images: ``file[key:index]``).
        probabilities: one per class (softmax, sums to 1) or label (sigmoid), calibrated
            (temperature applied); ``None`` on failure.
        predicted: the predicted class at the operating point (binary: P(class 1) >=
            threshold; multi-class: the most probable; multi-label: the labels >= their
            thresholds joined by ``|``).
        reason: failure code (a :class:`~fedward.common.data.dicom.Reason` value).
        message: one-line explanation of the failure (no patient data).
        warning: why the image may not fit the model (modality, channels, dimensions);
            ``None`` when it fits or nothing says.
    """

    file: str
    probabilities: tuple[float, ...] | None = None
    predicted: str | None = None
    reason: str | None = None
    message: str | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the image was predicted."""
        return self.probabilities is not None


@dataclass(slots=True)
class PredictionReport:
    """Every row of a ``fedward predict`` call.

    Attributes:
        model: one line describing the model (run, round, integrity).
        task: the task.
        classes: class (label) names, probability order.
        rows: one per image, or per file that failed, in the order given.
        notes: what was read from each ``.npz`` (which arrays).
        operating: the temperature and thresholds the rows were computed at, and their
            source (``None``: not recorded).
    """

    model: str
    task: Task
    classes: tuple[str, ...]
    rows: list[Prediction] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    operating: AppliedPoint | None = None

    @property
    def failed(self) -> list[Prediction]:
        """The rows whose file could not be predicted."""
        return [r for r in self.rows if not r.ok]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable form (``--json``)."""
        return {
            "model": self.model,
            "task": self.task.value,
            "classes": list(self.classes),
            "operating_point": None if self.operating is None else self.operating.to_json(),
            "notes": list(self.notes),
            "predictions": [
                {
                    "file": r.file,
                    "probabilities": dict(zip(self.classes, r.probabilities, strict=True)),
                    "predicted": r.predicted,
                    "warning": r.warning,
                }
                for r in self.rows
                if r.probabilities is not None
            ],
            "failed": [
                {"file": r.file, "reason": r.reason, "message": r.message, "warning": r.warning} for r in self.failed
            ],
        }

    @property
    def warned(self) -> list[Prediction]:
        """The rows whose image may not fit the model."""
        return [r for r in self.rows if r.warning]


def load_model_input(path: Path, channels: int, image_size: int, frames: FrameMode = FrameMode.MIDDLE) -> torch.Tensor:
    """Decode a DICOM or PNG/JPEG file to model input, as training does.

    Returns:
        uint8 (F, C, S, S); F = 1 unless ``frames`` is ``all`` and the file has several.

    Raises:
        UnusableFileError: with the reason the file cannot be used.
    """
    return to_model_input(decode_file(Path(path), frames), channels, image_size)


def predict_files(
    loaded: LoadedModel, files: Sequence[Path], threshold: float | None = None, *, strict: bool = False
) -> PredictionReport:
    """Calibrated probabilities and decisions of every image in ``files``; failures are rows with a reason.

    Args:
        loaded: the model.
        files: DICOM, PNG/JPEG or ``.npz`` files; a folder stands for the files below it
            (hidden files and ``labels.csv`` left out).
        threshold: decision threshold for the ``predicted`` column of every label (binary,
            multi-label), in [0, 1]; ``None``: the model's operating point.
        strict: refuse (reason ``modality-mismatch``) inputs whose modality, channels or
            dimensionality do not fit the model, instead of predicting them with a warning.

    Returns:
        The report, rows in the order of ``files``.

    Raises:
        DataError: if ``threshold`` is outside [0, 1].
    """
    model_dir = loaded.model_dir
    operating = model_dir.operating.override(threshold)
    report = PredictionReport(model_dir.describe(), model_dir.task, model_dir.classes, operating=operating)
    inputs: list[_Input] = []
    slots: list[Prediction | None] = []  # None: filled with the probabilities below
    for path in expand_files(files):
        try:
            items = _file_inputs(loaded, path, report, strict)
        except ModalityMismatchError as err:
            reason = Reason.MODALITY_MISMATCH.value
            slots.append(Prediction(str(path), reason=reason, message=refusal(err, str(path))))
            continue
        except UnusableFileError as err:
            slots.append(Prediction(str(path), reason=err.reason.value, message=str(err)))
            continue
        except Exception as err:  # an unexpected decoder failure must not stop the other files
            log.debug("decoding %s failed", path, exc_info=True)
            message = f"cannot be decoded ({type(err).__name__})"
            slots.append(Prediction(str(path), reason=Reason.UNREADABLE.value, message=message))
            continue
        inputs += items
        slots += [None] * len(items)
    tensors = [item.tensor[:1] for item in inputs]
    probabilities = (
        loaded.probabilities(torch.cat(tensors)) if tensors else np.empty((0, len(model_dir.classes)), np.float32)
    )
    done = iter(zip(inputs, probabilities, strict=True))
    for slot in slots:
        if slot is not None:
            report.rows.append(slot)
            continue
        item, row = next(done)
        values = tuple(float(v) for v in row)
        decision = _decision(values, operating)
        report.rows.append(Prediction(item.name, values, decision, warning=item.warning))
    return report


@dataclass(frozen=True, slots=True)
class _Input:
    """One image ready for the model: its row name, uint8 (F, C, S, S) tensor and the guard's warning."""

    name: str
    tensor: torch.Tensor
    warning: str | None = None


def _file_inputs(loaded: LoadedModel, path: Path, report: PredictionReport, strict: bool) -> list[_Input]:
    """The model inputs of one file, guarded (see :func:`predict_files`); ``.npz`` notes go to ``report``.

    Raises:
        ModalityMismatchError: with ``strict``, an input that does not fit the model.
        UnusableFileError: a file that cannot be used.
    """
    schema, prep = loaded.model_dir.schema, loaded.model_dir.preprocessing
    if path.suffix.lower() == NPZ_SUFFIX:
        items, note = _npz_inputs(path, prep.channels, prep.image_size, (schema, strict))
        report.notes.append(note)
        return items
    warning = check_input(schema, file_kind(path), str(path), strict=strict)
    return [_Input(str(path), load_model_input(path, prep.channels, prep.image_size, FrameMode.MIDDLE), warning)]


def expand_files(files: Sequence[Path]) -> list[Path]:
    """``files`` with every folder replaced by the files below it (hidden files and ``labels.csv`` left out)."""
    out: list[Path] = []
    for path in map(Path, files):
        if path.is_dir():
            out += [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.name != MANIFEST and not any(x.startswith(".") for x in p.relative_to(path).parts)
            ]
        else:
            out.append(path)
    return out


def _decision(values: tuple[float, ...], operating: AppliedPoint) -> str:
    """The predicted class of one image's calibrated probabilities at ``operating``'s thresholds."""
    classes, cuts = operating.classes, operating.thresholds()
    if operating.task is Task.BINARY:
        return classes[1] if values[1] >= cuts[0] else classes[0]
    if operating.task is Task.MULTICLASS:
        return classes[int(np.argmax(values))]
    return "|".join(c for c, v, t in zip(classes, values, cuts, strict=True) if v >= t) or "(none)"


def _npz_inputs(
    path: Path, channels: int, image_size: int, guard: tuple[DatasetSchema, bool]
) -> tuple[list[_Input], str]:
    """Model inputs (one (1, C, S, S) uint8 tensor per image) of an ``.npz``, and which arrays were read.

    ``guard`` is the model's schema and ``strict``: each array is checked once (no header:
    its channels, 2D).
    """
    if not path.is_file():
        raise UnusableFileError(Reason.UNREADABLE, "file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UnusableFileError(
            Reason.UNREADABLE, f"not a readable .npz archive ({type(err).__name__}); it may be truncated or corrupt"
        ) from None
    out: list[_Input] = []
    with archive:
        keys = _image_keys(list(archive.files))
        if not keys:
            raise UnusableFileError(Reason.NOT_IMAGE, "no 'images', 'test_images' or '*_images' array in the .npz")
        counts = []
        for key in keys:
            try:
                images = np.asarray(archive[key])
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
                raise UnusableFileError(
                    Reason.TRUNCATED, f"array {key} cannot be read ({type(err).__name__}); the file may be truncated"
                ) from None
            if images.dtype != np.uint8 or not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
                raise UnusableFileError(
                    Reason.NOT_IMAGE,
                    f"array {key} must be uint8 images (N, H, W) or (N, H, W, 3); found {images.dtype} {images.shape}",
                )
            kind = InputKind("", 3 if images.ndim == 4 else 1, 2)
            warning = check_input(guard[0], kind, f"{path}[{key}]", strict=guard[1])
            for start in range(0, images.shape[0], RESIZE_CHUNK):
                chunk = images[start : start + RESIZE_CHUNK].astype(np.float64) / 255.0
                inputs = to_model_input(chunk, channels, image_size)
                out += [_Input(f"{path}[{key}:{start + i}]", inputs[i : i + 1], warning) for i in range(len(inputs))]
            counts.append(f"{key} ({images.shape[0]} images)")
    return out, f"{path}: read {', '.join(counts)}"


def _image_keys(keys: list[str]) -> list[str]:
    if "images" in keys:
        return ["images"]
    if "test_images" in keys:
        return ["test_images"]
    return sorted(k for k in keys if k.endswith("_images"))


class LoadModelInputd(MapTransform):
    """MONAI dictionary transform: a file path to fedward's model input (before scaling).

    Args:
        keys: keys holding file paths (DICOM, PNG, JPEG).
        channels: the model's image channels, 1 or 3.
        image_size: the model's input side, pixels.
        allow_missing_keys: MONAI's option.

    Output per key: a :class:`monai.data.MetaTensor` float32 (C, S, S) with values in
    [0, 255] (the uint8 input training uses) and ``filename_or_obj`` in its metadata.

    Raises:
        UnusableFileError: for a file that cannot be decoded.
    """

    def __init__(self, keys: KeysCollection, channels: int, image_size: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels = channels
        self.image_size = image_size

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Replace each path by its model input."""
        out = dict(data)
        for key in self.key_iterator(out):
            path = Path(str(out[key]))
            image = load_model_input(path, self.channels, self.image_size, FrameMode.MIDDLE)[0].float()
            out[key] = MetaTensor(image, meta={"filename_or_obj": str(path)})
        return out
