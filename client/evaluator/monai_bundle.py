"""Export a model directory as a MONAI bundle that ``monai.bundle`` runs.

This module writes classification bundles and the parts every bundle shares
(:func:`write_bundle`, :func:`base_metadata`, :func:`evaluator_inference_config` with
:func:`checkpoint_loader` and :func:`evaluator_config`); segmentation bundles are
:mod:`fedward.client.evaluator.seg_bundle`.

A classification bundle folder holds ``configs/metadata.json`` (the MONAI bundle metadata schema's
fields), ``configs/inference.json`` (a SupervisedEvaluator that decodes every
PNG/JPEG/DICOM file of ``input_dir`` as training does, runs the network and writes
``output_dir/predictions.csv``), ``models/model.pt`` (the network's state dict) and
``docs/`` (a README and the model card). The inference divides the logits by the
operating point's temperature before the activation, so the CSV holds the calibrated
probabilities fedward reports; ``metadata.json`` records the operating point
(``fedward_operating_point``: temperature, thresholds, rule). Run it from the bundle folder with
``python -m monai.bundle run --config_file configs/inference.json --input_dir DIR``;
fedward must be installed where it runs (its readers decode the images).
"""

from __future__ import annotations

import json
import logging
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedward.client.evaluator.export_formats import ExportFormat, ExportResult, model_properties
from fedward.client.evaluator.loaded_model import LoadedModel
from fedward.client.evaluator.model_dir import ModelDir, Preprocessing
from fedward.common.choices import Task
from fedward.common.errors import ModelError
from fedward.common.rundir.layout import CARD_JSON, CARD_MD
from fedward.common.version import fedward_version

log = logging.getLogger(__name__)

MONAI_METADATA_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
)


def export_monai_bundle(loaded: LoadedModel, out: Path) -> ExportResult:
    """Write a MONAI bundle folder of a classification model at ``out``.

    Layout: ``configs/metadata.json`` (MONAI bundle metadata), ``configs/inference.json``
    (a SupervisedEvaluator that decodes every PNG/JPEG/DICOM file of ``input_dir`` as
    training does, runs the network and saves ``output_dir/predictions.csv``),
    ``models/model.pt`` (the network's state dict), ``docs/README.md`` and a copy of the
    model card.

    Raises:
        ModelError: if ``out`` exists and is not an earlier bundle.
    """
    model_dir = loaded.model_dir
    files = write_bundle(
        loaded, out, bundle_metadata(model_dir), inference_config(model_dir), _bundle_readme(model_dir)
    )
    return ExportResult(ExportFormat.MONAI_BUNDLE, out, tuple(files), "MONAI bundle (state dict + configs)", None)


def write_bundle(
    loaded: LoadedModel, out: Path, metadata: dict[str, Any], inference: dict[str, Any], readme: str
) -> list[Path]:
    """Write a bundle folder: the two configs, ``models/model.pt``, ``docs/README.md`` and the model card.

    Returns:
        The files written.

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
    files[0].write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    files[1].write_text(json.dumps(inference, indent=2) + "\n", encoding="utf-8")
    state = {k: v.detach().cpu().contiguous() for k, v in loaded.network.state_dict().items()}
    torch.save(state, files[2])
    readme_file = out / "docs" / "README.md"
    readme_file.write_text(readme, encoding="utf-8")
    files.append(readme_file)
    for name in (CARD_MD, CARD_JSON):
        if (model_dir.path / name).is_file():
            shutil.copyfile(model_dir.path / name, out / "docs" / name)
            files.append(out / "docs" / name)
    return files


def base_metadata(model_dir: ModelDir) -> dict[str, Any]:
    """The fields of ``configs/metadata.json`` every fedward bundle shares (versions, provenance, use)."""
    import monai

    version = fedward_version()
    card_data = _table(model_dir.card, "dataset")
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
        "authors": "the hospitals of the fedward federation that trained the run",
        "copyright": "the federation that trained the run",
        "data_source": str(card_data.get("source", model_dir.cfg.data.dataset)),
        "eval_metrics": _table(_table(model_dir.card, "metrics"), "best"),
        "intended_use": str(model_dir.card.get("intended_use", "Research only; not for clinical decisions.")),
        "fedward": {**model_properties(model_dir), "classes": list(model_dir.classes)},
    }


def bundle_metadata(model_dir: ModelDir) -> dict[str, Any]:
    """``configs/metadata.json`` of a classification bundle: the MONAI bundle metadata schema's fields."""
    prep = model_dir.preprocessing
    classes = list(model_dir.classes)
    multilabel = model_dir.task is Task.MULTILABEL
    operating = model_dir.operating
    return {
        **base_metadata(model_dir),
        "task": f"{model_dir.task.value} classification of {model_dir.cfg.data.dataset} images",
        "description": (
            f"{model_dir.model_name.value} trained with federated learning (fedward run {model_dir.run_name}, "
            f"round {model_dir.round}); outputs {'per-label sigmoid' if multilabel else 'softmax'} probabilities "
            f"of {', '.join(classes)}, calibrated (logits / {operating.point.temperature:g}); operating point: "
            f"{operating.describe()}. Research use only; not a medical device."
        ),
        "fedward_operating_point": operating.to_json(),
        "data_type": "png, jpeg or dicom",
        "image_classes": f"{prep.channels}-channel image, {prep.image_size} x {prep.image_size} px after resizing",
        "label_classes": ", ".join(f"{i}: {c}" for i, c in enumerate(classes)),
        "pred_classes": ", ".join(f"{i}: {c}" for i, c in enumerate(classes)),
        "references": ["Yang et al., MedMNIST v2, Scientific Data 10, 41 (2023)"],
        "network_data_format": _network_data_format(prep, classes, multilabel),
    }


def _network_data_format(prep: Preprocessing, classes: list[str], multilabel: bool) -> dict[str, Any]:
    """The metadata's ``network_data_format``: the scaled image in, probabilities out."""
    image = {
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
    pred = {
        "type": "probabilities",
        "format": "labels" if multilabel else "classes",
        "num_channels": len(classes),
        "spatial_shape": [1, len(classes)],
        "dtype": "float32",
        "value_range": [0, 1],
        "is_onehot": False,
        "channel_def": {str(i): c for i, c in enumerate(classes)},
    }
    return {"inputs": {"image": image}, "outputs": {"pred": pred}}


def inference_config(model_dir: ModelDir) -> dict[str, Any]:
    """``configs/inference.json``: MONAI bundle config of a classification evaluator."""
    prep = model_dir.preprocessing
    activation = {"sigmoid": True} if model_dir.task is Task.MULTILABEL else {"softmax": True}
    scale = f"$lambda x: x / {model_dir.operating_point.temperature!r}"  # temperature scaling of the logits
    temperature = {"_target_": "Lambdad", "keys": "pred", "func": scale}
    return evaluator_inference_config(
        imports=["$import pathlib", "$import torch", "$import fedward.client.evaluator.predict"],
        network={
            "name": model_dir.model_name.value,
            "in_channels": prep.channels,
            "num_outputs": len(model_dir.classes),
            "private": model_dir.private,
        },
        datalist="$[{'image': str(p)} for p in sorted(pathlib.Path(@input_dir).iterdir()) "
        "if p.suffix.lower() in ('.png', '.jpg', '.jpeg', '.dcm')]",
        preprocessing=_preprocessing(prep),
        batch_size=64,
        inferer={"_target_": "SimpleInferer"},
        postprocessing={
            "_target_": "Compose",
            "transforms": [temperature, {"_target_": "Activationsd", "keys": "pred", **activation}],
        },
        handlers=[_classification_saver()],
    )


def evaluator_inference_config(
    *,
    imports: list[str],
    network: dict[str, Any],
    datalist: str,
    preprocessing: dict[str, Any],
    batch_size: int,
    inferer: dict[str, Any],
    postprocessing: dict[str, Any],
    handlers: list[dict[str, Any]],
) -> dict[str, Any]:
    """``configs/inference.json`` of every fedward bundle: a SupervisedEvaluator over the files of ``input_dir``.

    ``input_dir`` and ``output_dir`` default to ``samples/`` and ``eval/`` of the bundle; the
    network is :func:`~fedward.common.ml.networks.build_network`'s, its weights loaded from
    ``models/model.pt`` (:func:`checkpoint_loader`); the inputs are read one worker, in order.

    Args:
        imports: the config's ``imports`` (``$import ...`` expressions).
        network: ``build_network``'s arguments (``network_def`` without its ``_target_``).
        datalist: the expression listing ``{"image": path}`` per input file of ``@input_dir``.
        preprocessing: the transform of each input.
        batch_size: inputs per batch.
        inferer: the inferer.
        postprocessing: the transform of each prediction (writing the outputs, or not).
        handlers: the evaluator's handlers after the checkpoint loader.
    """
    return {
        "imports": imports,
        "bundle_root": ".",
        "input_dir": "$@bundle_root + '/samples'",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "fedward.common.ml.networks.build_network", **network},
        "network": "$@network_def.to(@device)",
        "datalist": datalist,
        "preprocessing": preprocessing,
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": batch_size,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": inferer,
        "postprocessing": postprocessing,
        "handlers": [checkpoint_loader(), *handlers],
        "evaluator": evaluator_config(),
        "run": ["$@evaluator.run()"],
    }


def _preprocessing(prep: Preprocessing) -> dict[str, Any]:
    """The config's ``preprocessing``: fedward's decoding to uint8 model input, then scaling to [0, 1]."""
    load = {
        "_target_": "fedward.client.evaluator.predict.LoadModelInputd",
        "keys": "image",
        "channels": prep.channels,
        "image_size": prep.image_size,
    }
    scale = {
        "_target_": "ScaleIntensityRanged",
        "keys": "image",
        "a_min": 0.0,
        "a_max": 255.0,
        "b_min": 0.0,
        "b_max": 1.0,
        "clip": True,
    }
    return {"_target_": "Compose", "transforms": [load, scale]}


def checkpoint_loader() -> dict[str, Any]:
    """The handler that loads ``models/model.pt`` into ``@network``."""
    return {
        "_target_": "CheckpointLoader",
        "load_path": "$@bundle_root + '/models/model.pt'",
        "load_dict": {"model": "@network"},
        "map_location": "@device",
    }


def _classification_saver() -> dict[str, Any]:
    """The handler that saves ``predictions.csv``."""
    return {
        "_target_": "ClassificationSaver",
        "output_dir": "@output_dir",
        "filename": "predictions.csv",
        "batch_transform": "$lambda x: [xx['image'].meta for xx in x]",
        "output_transform": "$lambda x: [xx['pred'] for xx in x]",
    }


def evaluator_config() -> dict[str, Any]:
    """The config's ``evaluator``: a SupervisedEvaluator over the other parts."""
    return {
        "_target_": "SupervisedEvaluator",
        "device": "@device",
        "val_data_loader": "@dataloader",
        "network": "@network",
        "inferer": "@inferer",
        "postprocessing": "@postprocessing",
        "val_handlers": "@handlers",
        "amp": False,
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
        f"The probabilities are calibrated (the logits are divided by the temperature "
        f"{model_dir.operating_point.temperature:g} before the activation); decide at the operating point "
        f"`configs/metadata.json` records as `fedward_operating_point` ({model_dir.operating.describe()}): "
        "a class or label is predicted when its probability is at least its threshold.\n\n"
        "The model card of the run is `docs/model_card.md`. Research use only; not a medical device.\n"
    )


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    return dict(value) if isinstance(value, dict) else {}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"
