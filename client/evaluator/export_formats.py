"""What every model export shares: the formats, their default names, the result, and the metadata they carry.

:mod:`fedward.client.evaluator.model_export` (ONNX, TorchScript) and
:mod:`fedward.client.evaluator.monai_bundle` both build on this module and neither on the
other's internals: an export's input is named :data:`INPUT_NAME`, its output
:data:`OUTPUT_NAME`, :func:`export_signature` says their shapes for the model's task (the
one place exports look at the task), and :func:`model_properties` is the metadata every
format stores with the graph.

* classification: scaled images float32 (B, C, S, S) in [0, 1] in, calibrated
  probabilities float32 (B, K) out (softmax, or sigmoid per label, of the logits divided
  by the operating point's temperature, which the graph contains); the decision is
  ``probability >= threshold`` at the thresholds the metadata records
  (:func:`operating_properties`);
* segmentation: normalised images float32 (B, C, S, S) or volumes (B, C, D, H, W) on the
  model's grid in, softmax probabilities over the K labels float32 (B, K, *S) out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from fedward.client.evaluator.model_dir import ModelDir
from fedward.client.evaluator.seg_input import model_grid
from fedward.common.choices import Task
from fedward.common.version import fedward_version

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"


class ExportFormat(StrEnum):
    """What ``fedward model export --format`` writes."""

    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    MONAI_BUNDLE = "monai-bundle"


DEFAULT_NAMES = {
    ExportFormat.ONNX: "model.onnx",
    ExportFormat.TORCHSCRIPT: "model.ts",
    ExportFormat.MONAI_BUNDLE: "bundle",
}
"""File (ONNX, TorchScript) or folder (MONAI bundle) name of an export in ``<model dir>/export/``."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What an export wrote.

    Attributes:
        format: the export format.
        path: the file (ONNX, TorchScript) or folder (MONAI bundle).
        files: every file written.
        exporter: how the graph was produced.
        max_abs_diff: largest absolute difference between the export's and PyTorch's
            probabilities on random images; ``None`` when not checked (no onnxruntime).
    """

    format: ExportFormat
    path: Path
    files: tuple[Path, ...]
    exporter: str
    max_abs_diff: float | None


FALLBACK_WINDOW = (64, 64, 64)
"""3D segmentation runs that let the data set choose their grid: the window exports are traced and checked at."""


@dataclass(frozen=True, slots=True)
class ExportSignature:
    """What an export of a model takes and gives.

    Attributes:
        input_shape: one example's input (C, *S): (C, S, S) or (C, D, H, W).
        input_doc: the input, in words (metadata).
        output_doc: the output, in words (metadata).
        check_batch: examples of random input an export is checked against PyTorch on.
        onnx: whether ONNX export is offered (2D only).
    """

    input_shape: tuple[int, ...]
    input_doc: str
    output_doc: str
    check_batch: int = 8
    onnx: bool = True


def export_signature(model_dir: ModelDir) -> ExportSignature:
    """The input and output of the model's exports, by task (see the module docstring)."""
    schema = model_dir.schema
    k = len(schema.classes)
    if schema.task is not Task.SEGMENTATION:
        side = model_dir.cfg.data.image_size
        activation = "sigmoid per label" if schema.task is Task.MULTILABEL else "softmax over classes"
        temperature = model_dir.operating_point.temperature
        return ExportSignature(
            (schema.channels, side, side),
            f"{INPUT_NAME}: float32 (B, {schema.channels}, {side}, {side}), pixels / 255",
            f"{OUTPUT_NAME}: float32 (B, {k}), {activation} of logits / {temperature:g} (temperature scaling)",
        )
    grid = model_grid(model_dir) or FALLBACK_WINDOW
    sides = ", ".join(map(str, grid))
    volume = schema.spatial_dims == 3
    where = "sliding windows of this grid" if volume else "the image resized to this grid"
    return ExportSignature(
        (schema.channels, *grid),
        f"{INPUT_NAME}: float32 (B, {schema.channels}, {sides}), {where}, intensities normalised as in training "
        f"(data.intensity = {model_dir.cfg.data.intensity.value})",
        f"{OUTPUT_NAME}: float32 (B, {k}, {sides}), softmax over the labels {', '.join(schema.classes)}",
        check_batch=2 if volume else 4,
        onnx=not volume,
    )


def default_output(model_dir: ModelDir, fmt: ExportFormat) -> Path:
    """``<model dir>/export/model.onnx``, ``.../model.ts`` or ``.../bundle``."""
    return model_dir.path / "export" / DEFAULT_NAMES[fmt]


def model_properties(model_dir: ModelDir) -> dict[str, str]:
    """String metadata stored with exports: what the model expects and outputs (classifiers: and how to decide)."""
    signature = export_signature(model_dir)
    operating = {} if model_dir.task is Task.SEGMENTATION else operating_properties(model_dir)
    return {
        "fedward_version": fedward_version(),
        "run": model_dir.run_name,
        "round": "" if model_dir.round is None else str(model_dir.round),
        "weights_sha256": model_dir.sha256,
        "model": model_dir.model_name.value,
        "dataset": model_dir.cfg.data.dataset,
        "task": model_dir.task.value,
        "classes": json.dumps(list(model_dir.classes)),
        "input": signature.input_doc,
        "output": signature.output_doc,
        **operating,
    }


def operating_properties(model_dir: ModelDir) -> dict[str, str]:
    """A classifier's operating point as export metadata (strings; lists and null as JSON).

    ``fedward.temperature`` (the graph already divides the logits by it),
    ``fedward.thresholds`` (one per decided column: binary, P(class 1); multi-label, each
    label; multi-class ``[]``, arg-max), ``fedward.operating_rule``, ``fedward.operating_source``
    (``validation`` or ``default``), ``fedward.operating_point`` (one line) and ``fedward.decision``.
    """
    operating = model_dir.operating
    cuts = operating.thresholds()
    classes = model_dir.classes
    if model_dir.task is Task.BINARY:
        decision = f"{classes[1]} if {OUTPUT_NAME}[:, 1] >= {cuts[0]:g}, else {classes[0]}"
    elif model_dir.task is Task.MULTILABEL:
        decision = f"label k present if {OUTPUT_NAME}[:, k] >= fedward.thresholds[k]"
    else:
        decision = f"the class of the largest {OUTPUT_NAME}[:, k] (arg-max)"
    return {
        "fedward.temperature": repr(operating.point.temperature),
        "fedward.thresholds": json.dumps(list(cuts)),
        "fedward.operating_rule": operating.point.rule.value,
        "fedward.operating_source": operating.source.value,
        "fedward.operating_point": operating.describe(),
        "fedward.decision": decision,
    }
