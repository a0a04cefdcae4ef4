"""Export a segmentation model as a MONAI bundle whose inference config predicts label maps as ``fedward predict`` does.

The folder has the layout of every fedward bundle (:func:`~fedward.client.evaluator.monai_bundle.write_bundle`):
``configs/metadata.json``, ``configs/inference.json``, ``models/model.pt`` and ``docs/``.
Run it from the bundle folder with
``python -m monai.bundle run --config_file configs/inference.json --input_dir DIR --output_dir OUT``.

* **2D** (PNG, JPEG, DICOM images of ``input_dir``): fedward's decoding and normalisation
  (:class:`~fedward.client.evaluator.seg_transforms.LoadSegImaged`), MONAI's
  ``SimpleInferer``, softmax, arg-max, and ``OUT/<stem>_seg.png`` at the image's size
  (:class:`~fedward.client.evaluator.seg_transforms.SaveLabelPngd`).
* **3D** (NIfTI volumes of ``input_dir``): MONAI's ``LoadImaged``, ``Orientationd`` (RAS),
  ``Spacingd`` (when the run resampled), fedward's intensity normalisation
  (:class:`~fedward.client.evaluator.seg_transforms.NormaliseIntensityd`) and centred
  zero padding to the grid (``SpatialPadd``; ``DivisiblePadd`` by 16 when the run let the
  data set choose its grid), MONAI's :class:`~monai.inferers.SlidingWindowInferer` with
  windows of the model's grid (Gaussian blending, overlap 0.25), softmax, ``Invertd``
  back to the input's voxels, arg-max, and ``OUT/<stem>_seg.nii.gz`` with the input's
  affine (``SaveImaged``, uint8).

When written, the bundle's own network (``network_def`` with ``models/model.pt``) and
inferer are checked against the PyTorch model on random input.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from fedward.client.evaluator.export_formats import ExportFormat, ExportResult, export_signature
from fedward.client.evaluator.loaded_model import LoadedModel
from fedward.client.evaluator.model_dir import ModelDir
from fedward.client.evaluator.monai_bundle import base_metadata, evaluator_inference_config, write_bundle
from fedward.client.evaluator.seg_input import model_grid
from fedward.common.data.decathlon import GRID_MULTIPLE, RAS_LABELS
from fedward.common.data.intensity import resolve_intensity
from fedward.common.errors import ModelError
from fedward.common.ml.segment import SLIDING_WINDOW_OVERLAP

log = logging.getLogger(__name__)

CHECK_TOLERANCE = 1e-4
"""Largest absolute difference of the bundle network's probabilities from PyTorch's."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
VOLUME_SUFFIXES = (".nii", ".nii.gz")


def export_seg_bundle(loaded: LoadedModel, out: Path) -> ExportResult:
    """Write a MONAI bundle of a segmentation model at ``out`` and check it against PyTorch.

    Raises:
        ModelError: if ``out`` exists and is not an earlier bundle, or the bundle's network
            differs from PyTorch's by more than :data:`CHECK_TOLERANCE`.
    """
    model_dir = loaded.model_dir
    files = write_bundle(
        loaded, out, seg_bundle_metadata(model_dir), seg_inference_config(model_dir), _readme(model_dir)
    )
    diff = check_bundle(out, loaded)
    return ExportResult(ExportFormat.MONAI_BUNDLE, out, tuple(files), "MONAI bundle (state dict + configs)", diff)


def check_bundle(bundle: Path, loaded: LoadedModel) -> float:
    """Max |bundle - PyTorch| of the probabilities on random input: the config's network and inferer.

    Raises:
        ModelError: if the difference exceeds :data:`CHECK_TOLERANCE`.
    """
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True))
    inferer = parser.get_parsed_content("inferer")
    signature = export_signature(loaded.model_dir)
    generator = torch.Generator().manual_seed(1)
    images = torch.rand((signature.check_batch, *signature.input_shape), generator=generator)
    with torch.no_grad():
        got = torch.softmax(torch.as_tensor(inferer(images, network.eval())), dim=1)
        want = loaded.head.cpu().eval()(images)
    diff = float((got.double() - want.double()).abs().max())
    if not diff <= CHECK_TOLERANCE:
        raise ModelError(f"{bundle}: the bundle's probabilities differ from PyTorch's by up to {diff:.3g}")
    return diff


def seg_bundle_metadata(model_dir: ModelDir) -> dict[str, Any]:
    """``configs/metadata.json`` of a segmentation bundle: the MONAI bundle metadata schema's fields."""
    schema = model_dir.schema
    volume = schema.spatial_dims == 3
    grid = list(model_grid(model_dir) or [-1, -1, -1])
    labels = ", ".join(f"{i}: {c}" for i, c in enumerate(schema.classes))
    image = {
        "type": "image",
        "format": "magnitude",
        "modality": schema.modality.value if schema.modality else "any",
        "num_channels": schema.channels,
        "spatial_shape": grid,
        "dtype": "float32",
        "value_range": [],
        "is_patch_data": volume,
        "channel_def": {str(i): f"channel {i}" for i in range(schema.channels)},
    }
    pred = {
        "type": "image",
        "format": "segmentation",
        "num_channels": len(schema.classes),
        "spatial_shape": grid,
        "dtype": "float32",
        "value_range": [0, 1],
        "is_onehot": True,
        "channel_def": {str(i): c for i, c in enumerate(schema.classes)},
    }
    kind = "volumes" if volume else "images"
    return {
        **base_metadata(model_dir),
        "task": f"{schema.spatial_dims}D segmentation of {model_dir.cfg.data.dataset} {kind}",
        "description": (
            f"{model_dir.model_name.value} trained with federated learning (fedward run {model_dir.run_name}, "
            f"round {model_dir.round}); outputs label maps of {labels}. Research use only; not a medical device."
        ),
        "data_type": "nifti" if volume else "png, jpeg or dicom",
        "image_classes": f"{schema.channels}-channel {kind[:-1]}, normalised intensities",
        "label_classes": labels,
        "pred_classes": labels,
        "references": ["Cardoso et al., MONAI: An open-source framework for deep learning in healthcare, 2022"],
        "network_data_format": {"inputs": {"image": image}, "outputs": {"pred": pred}},
    }


def seg_inference_config(model_dir: ModelDir) -> dict[str, Any]:
    """``configs/inference.json``: a SupervisedEvaluator writing one label map per input file."""
    schema = model_dir.schema
    volume = schema.spatial_dims == 3
    suffixes = VOLUME_SUFFIXES if volume else IMAGE_SUFFIXES
    return evaluator_inference_config(
        imports=[
            "$import pathlib",
            "$import numpy",
            "$import torch",
            "$import fedward.client.evaluator.seg_transforms",
        ],
        network={
            "name": model_dir.model_name.value,
            "in_channels": schema.channels,
            "num_outputs": len(schema.classes),
            "private": model_dir.private,
            "spatial_dims": schema.spatial_dims,
        },
        datalist=f"$[{{'image': str(p)}} for p in sorted(pathlib.Path(@input_dir).iterdir()) "
        f"if p.name.lower().endswith({suffixes!r})]",
        preprocessing={
            "_target_": "Compose",
            "transforms": _volume_steps(model_dir) if volume else _image_steps(model_dir),
        },
        batch_size=1 if volume else 16,
        inferer=_inferer(model_dir) if volume else {"_target_": "SimpleInferer"},
        postprocessing={"_target_": "Compose", "transforms": _postprocessing(volume)},
        handlers=[],
    )


def _image_steps(model_dir: ModelDir) -> list[dict[str, Any]]:
    """2D preprocessing: fedward's decoding, resizing and normalisation."""
    schema, data = model_dir.schema, model_dir.cfg.data
    return [
        {
            "_target_": "fedward.client.evaluator.seg_transforms.LoadSegImaged",
            "keys": "image",
            "channels": schema.channels,
            "image_size": data.image_size,
            "intensity": resolve_intensity(data.intensity, schema.modality, eight_bit=True).value,
        }
    ]


def _volume_steps(model_dir: ModelDir) -> list[dict[str, Any]]:
    """3D preprocessing: MONAI loading, orientation, resampling, fedward's normalisation, padding."""
    schema, data = model_dir.schema, model_dir.cfg.data
    grid = model_grid(model_dir)
    steps: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True, "dtype": "$numpy.float32"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS", "labels": [list(p) for p in RAS_LABELS]},
    ]
    if data.spacing:
        steps.append({"_target_": "Spacingd", "keys": "image", "pixdim": list(data.spacing), "mode": "bilinear"})
    steps.append(
        {
            "_target_": "fedward.client.evaluator.seg_transforms.NormaliseIntensityd",
            "keys": "image",
            "intensity": resolve_intensity(data.intensity, schema.modality, eight_bit=False).value,
            "nonzero": True,
            "ct_window": list(data.ct_window),
        }
    )
    if grid is not None:
        steps.append({"_target_": "SpatialPadd", "keys": "image", "spatial_size": list(grid)})
    else:
        steps.append({"_target_": "DivisiblePadd", "keys": "image", "k": GRID_MULTIPLE})
    return steps


def _inferer(model_dir: ModelDir) -> dict[str, Any]:
    """MONAI's sliding-window inferer over windows of the model's grid (the whole padded volume without one)."""
    return {
        "_target_": "SlidingWindowInferer",
        "roi_size": list(model_grid(model_dir) or (-1, -1, -1)),
        "sw_batch_size": 4,
        "overlap": SLIDING_WINDOW_OVERLAP,
        "mode": "gaussian",
    }


def _postprocessing(volume: bool) -> list[dict[str, Any]]:
    """Softmax, (volumes: inverse preprocessing), arg-max, save."""
    softmax: dict[str, Any] = {"_target_": "Activationsd", "keys": "pred", "softmax": True}
    argmax: dict[str, Any] = {"_target_": "AsDiscreted", "keys": "pred", "argmax": True}
    if not volume:
        png: dict[str, Any] = {
            "_target_": "fedward.client.evaluator.seg_transforms.SaveLabelPngd",
            "keys": "pred",
            "output_dir": "@output_dir",
        }
        return [softmax, argmax, png]
    invert: dict[str, Any] = {
        "_target_": "Invertd",
        "keys": "pred",
        "transform": "@preprocessing",
        "orig_keys": "image",
        "nearest_interp": False,
        "to_tensor": True,
    }
    save: dict[str, Any] = {
        "_target_": "SaveImaged",
        "keys": "pred",
        "output_dir": "@output_dir",
        "output_postfix": "seg",
        "output_ext": ".nii.gz",
        "output_dtype": "$numpy.uint8",
        "resample": False,
        "separate_folder": False,
        "print_log": False,
    }
    return [softmax, invert, argmax, save]


def _readme(model_dir: ModelDir) -> str:
    volume = model_dir.schema.spatial_dims == 3
    inputs = "`.nii` and `.nii.gz` volume" if volume else "`.png`, `.jpg`, `.jpeg` and `.dcm` image"
    output = (
        "`<name>_seg.nii.gz`, a uint8 label map with the volume's shape and affine"
        if volume
        else ("`<name>_seg.png`, an 8-bit PNG of the label values at the image's size")
    )
    labels = ", ".join(f"{i} {c}" for i, c in enumerate(model_dir.classes))
    return (
        f"# {model_dir.model_name.value} segmentation for {model_dir.cfg.data.dataset} (fedward)\n\n"
        f"{model_dir.describe()}.\n\n"
        "## Run inference\n\n"
        "From this folder, with fedward installed:\n\n"
        "```\npython -m monai.bundle run --config_file configs/inference.json "
        "--input_dir /path/to/inputs --output_dir /path/to/results\n```\n\n"
        f"Every {inputs} file of `input_dir` is preprocessed as fedward's training does and gets {output} "
        f"in `output_dir` (labels: {labels}). DICOM series are segmented into DICOM SEG by `fedward predict`, "
        "not by this bundle.\n\n"
        "The model card of the run is `docs/model_card.md`. Research use only; not a medical device.\n"
    )
