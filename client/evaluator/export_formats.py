"""What every model export shares: the formats, their default names, the result, and the metadata they carry.

:mod:`fedward.client.evaluator.model_export` (ONNX, TorchScript) and
:mod:`fedward.client.evaluator.monai_bundle` both build on this module and neither on the
other's internals: an export's input is named :data:`INPUT_NAME` (scaled images, float32
(B, C, S, S) in [0, 1]), its output :data:`OUTPUT_NAME` (probabilities, float32 (B, K)),
and :func:`model_properties` is the metadata every format stores with the graph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from fedward.client.evaluator.model_dir import ModelDir
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


def default_output(model_dir: ModelDir, fmt: ExportFormat) -> Path:
    """``<model dir>/export/model.onnx``, ``.../model.ts`` or ``.../bundle``."""
    return model_dir.path / "export" / DEFAULT_NAMES[fmt]


def model_properties(model_dir: ModelDir) -> dict[str, str]:
    """String metadata stored with exports: what the model expects and outputs."""
    prep = model_dir.preprocessing
    return {
        "fedward_version": fedward_version(),
        "run": model_dir.run_name,
        "round": "" if model_dir.round is None else str(model_dir.round),
        "weights_sha256": model_dir.sha256,
        "model": model_dir.model_name.value,
        "dataset": model_dir.cfg.data.dataset,
        "task": model_dir.task.value,
        "classes": json.dumps(list(model_dir.classes)),
        "input": f"{INPUT_NAME}: float32 (B, {prep.channels}, {prep.image_size}, {prep.image_size}), pixels / 255",
        "output": f"{OUTPUT_NAME}: float32 (B, {len(model_dir.classes)}), "
        + ("sigmoid per label" if model_dir.task is Task.MULTILABEL else "softmax over classes"),
    }
