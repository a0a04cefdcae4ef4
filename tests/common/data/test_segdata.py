"""fedward.common.data.segdata: segmentation datasets and the joint image/label-map augmentation of their batches."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch.nn import functional

from fedward.common.choices import Task
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.segdata import (
    SegmentationDataset,
    SegmentationPipeline,
    concat_mask_splits,
    random_affines_nd,
    random_patches,
)

GRIDS = [(2, (48, 40)), (3, (24, 32, 20))]
"""(spatial dims, grid): non-square on purpose."""


def mask_split(n: int, grid: tuple[int, ...], seed: int = 0, channels: int = 1) -> MaskSplit:
    rng = np.random.default_rng(seed)
    return MaskSplit(
        rng.normal(size=(n, channels, *grid)).astype(np.float32),
        rng.integers(0, 3, size=(n, *grid)).astype(np.uint8),
        rng.integers(0, 3, size=(n, 1)).astype(np.int64),
        rng.uniform(0.5, 2.0, size=(n, len(grid))),
    )


def blobs(batch: int, grid: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """uint8 (B, 1, *S) label maps: a box of label 1 and a box of label 2 (may overlap), away from the borders."""
    rng = np.random.default_rng(seed)
    masks = torch.zeros(batch, 1, *grid, dtype=torch.uint8)
    for b in range(batch):
        for label in (1, 2):
            start = [int(rng.integers(s // 5, s // 2)) for s in grid]
            box = tuple(slice(a, a + s // 4) for a, s in zip(start, grid, strict=True))
            masks[(b, 0, *box)] = label
    return masks


def interior(labels: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Voxels of (B, 1, *S) label maps whose (2 radius + 1)-wide neighbourhood holds one label only."""
    pool = functional.max_pool2d if labels.ndim == 4 else functional.max_pool3d
    values = labels.float()
    highest = pool(values, 2 * radius + 1, stride=1, padding=radius)
    lowest = -pool(-values, 2 * radius + 1, stride=1, padding=radius)
    return highest == lowest


# ---------------------------------------------------------------- dataset


@pytest.mark.parametrize(("dims", "grid"), GRIDS)
def test_items_are_float_images_and_uint8_label_maps(dims: int, grid: tuple[int, ...]) -> None:
    split = mask_split(5, grid, channels=2)
    dataset = SegmentationDataset(split, num_classes=3)
    assert len(dataset) == 5 and dataset.spatial_dims == dims and dataset.task is Task.SEGMENTATION
    image, mask = dataset[3]
    assert image.dtype == torch.float32 and image.shape == (2, *grid)
    assert mask.dtype == torch.uint8 and mask.shape == (1, *grid)
    np.testing.assert_array_equal(image.numpy(), split.images[3])
    np.testing.assert_array_equal(mask[0].numpy(), split.masks[3])
    np.testing.assert_array_equal(dataset.spacing, split.spacing)
    assert dataset.num_classes == 3


def test_class_counts_count_images_per_stratum() -> None:
    split = mask_split(6, (16, 16))
    strata = np.array([[0], [2], [2], [0], [2], [1]], np.int64)
    dataset = SegmentationDataset(MaskSplit(split.images, split.masks, strata, split.spacing), 2)
    counts = dataset.class_counts()
    assert counts.dtype == np.int64 and counts.tolist() == [2, 1, 3]
    empty = SegmentationDataset(MaskSplit.empty(1, (16, 16)), 2)
    assert len(empty) == 0 and empty.class_counts().tolist() == [0]


def test_concatenated_splits_keep_every_image_in_order() -> None:
    a, b = mask_split(3, (16, 16), seed=1), mask_split(2, (16, 16), seed=2)
    both = concat_mask_splits([a, b])
    assert len(both) == 5
    for field in ("images", "masks", "labels", "spacing"):
        np.testing.assert_array_equal(getattr(both, field), np.concatenate([getattr(a, field), getattr(b, field)]))
    with pytest.raises(ValueError, match="nothing"):
        concat_mask_splits([])


# ---------------------------------------------------------------- pipeline: no augmentation


@pytest.mark.parametrize(("dims", "grid"), GRIDS)
def test_eval_mode_and_no_augment_leave_batches_unchanged(dims: int, grid: tuple[int, ...]) -> None:
    images = torch.randn(4, 1, *grid)
    masks = blobs(4, grid)
    for pipeline in (
        SegmentationPipeline(augment=True, spatial_dims=dims).eval(),
        SegmentationPipeline(augment=False, spatial_dims=dims).train(),
        SegmentationPipeline(augment=True, spatial_dims=dims, patch=(16,) * dims).eval(),  # no crop when scoring
    ):
        x, y = pipeline.pair(images, masks, torch.Generator().manual_seed(0))
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x, images) and torch.equal(y, masks.long())


# ---------------------------------------------------------------- pipeline: joint augmentation


@pytest.mark.parametrize(("dims", "grid"), GRIDS)
def test_an_image_equal_to_its_label_map_stays_equal_after_augmentation(dims: int, grid: tuple[int, ...]) -> None:
    """Image and label map go through one resampling: away from label edges they still agree exactly."""
    masks = blobs(8, grid)
    pipeline = SegmentationPipeline(augment=True, spatial_dims=dims, max_intensity_scale=0.0).train()
    x, y = pipeline.pair(masks.float(), masks, torch.Generator().manual_seed(1))
    assert x.shape == (8, 1, *grid) and y.shape == (8, 1, *grid) and y.dtype == torch.int64
    assert not torch.equal(y, masks.long()), "the batch was augmented"
    inside = interior(y)
    assert inside.float().mean() > 0.8
    torch.testing.assert_close(x[inside], y[inside].float(), atol=1e-4, rtol=0)
    # at label edges the bilinear image and the nearest-neighbour label map may differ, on few voxels only
    assert (x.round().long() != y).float().mean() < 0.03


@pytest.mark.parametrize(("dims", "grid"), GRIDS)
def test_label_maps_stay_the_same_integer_labels(dims: int, grid: tuple[int, ...]) -> None:
    """Nearest-neighbour resampling never invents a label between two others (no 1 between 0 and 2)."""
    masks = torch.zeros(6, 1, *grid, dtype=torch.uint8)
    masks[(slice(None), 0, *[slice(s // 4, 3 * s // 4) for s in grid])] = 2  # only labels 0 and 2
    pipeline = SegmentationPipeline(augment=True, spatial_dims=dims).train()
    _, y = pipeline.pair(torch.randn(6, 1, *grid), masks, torch.Generator().manual_seed(2))
    assert y.dtype == torch.int64 and set(y.unique().tolist()) == {0, 2}
    for b in range(6):  # zoom is at most 10 %: each label map keeps about its volume
        before, after = int((masks[b] == 2).sum()), int((y[b] == 2).sum())
        assert 0.7 * before < after < 1.35 * before


@pytest.mark.parametrize(("dims", "grid"), GRIDS)
def test_flips_move_image_and_label_map_together(dims: int, grid: tuple[int, ...]) -> None:
    """Without rotation and zoom each image is flipped along some axes, times an intensity factor in 1 +- 0.1."""
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(8, 2, *grid, generator=generator) + 0.5
    masks = torch.randint(0, 3, (8, 1, *grid), generator=generator).to(torch.uint8)
    pipeline = SegmentationPipeline(augment=True, spatial_dims=dims, max_rotation_deg=0.0, max_zoom=0.0).train()
    x, y = pipeline.pair(images, masks, torch.Generator().manual_seed(4))
    axes_seen = set()
    for b in range(8):
        flips = [
            axes
            for k in range(dims + 1)
            for axes in itertools.combinations(range(1, dims + 1), k)
            if torch.equal(torch.flip(masks[b].long(), axes), y[b])
        ]
        assert len(flips) == 1, f"image {b}: the label map is no flip of the original"
        flipped = torch.flip(images[b], flips[0])
        scale = float((x[b] / flipped).median())
        assert abs(scale - 1.0) <= 0.1 + 1e-6
        torch.testing.assert_close(x[b], scale * flipped, atol=1e-4, rtol=1e-3)
        axes_seen.add(flips[0])
    assert len(axes_seen) > 1, "flips are random"


@pytest.mark.parametrize(("dims", "grid"), GRIDS)
def test_the_same_seed_gives_the_same_batch(dims: int, grid: tuple[int, ...]) -> None:
    images, masks = torch.randn(4, 1, *grid), blobs(4, grid)
    pipeline = SegmentationPipeline(augment=True, spatial_dims=dims).train()
    first = pipeline.pair(images, masks, torch.Generator().manual_seed(7))
    again = pipeline.pair(images, masks, torch.Generator().manual_seed(7))
    other = pipeline.pair(images, masks, torch.Generator().manual_seed(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("dims", [2, 3])
def test_random_affines_are_bounded_flips_rotations_and_zooms(dims: int) -> None:
    max_rotation, max_zoom = math.radians(15.0), 0.1
    theta = random_affines_nd(500, dims, max_rotation, max_zoom, torch.Generator().manual_seed(0))
    assert theta.shape == (500, dims, dims + 1) and theta.dtype == torch.float32
    assert torch.count_nonzero(theta[:, :, dims]) == 0, "no translation"
    linear = theta[:, :, :dims].double()
    # linear = rotation / zoom with a flip per axis: its columns are orthogonal, of length 1 / zoom
    gram = linear.transpose(1, 2) @ linear
    lengths = torch.diagonal(gram, dim1=1, dim2=2).sqrt()
    assert torch.allclose(lengths, lengths[:, :1].expand_as(lengths), atol=1e-6)
    off_diagonal = gram - torch.diag_embed(torch.diagonal(gram, dim1=1, dim2=2))
    assert off_diagonal.abs().max() < 1e-6
    zoom = 1 / lengths[:, 0]
    assert zoom.min() >= 1 - max_zoom - 1e-6 and zoom.max() <= 1 + max_zoom + 1e-6
    i, j = dims - 2, dims - 1  # the in-plane axes
    angle = torch.atan2(linear[:, j, i].abs(), linear[:, i, i].abs())
    assert angle.max() <= max_rotation + 1e-6 and angle.max() > 0.8 * max_rotation
    if dims == 3:  # the rotation is about the first axis, which only flips and zooms
        assert torch.count_nonzero(linear[:, 0, 1:]) == 0 and torch.count_nonzero(linear[:, 1:, 0]) == 0
    signs = torch.sign(torch.linalg.det(linear))
    assert set(signs.tolist()) == {-1.0, 1.0}, "flips change the orientation of some images, not all"


# ---------------------------------------------------------------- patches


@pytest.mark.parametrize(("dims", "grid", "patch"), [(2, (48, 32), (32, 16)), (3, (32, 32, 48), (16, 32, 16))])
def test_patches_cut_image_and_label_map_at_the_same_place(
    dims: int, grid: tuple[int, ...], patch: tuple[int, ...]
) -> None:
    masks = blobs(6, grid)
    x, y = random_patches(masks.float(), masks.long(), patch, torch.Generator().manual_seed(0))
    assert x.shape == (6, 1, *patch) and y.shape == (6, 1, *patch)
    assert torch.equal(x, y.float())
    pipeline = SegmentationPipeline(augment=False, spatial_dims=dims, patch=patch).train()
    x, y = pipeline.pair(masks.float(), masks, torch.Generator().manual_seed(1))
    assert x.shape == (6, 1, *patch) and torch.equal(x, y.float())
    with pytest.raises(ValueError, match="does not fit"):
        random_patches(masks.float(), masks.long(), tuple(s + 16 for s in grid))


def test_two_thirds_of_patches_are_centred_on_a_labelled_voxel() -> None:
    """One labelled voxel in a corner: patches hold it about 2/3 + 1/3 * (9/32)^2 of the time."""
    masks = torch.zeros(600, 1, 32, 32, dtype=torch.long)
    masks[:, 0, 0, 0] = 1
    _, y = random_patches(masks.float(), masks, (16, 16), torch.Generator().manual_seed(0))
    share = float((y.flatten(1).amax(dim=1) > 0).float().mean())
    assert share == pytest.approx(2 / 3 + (9 / 32) ** 2 / 3, abs=0.06)


@pytest.mark.parametrize(("dims", "mirrored"), [(2, {1}), (3, {0, 1, 2})])
def test_2d_images_are_mirrored_left_right_only_and_volumes_along_every_axis(dims: int, mirrored: set[int]) -> None:
    theta = random_affines_nd(400, dims, 0.0, 0.0, torch.Generator().manual_seed(0))
    diagonal = torch.diagonal(theta[:, :, :dims], dim1=1, dim2=2)
    for axis in range(dims):
        signs = set(diagonal[:, axis].tolist())
        assert signs == ({-1.0, 1.0} if axis in mirrored else {1.0}), (axis, signs)
