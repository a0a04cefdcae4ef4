"""fedward.common.ml.segmetrics and segscores: Dice, pooled Dice and HD95 sums, their federation, bootstrap."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from fedward.common.ml.segmetrics import SegmentationSums, federated_metrics, is_additive, segmentation_key
from fedward.common.ml.segscores import bootstrap_interval, per_image_dice, per_image_hd95

REL = 1e-6  # MONAI computes Dice and distances in float32


def _sums(
    predicted: torch.Tensor, truth: torch.Tensor, spacing: list[list[float]], loss: float = 0.0
) -> SegmentationSums:
    sums = SegmentationSums.zeros(max(int(predicted.max()), int(truth.max()), 1))
    sums.update(predicted, truth, spacing, loss)
    return sums


def _sums_of(predicted: torch.Tensor, truth: torch.Tensor, num_labels: int, loss: float = 0.0) -> SegmentationSums:
    sums = SegmentationSums.zeros(num_labels)
    sums.update(predicted, truth, np.ones((predicted.shape[0], predicted.ndim - 1)), loss)
    return sums


def _two_images_2d() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 6 x 6 images, labels a = 1 and b = 2, counted by hand in the tests below.

    Image 0: truth a = 2 x 2 square, predicted a = 2 x 3 (4 voxels shared): Dice 8 / 10.
             truth b = 2 x 3, predicted b = its lower row (3 shared): Dice 6 / 9.
    Image 1: truth has no a, one voxel predicted a (left out of Dice, counted in volume);
             truth b = 2 voxels, none predicted: Dice 0, a miss left out of HD95.
    """
    truth = torch.zeros(2, 6, 6, dtype=torch.int64)
    predicted = torch.zeros_like(truth)
    truth[0, 0:2, 0:2] = 1
    predicted[0, 0:2, 0:3] = 1
    truth[0, 3:5, 3:6] = 2
    predicted[0, 4, 3:6] = 2
    truth[1, 2:4, 1] = 2
    predicted[1, 5, 5] = 1
    return predicted, truth


def test_2d_two_labels_by_hand() -> None:
    predicted, truth = _two_images_2d()
    # Image 0 is anisotropic: rows 2 mm apart, columns 0.5 mm. Label a is off by one column
    # (HD95 0.5 mm), label b by one row (HD95 2 mm).
    sums = _sums(predicted, truth, [[2.0, 0.5], [1.0, 1.0]], loss=0.6)

    np.testing.assert_allclose(sums.dice_sum, [0.8, 2 / 3], rtol=REL)
    np.testing.assert_array_equal(sums.dice_count, [1, 2])
    np.testing.assert_array_equal(sums.intersection, [4, 3])
    np.testing.assert_array_equal(sums.volume, [6 + 4 + 1, 3 + 6 + 2])
    np.testing.assert_allclose(sums.hd95_sum, [0.5, 2.0], rtol=REL)
    np.testing.assert_array_equal(sums.hd95_count, [1, 1])
    assert sums.images == 2 and sums.loss_sum == pytest.approx(0.6)

    finished = sums.finish("val", ["a", "b"])
    assert finished == pytest.approx(
        {
            "val-dice": (0.8 + 1 / 3) / 2,
            "val-dice-a": 0.8,
            "val-dice-b": (2 / 3 + 0) / 2,
            "val-pooled-dice": 2 * 7 / 22,
            "val-pooled-dice-a": 8 / 11,
            "val-pooled-dice-b": 6 / 11,
            "val-hd95": (0.5 + 2.0) / 2,
            "val-hd95-a": 0.5,
            "val-hd95-b": 2.0,
            "val-loss": 0.3,
        },
        rel=REL,
    )


def test_per_image_scores_by_hand() -> None:
    predicted, truth = _two_images_2d()
    np.testing.assert_allclose(per_image_dice(predicted, truth, 2), [[0.8, 2 / 3], [math.nan, 0.0]], rtol=REL)
    hd95 = per_image_hd95(predicted, truth, [[2.0, 0.5], [1.0, 1.0]], 2)
    np.testing.assert_allclose(hd95, [[0.5, 2.0], [math.nan, math.nan]], rtol=REL)


def test_3d_three_labels_by_hand() -> None:
    truth = torch.zeros(1, 4, 4, 4, dtype=torch.int64)
    predicted = torch.zeros_like(truth)
    truth[0, 0:2, 0:2, 0:2] = 1  # 8 voxels
    predicted[0, 0:2, 0:2, 0:1] = 1  # its first slice along the last axis: 4 shared, Dice 8 / 12
    truth[0, 2:4, 2:4, 2:4] = 2
    predicted[0, 2:4, 2:4, 2:4] = 2  # exact: Dice 1, HD95 0
    predicted[0, 3, 0, 0] = 3  # label 3 is absent from the truth: no Dice, no HD95
    sums = _sums(predicted, truth, [[1.0, 1.0, 3.0]], loss=0.25)

    np.testing.assert_array_equal(sums.dice_count, [1, 1, 0])
    np.testing.assert_array_equal(sums.intersection, [4, 8, 0])
    np.testing.assert_array_equal(sums.volume, [12, 16, 1])
    np.testing.assert_array_equal(sums.hd95_count, [1, 1, 0])
    finished = sums.finish("test", ["x", "y", "z"])
    assert finished == pytest.approx(
        {
            "test-dice": (2 / 3 + 1) / 2,
            "test-dice-x": 2 / 3,
            "test-dice-y": 1.0,
            "test-pooled-dice": 2 * 12 / 29,
            "test-pooled-dice-x": 8 / 12,
            "test-pooled-dice-y": 1.0,
            "test-pooled-dice-z": 0.0,
            "test-hd95": (3.0 + 0.0) / 2,  # a missing slice of a 3 mm-thick voxel layer
            "test-hd95-x": 3.0,
            "test-hd95-y": 0.0,
            "test-loss": 0.25,
        },
        rel=REL,
    )
    assert "test-dice-z" not in finished and "test-hd95-z" not in finished


def test_empty_ground_truth_is_left_out_of_dice() -> None:
    truth = torch.zeros(3, 5, 5, dtype=torch.int64)
    predicted = torch.zeros_like(truth)
    truth[0, 1:3, 1:3] = 1
    predicted[0, 1:3, 1:3] = 1  # Dice 1
    predicted[1, 0, 0] = 1  # empty truth, a false positive: not a Dice of 0
    # image 2: both empty, not a Dice of 1
    np.testing.assert_array_equal(per_image_dice(predicted, truth, 1)[:, 0], [1.0, math.nan, math.nan])
    sums = _sums_of(predicted, truth, 1)
    assert sums.dice_count.tolist() == [1.0] and sums.finish("val", ["lesion"])["val-dice-lesion"] == 1.0
    # The pooled Dice does see the false positive: 2 * 4 / (4 + 4 + 1).
    assert sums.finish("val", ["lesion"])["val-pooled-dice-lesion"] == pytest.approx(8 / 9)


def test_nothing_defined_leaves_the_keys_out() -> None:
    empty = torch.zeros(2, 4, 4, dtype=torch.int64)
    finished = _sums_of(empty, empty, 2, loss=1.0).finish("val", ["a", "b"])
    assert finished == {"val-loss": 0.5}
    assert SegmentationSums.zeros(2).finish("val", ["a", "b"]) == {}


@pytest.mark.parametrize(("spacing", "axis", "shift", "expected"), [
    ((1.0, 1.0), 0, 2, 2.0),
    ((2.0, 0.5), 0, 2, 4.0),
    ((0.5, 2.0), 0, 2, 1.0),
    ((2.0, 0.5), 1, 3, 1.5),
    ((0.7, 1.0, 1.0), 0, 2, 1.4),
    ((1.0, 1.0, 2.5), 2, 1, 2.5),
])  # fmt: skip
def test_hd95_of_a_shifted_square_is_the_shift_in_mm(
    spacing: tuple[float, ...], axis: int, shift: int, expected: float
) -> None:
    size = (12,) * len(spacing)
    truth = torch.zeros(1, *size, dtype=torch.int64)
    square: tuple[int | slice, ...] = (0, *(slice(3, 7) for _ in spacing))
    truth[square] = 1
    predicted = torch.roll(truth, shifts=shift, dims=axis + 1)
    hd95 = per_image_hd95(predicted, truth, [list(spacing)], 1)
    assert hd95[0, 0] == pytest.approx(expected, rel=REL)
    assert _sums(predicted, truth, [list(spacing)]).finish("val", ["s"])["val-hd95-s"] == pytest.approx(expected)


def _random_batch(seed: int, batch: int, num_labels: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Blocky random 3D label maps, some labels absent from some truths, and random spacings."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, num_labels + 2, (batch, 3, 3, 3), generator=generator).clamp(max=num_labels)
    truth = coarse.repeat_interleave(2, 1).repeat_interleave(2, 2).repeat_interleave(2, 3)
    noise = torch.randint(0, num_labels + 1, truth.shape, generator=generator)
    predicted = torch.where(torch.rand(truth.shape, generator=generator) < 0.25, noise, truth)
    truth[0][truth[0] == 1] = 0  # image 0 has no label 1
    spacing = np.random.default_rng(seed).uniform(0.5, 3.0, size=(batch, 3))
    return predicted, truth, spacing


def _assert_same_sums(a: SegmentationSums, b: SegmentationSums) -> None:
    for field in ("dice_sum", "dice_count", "intersection", "volume", "hd95_sum", "hd95_count"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=1e-12, err_msg=field)
    assert a.loss_sum == pytest.approx(b.loss_sum) and a.images == b.images


def test_sums_of_two_halves_are_the_sums_of_the_whole() -> None:
    predicted, truth, spacing = _random_batch(seed=3, batch=6, num_labels=3)
    whole = SegmentationSums.zeros(3)
    whole.update(predicted, truth, spacing, loss_sum=6.0)
    first, second = SegmentationSums.zeros(3), SegmentationSums.zeros(3)
    first.update(predicted[:2], truth[:2], spacing[:2], loss_sum=2.5)
    second.update(predicted[2:], truth[2:], torch.from_numpy(spacing[2:]), loss_sum=3.5)
    assert whole.dice_count[0] == 5  # the empty truth is left out
    _assert_same_sums(first + second, whole)
    assert first.images == 2  # __add__ leaves its operands alone

    names = ["liver", "tumour", "vessel"]
    hospitals = [first.to_wire("val", names), second.to_wire("val", names)]
    assert federated_metrics(hospitals, "val", names) == pytest.approx(
        whole.to_wire("val", names) | whole.finish("val", names), rel=1e-12
    )


def test_federated_dice_is_not_the_mean_of_the_hospitals_means() -> None:
    truth = torch.zeros(4, 4, 4, dtype=torch.int64)
    truth[[0, 2, 3], 1:3, 1:3] = 1  # image 1 has no lesion
    predicted = torch.zeros_like(truth)
    predicted[0] = truth[0]  # Dice 1; images 2 and 3 are missed (Dice 0)
    hospital_a = _sums_of(predicted[:2], truth[:2], 1).to_wire("val", ["lesion"])  # mean Dice 1 over 1 image
    hospital_b = _sums_of(predicted[2:], truth[2:], 1).to_wire("val", ["lesion"])  # mean Dice 0 over 2 images
    federated = federated_metrics([hospital_a, hospital_b], "val", ["lesion"])
    assert federated["val-dice-lesion"] == pytest.approx(1 / 3)
    assert federated["val-dice"] == pytest.approx(1 / 3)
    mean_of_means = (1.0 + 0.0) / 2
    weighted_by_images = (2 * 1.0 + 2 * 0.0) / 4  # what a num-examples weighted average gives
    assert federated["val-dice-lesion"] not in (pytest.approx(mean_of_means), pytest.approx(weighted_by_images))
    assert federated["val-count-dice-lesion"] == 3 and federated["val-count-images"] == 4
    assert federated_metrics([federated], "val", ["lesion"]) == federated  # re-aggregating a record is a no-op


def test_wire_round_trip_and_key_scheme() -> None:
    predicted, truth, spacing = _random_batch(seed=5, batch=3, num_labels=2)
    sums = SegmentationSums.zeros(2)
    sums.update(predicted, truth, spacing, loss_sum=1.5)
    wire = sums.to_wire("val", ["liver", "left-kidney"])
    assert set(wire) == {
        f"val-{kind}-{quantity}-{name}"
        for kind, quantity in (
            ("sum", "dice"),
            ("count", "dice"),
            ("sum", "intersection"),
            ("sum", "volume"),
            ("sum", "hd95"),
            ("count", "hd95"),
        )
        for name in ("liver", "left-kidney")
    } | {"val-sum-loss", "val-count-images"}
    assert all(is_additive(key) and isinstance(value, float) for key, value in wire.items())
    assert not any(is_additive(key) for key in sums.finish("val", ["liver", "left-kidney"]))
    assert not is_additive("val-auc") and not is_additive("num-examples") and not is_additive("val-sum")
    back = SegmentationSums.from_wire(wire | {"val-auc": 0.5}, "val", ["liver", "left-kidney"])
    _assert_same_sums(back, sums)
    assert segmentation_key("test", "pooled", "dice") == "test-pooled-dice"


@pytest.mark.parametrize(("key", "value", "message"), [
    ("val-sum-dice-lesion", None, "'val-sum-dice-lesion' must be a number"),
    ("val-sum-volume-lesion", -1.0, "'val-sum-volume-lesion' must be a number >= 0"),
    ("val-count-images", 2.5, "'val-count-images' must be a whole number"),
    ("val-sum-hd95-lesion", math.nan, "'val-sum-hd95-lesion'"),
    ("val-sum-loss", True, "'val-sum-loss'"),
    ("val-sum-dice-lesion", 5.0, "'val-sum-dice-lesion' is inconsistent"),
    ("val-sum-intersection-lesion", 1000.0, "'val-sum-intersection-lesion' is inconsistent"),
])  # fmt: skip
def test_from_wire_names_the_bad_key(key: str, value: object, message: str) -> None:
    predicted, truth, spacing = _random_batch(seed=1, batch=2, num_labels=1)
    good = _sums(predicted, truth, spacing.tolist()).to_wire("val", ["lesion"])
    wire: dict[str, object] = dict(good)
    if value is None:
        del wire[key]
    else:
        wire[key] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        SegmentationSums.from_wire(wire, "val", ["lesion"])
    with pytest.raises(ValueError, match="hospital 1: .*" + re.escape(key)):
        federated_metrics([good, wire], "val", ["lesion"])


def test_invalid_inputs_are_refused() -> None:
    truth = torch.zeros(1, 4, 4, dtype=torch.int64)
    sums = SegmentationSums.zeros(2)
    with pytest.raises(ValueError, match=r"labels 0\.\.2"):
        sums.update(torch.full_like(truth, 3), truth, [[1.0, 1.0]], 0.0)
    with pytest.raises(ValueError, match=r"labels 0\.\.2"):
        sums.update(truth.float() + 0.5, truth, [[1.0, 1.0]], 0.0)
    with pytest.raises(ValueError, match="one shape"):
        sums.update(torch.zeros(1, 4, 5, dtype=torch.int64), truth, [[1.0, 1.0]], 0.0)
    with pytest.raises(ValueError, match="spacing"):
        sums.update(truth, truth, [[1.0, 1.0, 1.0]], 0.0)
    with pytest.raises(ValueError, match="spacing"):
        sums.update(truth, truth, [[1.0, 0.0]], 0.0)
    with pytest.raises(ValueError, match="label map"):
        sums.update(truth[0], truth[0], [[1.0]], 0.0)
    with pytest.raises(ValueError, match="loss_sum"):
        sums.update(truth, truth, [[1.0, 1.0]], math.inf)
    with pytest.raises(ValueError, match="names"):
        sums.finish("val", ["only-one"])
    with pytest.raises(ValueError, match="prefix"):
        sums.to_wire("val-x", ["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        sums.add(SegmentationSums.zeros(3))
    with pytest.raises(ValueError, match="no hospital"):
        federated_metrics([], "val", ["a", "b"])
    assert sums.images == 0  # nothing was half-accumulated


def test_float_label_maps_of_whole_numbers_are_accepted() -> None:
    predicted, truth, spacing = _random_batch(seed=2, batch=2, num_labels=2)
    as_int, as_float = SegmentationSums.zeros(2), SegmentationSums.zeros(2)
    as_int.update(predicted, truth, spacing, 0.0)
    as_float.update(predicted.float(), truth.to(torch.uint8), spacing, 0.0)
    _assert_same_sums(as_int, as_float)


def test_bootstrap_is_deterministic_and_contains_the_mean() -> None:
    values = np.random.default_rng(0).uniform(0.3, 0.9, size=40)
    interval = bootstrap_interval(values, seed=7)
    assert interval is not None
    low, high = interval
    assert low < values.mean() < high
    assert bootstrap_interval(values, seed=7) == interval
    assert bootstrap_interval(values, seed=8) != interval
    wider = bootstrap_interval(values, seed=7, level=0.99, samples=2000)
    assert wider is not None and wider[0] < low and wider[1] > high
    with_nan = np.concatenate([values, [math.nan, math.nan]])
    assert bootstrap_interval(with_nan, seed=7) == interval  # NaN rows are dropped


def test_bootstrap_edge_cases() -> None:
    assert bootstrap_interval(np.array([0.5, math.nan]), seed=0) is None
    assert bootstrap_interval(np.array([]), seed=0) is None
    assert bootstrap_interval(np.array([0.25, 0.25, 0.25]), seed=0) == (0.25, 0.25)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(np.array([0.1, 0.2]), seed=0, level=1.0)
    with pytest.raises(ValueError, match="samples"):
        bootstrap_interval(np.array([0.1, 0.2]), seed=0, samples=0)
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_interval(np.zeros((2, 2)), seed=0)
