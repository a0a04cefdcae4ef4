"""Image tensors, resizing and the batch pipeline (scaling + augmentation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedward.common.choices import Task
from fedward.common.data.images import BatchPipeline, ImageDataset, random_affines, to_model_size


def test_channel_first_without_resampling() -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    out = to_model_size(images, 28)
    assert out.shape == (2, 1, 28, 28) and out.dtype == torch.uint8
    assert torch.equal(out[:, 0], torch.from_numpy(images))


@pytest.mark.parametrize(("source", "target"), [(28, 64), (64, 28), (28, 224)])
def test_resize_grayscale_and_rgb(source: int, target: int) -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(3, source, source), dtype=np.uint8)
    rgb = rng.integers(0, 256, size=(3, source, source, 3), dtype=np.uint8)
    assert to_model_size(gray, target).shape == (3, 1, target, target)
    assert to_model_size(rgb, target).shape == (3, 3, target, target)


def test_resize_keeps_a_constant_image_constant() -> None:
    flat = np.full((2, 28, 28), 77, dtype=np.uint8)
    assert torch.all(to_model_size(flat, 64) == 77)


def test_dataset_items_and_class_counts() -> None:
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    single = ImageDataset(images, np.array([[0], [1], [1], [1]]), Task.BINARY, 2)
    image, target = single[1]
    assert image.shape == (1, 8, 8) and target.dtype == torch.int64 and int(target) == 1
    assert single.class_counts().tolist() == [1, 3]
    multi = ImageDataset(images, np.array([[0, 1], [1, 1], [0, 0], [0, 1]]), Task.MULTILABEL, 2)
    assert multi[0][1].dtype == torch.float32
    assert multi.class_counts().tolist() == [1, 3]


def test_pipeline_scales_to_unit_range_without_augmenting_in_eval() -> None:
    batch = torch.tensor([[[[0, 255], [128, 64]]]], dtype=torch.uint8)
    out = BatchPipeline(augment=True).eval()(batch)
    assert out.dtype == torch.float32
    assert torch.allclose(out, batch.float() / 255)


def test_augmentation_is_per_image_and_seeded() -> None:
    batch = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    pipe = BatchPipeline(augment=True).train()
    a = pipe(batch, torch.Generator().manual_seed(1))
    b = pipe(batch, torch.Generator().manual_seed(1))
    c = pipe(batch, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.allclose(a, batch.float() / 255)
    assert a.min() >= -1e-6 and a.max() <= 1 + 1e-6


def test_random_affines_are_rotations_zooms_and_flips() -> None:
    theta = random_affines(1000, math.radians(15), 0.1, torch.Generator().manual_seed(0))
    assert theta.shape == (1000, 2, 3)
    assert torch.all(theta[:, :, 2] == 0)
    det = torch.linalg.det(theta[:, :, :2])
    scale = det.abs().sqrt()
    assert torch.all((scale > 1 / 1.1 - 1e-5) & (scale < 1 / 0.9 + 1e-5))
    flipped = (det < 0).float().mean()
    assert 0.4 < float(flipped) < 0.6


def test_no_augmentation_gives_identity_when_ranges_are_zero() -> None:
    batch = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8)
    pipe = BatchPipeline(augment=True, max_rotation_deg=0.0, max_zoom=0.0).train()
    out = pipe(batch, torch.Generator().manual_seed(0))
    # Only flips remain: every image equals the original or its mirror.
    for original, result in zip(batch.float() / 255, out, strict=True):
        assert torch.allclose(result, original, atol=1e-4) or torch.allclose(result, original.flip(-1), atol=1e-4)


def test_the_batch_pipeline_gives_plain_tensors_not_metatensors() -> None:
    """A MetaTensor input would send every op of the network through MONAI's metadata bookkeeping."""
    batch = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    for augment in (False, True):
        pipeline = BatchPipeline(augment=augment).train()
        out = pipeline(batch, torch.Generator().manual_seed(0))
        assert type(out) is torch.Tensor
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
