"""Export a model directory's network as ONNX, TorchScript or a MONAI bundle.

Every export computes probabilities, not logits: the graph ends with the softmax
(binary, multi-class, segmentation) or sigmoid (multi-label) that
:class:`~fedward.client.evaluator.loaded_model.ProbabilityModel` adds, of the logits
divided by the operating point's temperature (a classifier's probabilities are the
calibrated ones ``fedward predict`` prints; segmentation: temperature 1). The metadata
(ONNX properties, TorchScript's ``fedward.json``, the bundle's ``metadata.json``) records
the temperature, the thresholds and the rule
(:func:`~fedward.client.evaluator.export_formats.operating_properties`): the decision is
``probability >= threshold``. What an export takes and gives is the model's
:func:`~fedward.client.evaluator.export_formats.export_signature`:

* classification: the *scaled* image batch, float32 (B, C, S, S) in [0, 1] (pixels at the
  model's size and channels divided by 255, see
  :class:`~fedward.client.evaluator.model_dir.Preprocessing`), to probabilities (B, K);
* segmentation: normalised images (B, C, S, S) or volume windows (B, C, D, H, W) on the
  model's grid (:mod:`fedward.client.evaluator.seg_input`) to softmax probabilities
  (B, K, *S); volumes larger than the grid are predicted window by window (the MONAI
  bundle does so with :class:`~monai.inferers.SlidingWindowInferer`).

The batch axis is dynamic. Formats:

* ``onnx`` (classification and 2D segmentation): ``torch.onnx.export`` with the
  ``torch.export``-based exporter (PyTorch's default since 2.9; the TorchScript-based one
  is the fallback), opset :data:`ONNX_OPSET`, one self-contained file, input ``images``,
  output ``probabilities``; classes, task and preprocessing are in the model's metadata
  properties. When onnxruntime is installed the file is checked against PyTorch on random
  input.
* ``torchscript``: ``torch.jit.trace`` to ``model.ts`` (the same metadata as the extra file
  ``fedward.json``), checked against PyTorch on random input; PyTorch marks TorchScript
  deprecated but LibTorch and ``torch.jit.load`` still load it.
* ``monai-bundle``: a MONAI bundle folder (``configs/metadata.json``,
  ``configs/inference.json``, ``models/model.pt``, ``docs/``) whose inference config runs
  with ``python -m monai.bundle run --config_file configs/inference.json --input_dir DIR``
  from the bundle folder (:mod:`fedward.client.evaluator.monai_bundle`; segmentation:
  :mod:`fedward.client.evaluator.seg_bundle`). fedward must be installed where it runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedward.client.evaluator.export_formats import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportFormat,
    ExportResult,
    default_output,
    export_signature,
    model_properties,
)
from fedward.client.evaluator.loaded_model import LoadedModel
from fedward.client.evaluator.model_dir import ModelDir
from fedward.client.evaluator.monai_bundle import export_monai_bundle
from fedward.client.evaluator.seg_bundle import export_seg_bundle
from fedward.common.choices import Task
from fedward.common.errors import ModelError

log = logging.getLogger(__name__)

ONNX_OPSET = 18
"""ONNX opset of exported graphs (supported by onnxruntime >= 1.14)."""
CHECK_TOLERANCE = 1e-4
"""Largest absolute difference from PyTorch's probabilities an export may show."""


def export_model(loaded: LoadedModel, fmt: ExportFormat, out: Path | None = None) -> ExportResult:
    """Export a loaded model in ``fmt`` to ``out`` (default: :func:`default_output`).

    Raises:
        ModelError: if the network cannot be exported, or the export's probabilities
            differ from PyTorch's by more than :data:`CHECK_TOLERANCE`.
    """
    target = Path(out) if out is not None else default_output(loaded.model_dir, fmt)
    loaded.head.cpu().eval()
    if fmt is ExportFormat.ONNX and not export_signature(loaded.model_dir).onnx:
        raise ModelError(
            f"ONNX export is offered for classification and 2D segmentation models; {loaded.model_dir.run_name} "
            "segments volumes: export torchscript or monai-bundle"
        )
    if fmt is ExportFormat.ONNX:
        return export_onnx(loaded, target)
    if fmt is ExportFormat.TORCHSCRIPT:
        return export_torchscript(loaded, target)
    if loaded.model_dir.task is Task.SEGMENTATION:
        return export_seg_bundle(loaded, target)
    return export_monai_bundle(loaded, target)


# ---------------------------------------------------------------------------------- ONNX
def export_onnx(loaded: LoadedModel, out: Path, opset: int = ONNX_OPSET) -> ExportResult:
    """Write ``out`` (``.onnx``): probabilities of the model's input (see :func:`export_signature`).

    Raises:
        ModelError: if neither exporter can convert the network, or onnxruntime's
            probabilities differ from PyTorch's by more than :data:`CHECK_TOLERANCE`.
    """
    import onnx

    example = _random_images(loaded.model_dir, 2, seed=0)
    try:
        proto, exporter = _onnx_dynamo(loaded.head, example, opset), "torch.export (dynamo)"
    except Exception as err:  # the exporter raises many kinds; fall back to the legacy one
        log.warning(
            "torch.export-based ONNX export failed (%s: %s); using the TorchScript-based exporter",
            type(err).__name__,
            str(err).splitlines()[0] if str(err) else "",
        )
        try:
            proto, exporter = _onnx_legacy(loaded.head, example, opset), "TorchScript-based (legacy)"
        except Exception as legacy_err:
            raise ModelError(
                f"{loaded.model_dir.model_name.value} cannot be exported to ONNX: {type(legacy_err).__name__}: "
                f"{legacy_err}"
            ) from None
    onnx.helper.set_model_props(proto, model_properties(loaded.model_dir))
    proto.doc_string = (
        f"fedward {loaded.model_dir.model_name.value} ({loaded.model_dir.task.value}); "
        f"classes {', '.join(loaded.model_dir.classes)}"
    )
    onnx.checker.check_model(proto)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(out))
    diff = _check_onnx(loaded, out)
    return ExportResult(ExportFormat.ONNX, out, (out,), exporter, diff)


def _onnx_dynamo(head: torch.nn.Module, example: torch.Tensor, opset: int) -> Any:
    batch = torch.export.Dim("batch", min=1)
    with _quiet_export():
        program = torch.onnx.export(
            head,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes={"images": {0: batch}},
            external_data=False,
            verbose=False,
        )
    if program is None:  # pragma: no cover - only when given a file name
        raise RuntimeError("the exporter returned no program")
    return program.model_proto


def _onnx_legacy(head: torch.nn.Module, example: torch.Tensor, opset: int) -> Any:
    import onnx

    with tempfile.TemporaryDirectory(prefix="fedward-onnx-") as tmp, _quiet_export():
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            head,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=False,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
        return onnx.load_model(str(path))


def _check_onnx(loaded: LoadedModel, path: Path) -> float | None:
    """Max |onnxruntime - PyTorch| on random images; ``None`` without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        log.info("onnxruntime is not installed: %s was not checked against PyTorch", path.name)
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = _random_images(loaded.model_dir, export_signature(loaded.model_dir).check_batch, seed=1)
    got = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
    return _compare(loaded, images, np.asarray(got), path)


# --------------------------------------------------------------------------- TorchScript
def export_torchscript(loaded: LoadedModel, out: Path) -> ExportResult:
    """Write ``out`` (``.ts``): a traced module, probabilities of the model's input (see :func:`export_signature`).

    Raises:
        ModelError: if tracing fails or the traced module's probabilities differ from the
            eager module's by more than :data:`CHECK_TOLERANCE`.
    """
    example = _random_images(loaded.model_dir, 2, seed=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, still loadable
            traced = torch.jit.trace(loaded.head, example)  # type: ignore[no-untyped-call]
    except Exception as err:
        raise ModelError(
            f"{loaded.model_dir.model_name.value} cannot be traced to TorchScript: {type(err).__name__}: {err}"
        ) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = {"fedward.json": json.dumps(model_properties(loaded.model_dir), indent=2)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(traced, str(out), _extra_files=extra)
        reloaded = torch.jit.load(str(out), map_location="cpu")  # type: ignore[no-untyped-call]
    images = _random_images(loaded.model_dir, export_signature(loaded.model_dir).check_batch, seed=1)
    with torch.no_grad():
        got = reloaded(images).numpy()
    diff = _compare(loaded, images, got, out)
    return ExportResult(ExportFormat.TORCHSCRIPT, out, (out,), "torch.jit.trace", diff)


# ------------------------------------------------------------------------------ helpers
def _random_images(model_dir: ModelDir, n: int, seed: int) -> torch.Tensor:
    """Random model input in [0, 1], float32 (n, *input_shape) of :func:`export_signature`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((n, *export_signature(model_dir).input_shape), generator=generator)


def _compare(loaded: LoadedModel, images: torch.Tensor, got: np.ndarray, path: Path) -> float:
    with torch.no_grad():
        want = loaded.head.cpu()(images).numpy()
    if got.shape != want.shape:
        raise ModelError(f"{path}: the export outputs shape {got.shape}, PyTorch {want.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    if not diff <= CHECK_TOLERANCE:
        path.unlink(missing_ok=True)
        raise ModelError(
            f"{path.name}: exported probabilities differ from PyTorch's by up to {diff:.3g} (> {CHECK_TOLERANCE:g}); "
            "the export was deleted"
        )
    return diff


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporter's chatter (missing torchvision ops, deprecations) during an export."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)
