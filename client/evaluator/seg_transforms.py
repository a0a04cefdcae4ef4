"""MONAI dictionary transforms of fedward's segmentation preprocessing, for the MONAI bundles fedward exports.

The bundle's ``configs/inference.json`` (:mod:`fedward.client.evaluator.seg_bundle`) names
these, so a bundle preprocesses exactly as ``fedward predict`` does
(:mod:`fedward.client.evaluator.seg_input`):

* :class:`LoadSegImaged`: a 2D image file to normalised model input on the grid;
* :class:`NormaliseIntensityd`: fedward's intensity normalisation of a volume, keeping the
  :class:`~monai.data.MetaTensor`'s record of the invertible transforms (so MONAI's
  ``Invertd`` can take the prediction back to the input's voxels);
* :class:`SaveLabelPngd`: a 2D label map resized back to its image's size
  (nearest neighbour) and saved as ``<stem>_seg.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from PIL import Image

from fedward.client.evaluator.seg_input import load_planar, resize_labels
from fedward.common.choices import DEFAULT_CT_WINDOW, Intensity
from fedward.common.data.intensity import normalise_intensity

log = logging.getLogger(__name__)

HEIGHT = "fedward_height"
WIDTH = "fedward_width"
"""Metadata keys of the image file's size (pixels), set by :class:`LoadSegImaged`."""
FILENAME = "filename_or_obj"


class LoadSegImaged(MapTransform):
    """A 2D image path (PNG, JPEG, DICOM) to normalised model input.

    Args:
        keys: keys holding file paths.
        channels: the model's channels, 1 or 3.
        image_size: side S of the model's grid, pixels.
        intensity: a resolved :class:`~fedward.common.choices.Intensity` value (not ``auto``).
        allow_missing_keys: MONAI's option.

    Output per key: a :class:`~monai.data.MetaTensor` float32 (C, S, S) whose metadata
    hold the path (``filename_or_obj``) and the file's height and width.

    Raises:
        UnusableFileError: for a file that cannot be decoded.
    """

    def __init__(
        self, keys: KeysCollection, channels: int, image_size: int, intensity: str, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels = channels
        self.image_size = image_size
        self.intensity = Intensity(intensity)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Replace each path by its model input."""
        out = dict(data)
        for key in self.key_iterator(out):
            path = Path(str(out[key]))
            loaded = load_planar(path, self.channels, self.image_size, self.intensity)
            meta = {FILENAME: str(path), HEIGHT: loaded.size[0], WIDTH: loaded.size[1]}
            out[key] = MetaTensor(loaded.image[0], meta=meta)
        return out


class NormaliseIntensityd(MapTransform):
    """fedward's intensity normalisation (:func:`~fedward.common.data.intensity.normalise_intensity`) of a volume.

    Args:
        keys: keys holding channel-first images.
        intensity: a resolved :class:`~fedward.common.choices.Intensity` value.
        nonzero: ``zscore``: statistics over the non-zero voxels.
        ct_window: ``ct-window``: (low, high) Hounsfield units.
        allow_missing_keys: MONAI's option.
    """

    def __init__(
        self,
        keys: KeysCollection,
        intensity: str,
        nonzero: bool = True,
        ct_window: Sequence[float] = DEFAULT_CT_WINDOW,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.intensity = Intensity(intensity)
        self.nonzero = nonzero
        self.ct_window = tuple(ct_window)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Normalise each image; metadata and the record of applied transforms are kept."""
        out = dict(data)
        for key in self.key_iterator(out):
            image = out[key]
            values = normalise_intensity(
                torch.as_tensor(image).numpy(), self.intensity, nonzero=self.nonzero, ct_window=self.ct_window
            )
            if isinstance(image, MetaTensor):
                out[key] = MetaTensor(
                    torch.from_numpy(values), meta=image.meta, applied_operations=image.applied_operations
                )
            else:
                out[key] = torch.from_numpy(values)
        return out


class SaveLabelPngd(MapTransform):
    """Save (1, S, S) label maps as PNGs of their image's size: ``output_dir/<stem>_seg.png``.

    Args:
        keys: keys holding label maps (e.g. the arg-max of the prediction).
        output_dir: folder of the PNGs (created).
        image_key: the key whose metadata (from :class:`LoadSegImaged`) name the file and its size.
        allow_missing_keys: MONAI's option.
    """

    def __init__(
        self, keys: KeysCollection, output_dir: str, image_key: str = "image", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Write each label map; the data pass unchanged."""
        out = dict(data)
        meta = out[self.image_key].meta
        size = (int(meta[HEIGHT]), int(meta[WIDTH]))
        for key in self.key_iterator(out):
            pixels = resize_labels(torch.as_tensor(out[key]).detach().cpu()[0].round().long(), size)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(pixels, dtype=np.uint8), mode="L").save(
                self.output_dir / f"{Path(str(meta[FILENAME])).stem}_seg.png"
            )
        return out
