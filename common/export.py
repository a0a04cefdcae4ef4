"""Export a model directory's network as ONNX, TorchScript or a MONAI bundle.

Every export computes probabilities, not logits: the graph ends with the softmax
(binary, multi-class) or sigmoid (multi-label) that :class:`~fedward.common.model_dir.ProbabilityModel`
adds. Its input is the *scaled* image batch, float32 (B, C, S, S) in [0, 1]: pixels at the
model's size and channels divided by 255 (see :class:`~fedward.common.model_dir.Preprocessing`);
the batch axis is dynamic.

* ``onnx``: ``torch.onnx.export`` with the ``torch.export``-based exporter (PyTorch's
  default since 2.9; the TorchScript-based one is the fallback), opset
  :data:`ONNX_OPSET`, one self-contained file, input ``images``, output ``probabilities``
  (B, K) float32; classes, task and preprocessing are in the model's metadata properties.
  When onnxruntime is installed the file is checked against PyTorch on random images.
* ``torchscript``: ``torch.jit.trace`` to ``model.ts`` (the same metadata as the extra file
  ``fedward.json``); PyTorch marks TorchScript deprecated but LibTorch and
  ``torch.jit.load`` still load it.
* ``monai-bundle``: a MONAI bundle folder (``configs/metadata.json``,
  ``configs/inference.json``, ``models/model.pt``, ``docs/``) whose inference config runs
  with ``python -m monai.bundle run --config_file configs/inference.json --input_dir DIR``
  from the bundle folder and writes ``predictions.csv`` (file, one probability per
  class) to ``output_dir``. It decodes images with fedward's own readers, so fedward must
  be installed where it runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedward.common.choices import Task
from fedward.common.errors import ModelError
from fedward.common.model_dir import CARD_JSON, CARD_MD, LoadedModel, ModelDir
from fedward.common.version import fedward_version

log = logging.getLogger(__name__)

ONNX_OPSET = 18
"""ONNX opset of exported graphs (supported by onnxruntime >= 1.14)."""
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
CHECK_TOLERANCE = 1e-4
"""Largest absolute difference from PyTorch's probabilities an export may show."""
CHECK_IMAGES = 8
MONAI_METADATA_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
)


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


def export_model(loaded: LoadedModel, fmt: ExportFormat, out: Path | None = None) -> ExportResult:
    """Export a loaded model in ``fmt`` to ``out`` (default: :func:`default_output`).

    Raises:
        ModelError: if the network cannot be exported, or the export's probabilities
            differ from PyTorch's by more than :data:`CHECK_TOLERANCE`.
    """
    target = Path(out) if out is not None else default_output(loaded.model_dir, fmt)
    loaded.head.cpu().eval()
    if fmt is ExportFormat.ONNX:
        return export_onnx(loaded, target)
    if fmt is ExportFormat.TORCHSCRIPT:
        return export_torchscript(loaded, target)
    return export_monai_bundle(loaded, target)


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


# ---------------------------------------------------------------------------------- ONNX
def export_onnx(loaded: LoadedModel, out: Path, opset: int = ONNX_OPSET) -> ExportResult:
    """Write ``out`` (``.onnx``): probabilities (B, K) of scaled images (B, C, S, S).

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
    images = _random_images(loaded.model_dir, CHECK_IMAGES, seed=1)
    got = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
    return _compare(loaded, images, np.asarray(got), path)


# --------------------------------------------------------------------------- TorchScript
def export_torchscript(loaded: LoadedModel, out: Path) -> ExportResult:
    """Write ``out`` (``.ts``): a traced module, probabilities (B, K) of scaled images.

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
    images = _random_images(loaded.model_dir, CHECK_IMAGES, seed=1)
    with torch.no_grad():
        got = reloaded(images).numpy()
    diff = _compare(loaded, images, got, out)
    return ExportResult(ExportFormat.TORCHSCRIPT, out, (out,), "torch.jit.trace", diff)


# -------------------------------------------------------------------------- MONAI bundle
def export_monai_bundle(loaded: LoadedModel, out: Path) -> ExportResult:
    """Write a MONAI bundle folder at ``out``.

    Layout: ``configs/metadata.json`` (MONAI bundle metadata), ``configs/inference.json``
    (a SupervisedEvaluator that decodes every PNG/JPEG/DICOM file of ``input_dir`` as
    training does, runs the network and saves ``output_dir/predictions.csv``),
    ``models/model.pt`` (the network's state dict), ``docs/README.md`` and a copy of the
    model card.

    Raises:
        ModelError: if ``out`` exists and is not an earlier bundle.
    """
    model_dir = loaded.model_dir
    earlier = (out / "configs" / "inference.json").is_file()
    if out.exists() and not earlier and (not out.is_dir() or any(out.iterdir())):
        raise ModelError(f"{out} exists and is not a MONAI bundle fedward wrote; choose another --out")
    for folder in ("configs", "models", "docs"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    files = [out / "configs" / "metadata.json", out / "configs" / "inference.json", out / "models" / "model.pt"]
    files[0].write_text(json.dumps(bundle_metadata(model_dir), indent=2) + "\n", encoding="utf-8")
    files[1].write_text(json.dumps(inference_config(model_dir), indent=2) + "\n", encoding="utf-8")
    state = {k: v.detach().cpu().contiguous() for k, v in loaded.network.state_dict().items()}
    torch.save(state, files[2])
    readme = out / "docs" / "README.md"
    readme.write_text(_bundle_readme(model_dir), encoding="utf-8")
    files.append(readme)
    for name in (CARD_MD, CARD_JSON):
        if (model_dir.path / name).is_file():
            shutil.copyfile(model_dir.path / name, out / "docs" / name)
            files.append(out / "docs" / name)
    return ExportResult(ExportFormat.MONAI_BUNDLE, out, tuple(files), "MONAI bundle (state dict + configs)", None)


def bundle_metadata(model_dir: ModelDir) -> dict[str, Any]:
    """``configs/metadata.json``: the MONAI bundle metadata schema's fields."""
    import monai

    prep = model_dir.preprocessing
    classes = list(model_dir.classes)
    version = fedward_version()
    card_data = _table(model_dir.card, "dataset")
    best_metrics = _table(_table(model_dir.card, "metrics"), "best")
    multilabel = model_dir.task is Task.MULTILABEL
    return {
        "schema": MONAI_METADATA_SCHEMA,
        "version": "1.0.0",
        "changelog": {"1.0.0": f"exported by fedward {version} from {model_dir.describe()}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+", 1)[0],
        "numpy_version": np.__version__,
        "required_packages_version": {
            "fedward": version,
            **{name: _version(name) for name in ("pytorch-ignite", "pydicom", "pillow")},
        },
        "name": f"fedward {model_dir.cfg.data.dataset} {model_dir.model_name.value}",
        "task": f"{model_dir.task.value} classification of {model_dir.cfg.data.dataset} images",
        "description": (
            f"{model_dir.model_name.value} trained with federated learning (fedward run {model_dir.run_name}, "
            f"round {model_dir.round}); outputs {'per-label sigmoid' if multilabel else 'softmax'} probabilities "
            f"of {', '.join(classes)}. Research use only; not a medical device."
        ),
        "authors": "the hospitals of the fedward federation that trained the run",
        "copyright": "the federation that trained the run",
        "data_source": str(card_data.get("source", model_dir.cfg.data.dataset)),
        "data_type": "png, jpeg or dicom",
        "image_classes": f"{prep.channels}-channel image, {prep.image_size} x {prep.image_size} px after resizing",
        "label_classes": ", ".join(f"{i}: {c}" for i, c in enumerate(classes)),
        "pred_classes": ", ".join(f"{i}: {c}" for i, c in enumerate(classes)),
        "eval_metrics": best_metrics,
        "intended_use": str(model_dir.card.get("intended_use", "Research only; not for clinical decisions.")),
        "references": ["Yang et al., MedMNIST v2, Scientific Data 10, 41 (2023)"],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "any",
                    "num_channels": prep.channels,
                    "spatial_shape": [prep.image_size, prep.image_size],
                    "dtype": "float32",
                    "value_range": list(prep.value_range),
                    "is_patch_data": False,
                    "channel_def": {str(i): f"channel {i}" for i in range(prep.channels)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "probabilities",
                    "format": "labels" if multilabel else "classes",
                    "num_channels": len(classes),
                    "spatial_shape": [1, len(classes)],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_onehot": False,
                    "channel_def": {str(i): c for i, c in enumerate(classes)},
                }
            },
        },
        "fedward": {**model_properties(model_dir), "classes": classes},
    }


def inference_config(model_dir: ModelDir) -> dict[str, Any]:
    """``configs/inference.json``: MONAI bundle config of a classification evaluator."""
    prep = model_dir.preprocessing
    activation = {"sigmoid": True} if model_dir.task is Task.MULTILABEL else {"softmax": True}
    return {
        "imports": ["$import pathlib", "$import torch", "$import fedward.common.predict"],
        "bundle_root": ".",
        "input_dir": "$@bundle_root + '/samples'",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {
            "_target_": "fedward.common.models.build_model",
            "name": model_dir.model_name.value,
            "in_channels": prep.channels,
            "num_outputs": len(model_dir.classes),
            "private": model_dir.private,
        },
        "network": "$@network_def.to(@device)",
        "datalist": "$[{'image': str(p)} for p in sorted(pathlib.Path(@input_dir).iterdir()) "
        "if p.suffix.lower() in ('.png', '.jpg', '.jpeg', '.dcm')]",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {
                    "_target_": "fedward.common.predict.LoadModelInputd",
                    "keys": "image",
                    "channels": prep.channels,
                    "image_size": prep.image_size,
                },
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": "image",
                    "a_min": 0.0,
                    "a_max": 255.0,
                    "b_min": 0.0,
                    "b_max": 1.0,
                    "clip": True,
                },
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 64,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [{"_target_": "Activationsd", "keys": "pred", **activation}],
        },
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {"model": "@network"},
                "map_location": "@device",
            },
            {
                "_target_": "ClassificationSaver",
                "output_dir": "@output_dir",
                "filename": "predictions.csv",
                "batch_transform": "$lambda x: [xx['image'].meta for xx in x]",
                "output_transform": "$lambda x: [xx['pred'] for xx in x]",
            },
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": False,
        },
        "run": ["$@evaluator.run()"],
    }


def _bundle_readme(model_dir: ModelDir) -> str:
    classes = ", ".join(model_dir.classes)
    return (
        f"# {model_dir.model_name.value} for {model_dir.cfg.data.dataset} (fedward)\n\n"
        f"{model_dir.describe()}.\n\n"
        "## Run inference\n\n"
        "From this folder, with fedward installed:\n\n"
        "```\npython -m monai.bundle run --config_file configs/inference.json "
        "--input_dir /path/to/images --output_dir /path/to/results\n```\n\n"
        "(MONAI's command line needs `fire`: `pip install fire`. Without it:\n"
        "`python -c \"from monai.bundle import run; run(config_file='configs/inference.json', "
        "input_dir='/path/to/images', output_dir='/path/to/results')\"`.)\n\n"
        f"Every `.png`, `.jpg`, `.jpeg` and `.dcm` file of `input_dir` is decoded as fedward's training does "
        f"(DICOM display pipeline, channel matching, resizing to {model_dir.cfg.data.image_size} px, scaling to "
        f"[0, 1]). `output_dir/predictions.csv` gets one row per image: the file, then one probability per "
        f"class ({classes}).\n\n"
        "The model card of the run is `docs/model_card.md`. Research use only; not a medical device.\n"
    )


# ------------------------------------------------------------------------------ helpers
def _random_images(model_dir: ModelDir, n: int, seed: int) -> torch.Tensor:
    """Scaled random model input, float32 (n, C, S, S) in [0, 1]."""
    prep = model_dir.preprocessing
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((n, prep.channels, prep.image_size, prep.image_size), generator=generator)


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


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    return dict(value) if isinstance(value, dict) else {}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"
