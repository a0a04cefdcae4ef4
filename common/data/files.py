"""One image file to model input: DICOM or PNG/JPEG, decoded, channel-matched, resized.

:func:`probe` reads headers only (for reports); :func:`decode_file` returns display values
in [0, 1]; :func:`to_model_input` converts them to the uint8 (F, C, S, S) tensors that
:class:`~fedward.common.data.images.ImageDataset` holds, exactly as for MedMNIST files:
an 8-bit image whose display transform is the identity gives the same tensor as the
same pixels in a ``.npz``.

Channel matching: a grayscale image given to a 3-channel federation is replicated; a
color image given to a 1-channel federation becomes its luma (ITU-R BT.601 weights).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fedward.common.choices import FrameMode
from fedward.common.data.dicom import ImageInfo, Reason, UnusableFileError, decode_dicom, image_info, read_dicom
from fedward.common.data.images import to_model_size

RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
"""Extensions read with Pillow; every other file is read as DICOM."""

LUMA = np.array([0.299, 0.587, 0.114])
"""ITU-R BT.601 luma weights for RGB to grayscale."""


def is_raster(path: Path) -> bool:
    """Whether ``path`` is read as PNG/JPEG (by extension)."""
    return path.suffix.lower() in RASTER_SUFFIXES


def probe(path: Path) -> ImageInfo:
    """Geometry, modality and transfer syntax (or format) of an image file, headers only.

    Raises:
        UnusableFileError: for any file that is not a readable image.
    """
    if is_raster(path):
        with _open_raster(path) as image:
            channels = 1 if image.mode in ("L", "I;16", "I", "F", "1", "LA") else 3
            return ImageInfo(image.height, image.width, getattr(image, "n_frames", 1), channels, "", str(image.format))
    return image_info(read_dicom(path, pixels=False))


def decode_file(path: Path, frames: FrameMode = FrameMode.MIDDLE) -> np.ndarray:
    """Display values of an image file.

    Returns:
        float32 in [0, 1], shape (F, H, W) or (F, H, W, 3).

    Raises:
        UnusableFileError: with the reason the file cannot be used.
    """
    if is_raster(path):
        return _decode_raster(path)[None]
    return decode_dicom(read_dicom(path), frames)


def to_model_input(display: np.ndarray, channels: int, image_size: int) -> torch.Tensor:
    """Display values to model input.

    Args:
        display: float in [0, 1], shape (F, H, W) or (F, H, W, 3).
        channels: the federation's image channels, 1 or 3.
        image_size: side S of the model input, pixels.

    Returns:
        uint8 tensor (F, C, S, S).
    """
    color = display.ndim == 4
    if channels == 1 and color:
        display = display @ LUMA
    elif channels == 3 and not color:
        display = np.repeat(display[..., None], 3, axis=-1)
    as_uint8 = np.rint(np.clip(display, 0.0, 1.0) * 255.0).astype(np.uint8)
    return to_model_size(as_uint8, image_size)


def _open_raster(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise UnusableFileError(Reason.NOT_IMAGE, f"not a {path.suffix.lstrip('.').upper()} image") from None
    except OSError as err:
        raise UnusableFileError(Reason.UNREADABLE, f"cannot be read ({err.strerror or type(err).__name__})") from None


def _decode_raster(path: Path) -> np.ndarray:
    with _open_raster(path) as image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image.load()
        except OSError:
            raise UnusableFileError(Reason.TRUNCATED, f"truncated {image.format or 'image'} file") from None
        if image.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(image, dtype=np.float64) / 65535.0
        if image.mode in ("I", "F"):
            values = np.asarray(image, dtype=np.float64)
            low, high = float(values.min()), float(values.max())
            return np.zeros_like(values) if high <= low else (values - low) / (high - low)
        if image.mode in ("1", "L", "LA"):
            return np.asarray(image.convert("L"), dtype=np.float64) / 255.0
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
