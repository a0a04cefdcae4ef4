"""Overlay PNGs of segmentations: the image in grey, the predicted labels as translucent colours, the truth as contours.

An overlay shows patient image content, so it is written only where the images are (the
evaluator's machine, into the evaluation's output folder) and never sent anywhere.

Drawing: the image is scaled to grey levels 0..255 by its own minimum and maximum (for
display only; nothing about it is logged), enlarged by nearest-neighbour repetition to at
least :data:`MIN_SIDE` pixels, each predicted label is blended over it in its colour
(opacity :data:`FILL_ALPHA`) and the outline of each true label drawn in the same colour,
opaque. Volumes show one axial slice (the last, inferior-to-superior axis of the RAS grid):
the one with the most true foreground, else the most predicted foreground; it is displayed
with anterior up and the patient's left on the image's left.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

MIN_SIDE = 256
"""Overlays are enlarged (by a whole factor) until their shorter side reaches this, pixels."""
FILL_ALPHA = 0.4
"""Opacity of the predicted labels' colour."""
PALETTE = np.array(
    [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)],
    dtype=np.float64,
)
"""RGB colour of label 1, 2, ... (cycled for more labels)."""


def overlay_slice(image: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, ...]:
    """The 2D planes to draw of one case: ``(image, truth, predicted)``.

    Args:
        image: float (C, H, W) or (C, D, H, W) model input (channel 0 is drawn).
        truth: integer (H, W) or (D, H, W) true label map.
        predicted: integer label map of the same shape.

    Returns:
        Three (rows, columns) arrays; for volumes the chosen axial slice (see the module
        docstring), rotated for display.
    """
    plane = np.asarray(image)[0]
    if plane.ndim == 2:
        return plane, np.asarray(truth), np.asarray(predicted)
    weight = (truth > 0).sum(axis=(0, 1))
    if not weight.any():
        weight = (predicted > 0).sum(axis=(0, 1))
    k = int(np.argmax(weight)) if weight.any() else plane.shape[2] // 2
    return tuple(np.rot90(a[:, :, k]) for a in (plane, np.asarray(truth), np.asarray(predicted)))


def draw_overlay(image: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """uint8 (rows, columns, 3) RGB overlay of 2D ``image`` (float), ``truth`` and ``predicted`` (integer labels)."""
    scale = max(1, -(-MIN_SIDE // max(1, min(image.shape))))
    image, truth, predicted = (np.kron(a, np.ones((scale, scale), dtype=a.dtype)) for a in (image, truth, predicted))
    low, high = float(np.min(image)), float(np.max(image))
    grey = (image - low) / (high - low) * 255.0 if high > low else np.zeros_like(image, dtype=np.float64)
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float64)
    for label in range(1, int(max(truth.max(initial=0), predicted.max(initial=0))) + 1):
        colour = PALETTE[(label - 1) % len(PALETTE)]
        fill = predicted == label
        rgb[fill] = (1.0 - FILL_ALPHA) * rgb[fill] + FILL_ALPHA * colour
        rgb[_outline(truth == label)] = colour
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def write_overlay(path: Path, image: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> Path:
    """Draw one case (see :func:`overlay_slice`, :func:`draw_overlay`) into the PNG ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw_overlay(*overlay_slice(image, truth, predicted)), mode="RGB").save(path)
    return path


def _outline(mask: np.ndarray) -> np.ndarray:
    """bool: pixels of ``mask`` with a 4-neighbour outside it (or at the border)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return np.asarray(mask & ~inner, dtype=bool)
