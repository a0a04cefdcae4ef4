"""Segmentation model input: images and volumes preprocessed as training does, and label maps taken back to the input.

Preprocessing reuses the training readers' steps, so a model sees at prediction what it saw
in training:

* **2D images** (PNG, JPEG, single DICOM images; the mask-folder reader,
  :mod:`fedward.common.data.maskfolder`): display values (:func:`~fedward.common.data.files.decode_file`,
  first frame), matched to the model's channels, resized to the square grid and rounded to
  8 bits (:func:`~fedward.common.data.files.to_model_input`), then normalised
  (:func:`~fedward.common.data.intensity.normalise_intensity`; ``auto`` divides by 255).
  The predicted label map goes back to the file's size by nearest-neighbour resizing
  (MONAI :class:`~monai.transforms.Resize`, ``nearest-exact``).
* **Volumes** (NIfTI files, DICOM series; the Decathlon reader,
  :mod:`fedward.common.data.decathlon`): a :class:`~monai.data.MetaTensor` carrying the
  input's RAS affine is oriented to RAS (:class:`~monai.transforms.Orientation`), resampled
  to ``data.spacing`` when the run set one (:class:`~monai.transforms.Spacing`, bilinear),
  normalised (z-score over the non-zero voxels for MR, the CT window for CT) and padded
  with zeros, centred, to at least the model's grid (``data.volume-size``;
  :class:`~monai.transforms.SpatialPad`, the padding training's
  :class:`~monai.transforms.ResizeWithPadOrCrop` applies), or, when the run let the data set
  choose its grid, to the next multiple of 16 (:class:`~monai.transforms.DivisiblePad`).
  Nothing is cropped: a volume larger than the grid is covered by sliding windows. The
  class probabilities go back through MONAI's inverse transforms (crop the padding,
  resample back, undo the orientation), so the label map lies on the input's voxels, with
  its shape and affine; the arg-max is taken there.

Intensity statistics are used, never logged.
"""

from __future__ import annotations

import copy
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, DivisiblePad, Orientation, Resize, Spacing, SpatialPad
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import SpatialImage

from fedward.client.evaluator.model_dir import ModelDir
from fedward.common.choices import Intensity
from fedward.common.data.decathlon import GRID_MULTIPLE, RAS_LABELS
from fedward.common.data.dicom import Reason, UnusableFileError
from fedward.common.data.files import decode_file, to_model_input
from fedward.common.data.intensity import normalise_intensity, resolve_intensity

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path: Path) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    """The file name without ``.nii.gz`` or ``.nii``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def model_grid(model_dir: ModelDir) -> tuple[int, ...] | None:
    """The grid the model was trained on, in voxels: (S, S) for 2D, ``data.volume-size`` (D, H, W) for 3D.

    Returns:
        ``None`` for a 3D run whose grid was the data set's largest extent (not recorded).
    """
    data = model_dir.cfg.data
    if model_dir.schema.spatial_dims == 2:
        return (data.image_size, data.image_size)
    return tuple(data.volume_size) or None


@dataclass(frozen=True, slots=True)
class PlanarInput:
    """One 2D image as model input.

    Attributes:
        image: float32 (1, C, S, S), normalised.
        size: (H, W) of the file, pixels.
    """

    image: torch.Tensor
    size: tuple[int, int]

    def restore(self, probabilities: torch.Tensor) -> np.ndarray:
        """uint8 (H, W) label map of float (K, S, S) probabilities: arg-max, then nearest-neighbour resizing."""
        return resize_labels(probabilities.argmax(dim=0), self.size)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) of an integer (S, S) label map, resized nearest-neighbour (MONAI ``Resize``, ``nearest-exact``)."""
    resized = torch.as_tensor(Resize(spatial_size=size, mode="nearest-exact")(labels[None].float()))
    return np.asarray(resized[0].round().numpy(), dtype=np.uint8)


def planar_input(path: Path, model_dir: ModelDir) -> PlanarInput:
    """A PNG, JPEG or DICOM image preprocessed for ``model_dir`` as the mask-folder reader does.

    Raises:
        UnusableFileError: with the reason the file cannot be used.
    """
    schema, data = model_dir.schema, model_dir.cfg.data
    method = resolve_intensity(data.intensity, schema.modality, eight_bit=True)
    return load_planar(path, schema.channels, data.image_size, method)


def load_planar(path: Path, channels: int, image_size: int, method: Intensity) -> PlanarInput:
    """A PNG, JPEG or DICOM image as 2D segmentation input (first frame).

    Args:
        path: the file.
        channels: the model's channels, 1 or 3.
        image_size: side S of the model's grid, pixels.
        method: a resolved intensity normalisation (:func:`~fedward.common.data.intensity.resolve_intensity`).

    Raises:
        UnusableFileError: with the reason the file cannot be used.
    """
    display = decode_file(Path(path))[:1]
    pixels = to_model_input(display, channels, image_size)[0].numpy().astype(np.float32)
    image = normalise_intensity(pixels, method, nonzero=False)
    return PlanarInput(torch.from_numpy(image)[None], (int(display.shape[1]), int(display.shape[2])))


@dataclass(frozen=True, slots=True, eq=False)
class VolumeInput:
    """One volume as model input, with the transforms that lead back to its voxels.

    Attributes:
        image: float32 (1, C, D', H', W') normalised, oriented and padded (no metadata).
        oriented: the same as a (C, D', H', W') :class:`~monai.data.MetaTensor` whose
            ``applied_operations`` record the invertible steps.
        transform: the invertible steps (orientation, resampling, padding).
        shape: (X, Y, Z) voxels of the input.
        affine: float64 (4, 4) voxel index to RAS mm of the input.
    """

    image: torch.Tensor
    oriented: MetaTensor
    transform: Compose
    shape: tuple[int, int, int]
    affine: np.ndarray

    def restore(self, probabilities: torch.Tensor) -> np.ndarray:
        """uint8 (X, Y, Z) label map on the input's voxels of float (K, D', H', W') probabilities.

        The probabilities are taken back through the inverse transforms (bilinear where the
        input was resampled), then the arg-max is taken.
        """
        pred = MetaTensor(probabilities.detach().cpu().float(), meta=copy.deepcopy(self.oriented.meta))
        pred.applied_operations = copy.deepcopy(self.oriented.applied_operations)
        back = torch.as_tensor(self.transform.inverse(pred))  # type: ignore[no-untyped-call]
        labels = back.argmax(dim=0).numpy().astype(np.uint8)
        if labels.shape != self.shape:  # pragma: no cover - MONAI's inverses restore the shape
            raise RuntimeError(f"inverse transforms gave {labels.shape}, expected {self.shape}")
        return labels


def volume_input(array: np.ndarray, affine: np.ndarray, model_dir: ModelDir) -> VolumeInput:
    """A volume preprocessed as the Decathlon reader does (see the module docstring).

    Args:
        array: float (X, Y, Z) raw intensities (MR signal, Hounsfield units).
        affine: float (4, 4) voxel index to RAS mm.
        model_dir: the model (schema modality, ``data.spacing``, ``data.intensity``,
            ``data.ct-window``, ``data.volume-size``).
    """
    data, schema = model_dir.cfg.data, model_dir.schema
    steps: list[Any] = [Orientation(axcodes="RAS", labels=RAS_LABELS)]
    if data.spacing:
        steps.append(Spacing(pixdim=tuple(data.spacing), mode="bilinear"))
    grid = model_grid(model_dir)
    pad = SpatialPad(spatial_size=grid) if grid is not None else DivisiblePad(k=GRID_MULTIPLE)
    voxels = torch.from_numpy(np.asarray(array, dtype=np.float32)[None].copy())
    meta = MetaTensor(voxels, affine=torch.as_tensor(affine, dtype=torch.float64))
    oriented = Compose(steps)(meta)
    method = resolve_intensity(data.intensity, schema.modality, eight_bit=False)
    normalised = normalise_intensity(torch.as_tensor(oriented).numpy(), method, nonzero=True, ct_window=data.ct_window)
    oriented = MetaTensor(
        torch.from_numpy(normalised),
        meta=oriented.meta,
        applied_operations=oriented.applied_operations,
    )
    padded = cast(MetaTensor, pad(oriented))  # MONAI transforms return a MetaTensor for a MetaTensor
    channels = torch.as_tensor(padded).repeat(schema.channels, 1, 1, 1) if schema.channels > 1 else padded
    return VolumeInput(
        torch.as_tensor(channels).float()[None],
        padded,
        Compose([*steps, pad]),
        (int(array.shape[0]), int(array.shape[1]), int(array.shape[2])),
        np.asarray(affine, dtype=np.float64),
    )


@dataclass(frozen=True, slots=True, eq=False)
class NiftiVolume:
    """A NIfTI file read.

    Attributes:
        array: float32 (X, Y, Z) voxel values (the file's scaling applied).
        affine: float64 (4, 4) voxel index to RAS mm.
        header: the file's header (written with the label map so the two match).
    """

    array: np.ndarray
    affine: np.ndarray
    header: Any


def read_nifti(path: Path) -> NiftiVolume:
    """A 3D (or 4D with one volume) NIfTI file.

    Raises:
        UnusableFileError: ``not-an-image``, ``truncated``, ``unreadable`` or
            ``unsupported-image`` (not a single 3D volume).
    """
    try:
        image = nib.load(Path(path))
        if not isinstance(image, SpatialImage) or image.affine is None:
            raise ImageFileError("not a spatial image")
        voxels = np.asarray(image.get_fdata(dtype=np.float32))
    except ImageFileError:
        raise UnusableFileError(Reason.NOT_IMAGE, "not a NIfTI file") from None
    except (EOFError, zlib.error):
        raise UnusableFileError(Reason.TRUNCATED, "truncated NIfTI file") from None
    except (OSError, ValueError, MemoryError) as err:
        raise UnusableFileError(Reason.UNREADABLE, f"cannot be read ({type(err).__name__})") from None
    if voxels.ndim == 4 and voxels.shape[3] == 1:
        voxels = voxels[..., 0]
    if voxels.ndim != 3:
        raise UnusableFileError(Reason.UNSUPPORTED_IMAGE, f"a {voxels.ndim}D NIfTI; a single 3D volume is needed")
    return NiftiVolume(voxels, np.asarray(image.affine, dtype=np.float64), image.header.copy())
