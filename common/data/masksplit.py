"""One split of a segmentation data set as arrays at the model's input grid: images, label maps, spacing.

Every reader of segmentation data (image + mask folders, Decathlon/NIfTI folders, DICOM
series with DICOM SEG) ends in a :class:`MaskSplit`: images already preprocessed
(oriented, resampled, intensity-normalised, cropped or padded to the model's grid) and
their label maps on the same grid. Training, evaluation and partitioning read nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedward.common.errors import DataError


@dataclass(frozen=True, slots=True)
class MaskSplit:
    """Images and label maps of one split, on the model's grid.

    Attributes:
        images: float32 (N, C, *S): S = (H, W) for 2D images, (D, H, W) for volumes;
            intensities normalised (see :class:`~fedward.common.choices.Intensity`).
        masks: uint8 (N, *S) label maps: 0 background, 1..K-1 the structures.
        labels: int64 (N, 1) strata for partitioning and stratified hold-outs: the image's
            class where the data set has one (BUSI: benign, malignant, normal), else 0.
        spacing: float64 (N, len(S)) size of one pixel or voxel of the grid along each
            spatial axis, mm (pixels of the grid when the source has no physical spacing).

    Raises:
        DataError: if the arrays disagree in N, grid or dtype.
    """

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    spacing: np.ndarray

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != np.float32 or self.images.ndim not in (4, 5):
            raise DataError(
                f"segmentation images must be float32 (N, C, *S); got {self.images.dtype} {self.images.shape}"
            )
        if self.masks.dtype != np.uint8 or self.masks.shape != (n, *self.images.shape[2:]):
            raise DataError(
                f"label maps must be uint8 {(n, *self.images.shape[2:])} like the images; "
                f"got {self.masks.dtype} {self.masks.shape}"
            )
        if self.labels.shape != (n, 1) or self.spacing.shape != (n, self.images.ndim - 2):
            raise DataError(f"strata {self.labels.shape} or spacing {self.spacing.shape} do not fit {n} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes."""
        return int(self.images.ndim - 2)

    def subset(self, indices: np.ndarray) -> MaskSplit:
        """The rows at ``indices`` (int array of shape (M,)), as a new split."""
        return MaskSplit(self.images[indices], self.masks[indices], self.labels[indices], self.spacing[indices])

    @classmethod
    def empty(cls, channels: int, grid: tuple[int, ...]) -> MaskSplit:
        """A split with no images on ``grid``."""
        return cls(
            np.zeros((0, channels, *grid), np.float32),
            np.zeros((0, *grid), np.uint8),
            np.zeros((0, 1), np.int64),
            np.zeros((0, len(grid)), np.float64),
        )
