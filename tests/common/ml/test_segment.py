"""fedward.common.ml.segment and training with it: SegmentationHead's loss, windows, scores, federation, learning."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss, DiceFocalLoss
from monai.networks.nets import UNet
from torch import nn

from fedward.common.choices import ClassWeighting, Schedule, SegLoss
from fedward.common.config.sections import TrainConfig
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.segdata import SegmentationDataset, SegmentationPipeline, concat_mask_splits
from fedward.common.errors import DataError
from fedward.common.ml.accounting import DpSgd
from fedward.common.ml.segment import EVAL_BATCH_SIZE, SegmentationHead, make_seg_loss, segment
from fedward.common.ml.training import LocalTraining, train_epochs
from fedward.common.wire import NUM_EXAMPLES

CPU = torch.device("cpu")


# ---------------------------------------------------------------- helpers


def split_of(images: np.ndarray, masks: np.ndarray, spacing: np.ndarray | None = None) -> MaskSplit:
    """A MaskSplit of float images (N, *S) or (N, C, *S) and uint8 label maps (N, *S)."""
    n = masks.shape[0]
    images = images[:, None] if images.ndim == masks.ndim else images
    spacing = np.ones((n, masks.ndim - 1)) if spacing is None else spacing
    return MaskSplit(images.astype(np.float32), masks.astype(np.uint8), np.zeros((n, 1), np.int64), spacing)


class LabelsAsLogits(nn.Module):
    """Confident logits (+-10) of the label map an image holds (an image equal to its label map).

    Args:
        num_classes: labels K, background included.
        shift: voxels the prediction is moved by along spatial axis ``axis`` (0: the first).
    """

    def __init__(self, num_classes: int, shift: int = 0, axis: int = 0) -> None:
        super().__init__()
        self.num_classes, self.shift, self.axis = num_classes, shift, axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = torch.roll(x[:, 0].round().long(), self.shift, dims=self.axis + 1)
        return 20.0 * nn.functional.one_hot(labels, self.num_classes).movedim(-1, 1).float() - 10.0


class Thresholds(nn.Module):
    """Three-label logits of a grey image: background below 0.3, label 1 in [0.3, 0.6), label 2 above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20 * torch.cat([0.3 - x, torch.minimum(x - 0.3, 0.6 - x), x - 0.6], dim=1)


class Recorder(nn.Module):
    """A pointwise network (a 1 x 1 convolution) that records the spatial shape of every input."""

    def __init__(self, dims: int, outputs: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(1, outputs, 1)
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.extend([tuple(x.shape[2:])] * x.shape[0])
        return self.conv(x)  # type: ignore[no-any-return]


def squares(n: int, size: int = 32, side: int = 8) -> np.ndarray:
    """uint8 (n, size, size) label maps: one side x side square of label 1 at a varying place."""
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        top, left = 4 + i % 12, 4 + (3 * i) % 12
        masks[i, top : top + side, left : left + side] = 1
    return masks


def hospital(n: int, seed: int, with_structures: float, noise: float = 0.12) -> MaskSplit:
    """Grey images of two labelled boxes plus Gaussian ``noise``; a share ``with_structures`` of them holds any."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, 32, 32), np.uint8)
    for i in range(n):
        if rng.random() < with_structures:
            r, c = rng.integers(4, 20, 2)
            masks[i, r : r + 8, c : c + 8] = 1
            if rng.random() < 0.5:
                r, c = rng.integers(4, 20, 2)
                masks[i, r : r + 6, c : c + 6] = 2
    images = 0.4 * masks + rng.normal(0.0, noise, masks.shape)
    return split_of(images, masks, rng.uniform(0.5, 2.0, (n, 2)))


def wire_report(head: SegmentationHead, model: nn.Module, split: MaskSplit) -> dict[str, float]:
    """What a hospital's ClientApp sends after scoring the global model on its validation split."""
    result = head.evaluate(model, SegmentationDataset(split, len(head.names) + 1), CPU)
    return {NUM_EXAMPLES: float(result.num_examples), **result.metrics.wire("val")}


def blocky(n: int, grid: tuple[int, ...], seed: int, cell: int = 4) -> MaskSplit:
    """Piecewise-constant images (cells of ``cell`` voxels with values uniform in [0, 1]) and mask = image > 0.5."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 1.0, (n, *[g // cell for g in grid]))
    for axis in range(1, len(grid) + 1):
        images = np.repeat(images, cell, axis=axis)
    return split_of(images, images > 0.5)


def tiny_unet(dims: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return UNet(dims, 1, 2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)


TRAIN = TrainConfig(
    local_epochs=1,
    batch_size=8,
    lr=1e-2,
    schedule=Schedule.CONSTANT,
    class_weighting=ClassWeighting.NONE,
    device="cpu",  # type: ignore[arg-type]
)


# ---------------------------------------------------------------- loss and pipeline


@pytest.mark.parametrize(("choice", "kind"), [(SegLoss.DICE_CE, DiceCELoss), (SegLoss.DICE_FOCAL, DiceFocalLoss)])
def test_the_criterion_is_the_configured_monai_loss(choice: SegLoss, kind: type[nn.Module]) -> None:
    head = SegmentationHead(("lesion",))
    dataset = SegmentationDataset(split_of(np.zeros((2, 16, 16)), np.zeros((2, 16, 16))), 2)
    criterion = head.criterion(dataset, TrainConfig(seg_loss=choice), CPU)
    assert isinstance(criterion, kind) and isinstance(make_seg_loss(choice), kind)
    truth = torch.from_numpy(squares(2, 16, 6)).long()[:, None]
    right = LabelsAsLogits(2)(truth.float())
    wrong = LabelsAsLogits(2)(1.0 - truth.float())
    assert float(criterion(right, truth)) < 0.01 < 1.0 < float(criterion(wrong, truth))


def test_the_pipeline_augments_jointly_in_the_dataset_s_dimensions_with_the_patch() -> None:
    pipeline = SegmentationHead(("a", "b"), patch=(16, 32, 16)).pipeline(augment=True, spatial_dims=3)
    assert isinstance(pipeline, SegmentationPipeline)
    assert pipeline.augment and pipeline.spatial_dims == 3 and pipeline.patch == (16, 32, 16)
    plain = SegmentationHead(("a",)).pipeline(augment=False)
    assert not plain.augment and plain.spatial_dims == 2 and plain.patch == ()


# ---------------------------------------------------------------- segment: forward passes and windows


def test_2d_images_get_one_plain_forward_pass() -> None:
    model = Recorder(2).eval()
    images = torch.rand(3, 1, 32, 48)
    logits = segment(model, images, 2)
    assert logits.dtype == torch.float32 and logits.shape == (3, 3, 32, 48)
    assert torch.equal(logits, model.conv(images))
    assert model.shapes[-3:] == [(32, 48)] * 3


def test_volumes_on_the_grid_are_one_window_each() -> None:
    model = Recorder(3).eval()
    images = torch.rand(2, 1, 16, 32, 24)
    logits = segment(model, images, 3)
    assert logits.shape == (2, 3, 16, 32, 24)
    assert model.shapes == [(16, 32, 24)] * 2
    torch.testing.assert_close(logits, model.conv(images), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("dims", "grid", "window"), [(3, (32, 48, 32), (16, 32, 16)), (2, (64, 48), (32, 32))])
def test_windows_smaller_than_the_grid_slide_and_blend_back_to_the_whole_prediction(
    dims: int, grid: tuple[int, ...], window: tuple[int, ...]
) -> None:
    """A pointwise network predicts the same everywhere however the grid is cut: blending must give it back."""
    model = Recorder(dims).eval()
    images = torch.rand(2, 1, *grid)
    logits = segment(model, images, dims, window)
    assert logits.shape == (2, 3, *grid)
    assert set(model.shapes) == {window} and len(model.shapes) > 2 * 2  # several windows per image
    torch.testing.assert_close(logits, model.conv(images), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- evaluate


def test_a_perfect_prediction_scores_dice_one_and_hd95_zero() -> None:
    masks = np.zeros((5, 32, 32), np.uint8)
    masks[:, 4:12, 4:12] = 1
    masks[:, 16:28, 10:20] = 2
    masks[4, 16:28, 10:20] = 0  # one image without label 2
    head = SegmentationHead(("liver", "tumour"))
    result = head.evaluate(LabelsAsLogits(3), SegmentationDataset(split_of(masks, masks), 3), CPU)
    assert result.num_examples == 5
    metrics = result.metrics.as_dict("val")
    for name in ("val-dice", "val-dice-liver", "val-dice-tumour", "val-pooled-dice"):
        assert metrics[name] == pytest.approx(1.0)
    for name in ("val-hd95", "val-hd95-liver", "val-hd95-tumour"):
        assert metrics[name] == pytest.approx(0.0, abs=1e-6)
    assert 0 <= metrics["val-loss"] < 0.01
    wire = result.metrics.wire("val")
    assert wire["val-count-images"] == 5 and wire["val-count-dice-tumour"] == 4 and wire["val-count-dice-liver"] == 5


def test_hd95_uses_each_image_s_own_spacing_across_batches() -> None:
    """A prediction 2 rows off: HD95 = 2 x the row spacing of each image; images span several batches."""
    n = 2 * EVAL_BATCH_SIZE + 3
    masks = squares(n)
    spacing = np.stack([np.arange(1, n + 1, dtype=np.float64), np.full(n, 0.25)], axis=1)  # (row, column) mm
    head = SegmentationHead(("lesion",))
    dataset = SegmentationDataset(split_of(masks, masks, spacing), 2)
    metrics = head.evaluate(LabelsAsLogits(2, shift=2, axis=0), dataset, CPU).metrics.as_dict("test")
    assert metrics["test-hd95-lesion"] == pytest.approx(2 * spacing[:, 0].mean(), rel=1e-6)
    assert metrics["test-dice-lesion"] == pytest.approx(2 * 6 * 8 / (64 + 64))  # 6 of 8 rows overlap
    assert metrics["test-pooled-dice-lesion"] == pytest.approx(0.75)


@pytest.mark.parametrize("loss", list(SegLoss))
def test_the_reported_loss_is_the_head_s_loss(loss: SegLoss) -> None:
    masks = squares(4)
    images = np.clip(masks + np.random.default_rng(0).normal(0, 0.3, masks.shape), 0, 1)
    model = nn.Conv2d(1, 2, 3, padding=1)
    head = SegmentationHead(("lesion",), loss)
    metrics = head.evaluate(model, SegmentationDataset(split_of(images, masks), 2), CPU).metrics.as_dict("val")
    x, truth = torch.from_numpy(images).float()[:, None], torch.from_numpy(masks).long()[:, None]
    with torch.no_grad():
        expected = float(make_seg_loss(loss)(model(x), truth))
    assert metrics["val-loss"] == pytest.approx(expected, rel=1e-5)


def test_volumes_are_scored_through_windows_of_the_patch() -> None:
    masks = np.zeros((3, 32, 32, 48), np.uint8)
    masks[:, 4:20, 8:24, 10:40] = 1
    model = LabelsAsLogits(2)
    result = SegmentationHead(("hippocampus",), patch=(16, 16, 16)).evaluate(
        model, SegmentationDataset(split_of(masks, masks), 2), CPU
    )
    metrics = result.metrics.as_dict("val")
    assert metrics["val-dice"] == pytest.approx(1.0) and metrics["val-hd95"] == pytest.approx(0.0, abs=1e-6)


def test_an_empty_split_is_refused() -> None:
    empty = SegmentationDataset(MaskSplit.empty(1, (32, 32)), 2)
    with pytest.raises(DataError, match="no images"):
        SegmentationHead(("lesion",)).evaluate(LabelsAsLogits(2), empty, CPU)


# ---------------------------------------------------------------- federate


def test_federated_dice_is_the_dice_of_the_pooled_hospitals_not_a_mean_of_theirs() -> None:
    """Two hospitals' wire metrics federate to exactly the metrics of scoring their images together.

    Sizes are multiples of the scoring batch, so the pooled data set's batches are the hospitals'
    batches and even the (batch-wise Dice) loss adds up exactly.
    """
    head = SegmentationHead(("cyst", "tumour"))
    model = Thresholds()
    small, large = hospital(EVAL_BATCH_SIZE, 0, 0.3, noise=0.08), hospital(2 * EVAL_BATCH_SIZE, 1, 1.0, noise=0.14)
    reports = [wire_report(head, model, small), wire_report(head, model, large)]
    federated = head.federate(reports)
    pooled = head.evaluate(model, SegmentationDataset(concat_mask_splits([small, large]), 3), CPU)
    expected = pooled.metrics.wire("val")
    assert {k for k in federated if k != NUM_EXAMPLES and not k.startswith("val-")} == set()
    for key, value in expected.items():
        assert federated[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert federated[NUM_EXAMPLES] == 3 * EVAL_BATCH_SIZE
    sizes = [r[NUM_EXAMPLES] for r in reports]
    for key in ("val-dice", "val-dice-cyst", "val-dice-tumour"):
        hospitals = [r[key] for r in reports]
        assert abs(federated[key] - np.mean(hospitals)) > 1e-3, f"{key} is no plain mean"
        assert abs(federated[key] - np.average(hospitals, weights=sizes)) > 1e-3, f"{key} is no image-weighted mean"
    assert head.federate([federated]) == pytest.approx(federated)  # the record can be federated again


def test_plain_metrics_of_the_hospitals_are_weighted_by_their_images() -> None:
    head = SegmentationHead(("lesion",))
    reports = [wire_report(head, LabelsAsLogits(2), split_of(m, m)) for m in (squares(2), squares(6))]
    reports[0]["eval-seconds"], reports[1]["eval-seconds"] = 1.0, 3.0
    assert head.federate(reports)["eval-seconds"] == pytest.approx((2 * 1.0 + 6 * 3.0) / 8)


def test_a_hospital_without_validation_images_is_left_out_of_the_federation() -> None:
    head = SegmentationHead(("cyst", "tumour"))
    report = wire_report(head, Thresholds(), hospital(EVAL_BATCH_SIZE, 0, 1.0))
    empty = {NUM_EXAMPLES: 0.0}  # evaluate_global's reply when len(site.val) == 0
    assert head.federate([report, empty]) == pytest.approx(head.federate([report]))


# ---------------------------------------------------------------- training with the segmentation head


def train_and_score(
    dims: int, grid: tuple[int, ...], n: int, *, epochs: int, augment: bool
) -> tuple[float, float, nn.Module]:
    head = SegmentationHead(("foreground",))
    train = SegmentationDataset(blocky(n, grid, seed=0), 2)
    val = SegmentationDataset(blocky(8, grid, seed=1), 2)
    model = tiny_unet(dims)
    before = head.evaluate(model, val, CPU).metrics.as_dict("val")["val-dice"]
    plan = LocalTraining(epochs=epochs, first_epoch=0, total_epochs=epochs, seed=0)
    result = train_epochs(model, train, TRAIN, plan, CPU, head=head, augment=augment)
    assert result.num_examples == n and result.steps == epochs * -(-n // TRAIN.batch_size)
    after = head.evaluate(model, val, CPU).metrics.as_dict("val")["val-dice"]
    return before, after, model


@pytest.mark.parametrize(
    ("dims", "grid", "n", "augment"),
    [(2, (32, 32), 24, False), (2, (32, 32), 24, True), (3, (16, 16, 16), 12, False)],
    ids=["2d", "2d-augmented", "3d"],
)
def test_a_tiny_unet_learns_mask_equals_image_above_one_half(
    dims: int, grid: tuple[int, ...], n: int, augment: bool
) -> None:
    """Augmented batches keep their label maps in step with the images, or the U-Net could not learn this."""
    before, after, _ = train_and_score(dims, grid, n, epochs=5, augment=augment)
    assert after > before + 0.2
    assert after > 0.8


def test_same_seed_trains_bit_identical_segmentation_weights() -> None:
    weights = []
    for _ in range(2):
        _, _, model = train_and_score(2, (32, 32), 16, epochs=1, augment=True)
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def per_image_gradients(
    model: nn.Module, criterion: nn.Module, images: torch.Tensor, masks: torch.Tensor
) -> torch.Tensor:
    """Opacus' per-sample gradients (B, P) of ``criterion`` on a batch, as DP-SGD clips them."""
    from opacus import GradSampleModule

    private = GradSampleModule(model)
    private.zero_grad(set_to_none=True)
    criterion(private(images), masks).backward()
    grads = torch.cat([p.grad_sample.flatten(1) for p in private.parameters()], dim=1)  # type: ignore[union-attr]
    private._close()
    return grads


def test_under_dpsgd_an_image_s_gradient_does_not_depend_on_the_rest_of_its_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fedward.common.ml import training

    used: list[nn.Module] = []
    real_step: Callable[..., float] = training._train_step

    def spy(session: training._Session, *args: object) -> float:
        used.append(session.criterion)
        return real_step(session, *args)

    monkeypatch.setattr(training, "_train_step", spy)
    data = SegmentationDataset(blocky(8, (16, 16), seed=0), 2)
    dpsgd = DpSgd.plan(
        images=8, batch_size=4, local_epochs=1, rounds=1, clipping_norm=1.0, delta=1e-5, noise_multiplier=1.0
    )
    plan = LocalTraining(epochs=1, first_epoch=0, total_epochs=1, seed=0)
    train_epochs(tiny_unet(2), data, TRAIN, plan, CPU, head=SegmentationHead(("fg",)), augment=False, dpsgd=dpsgd)
    assert used, "DP-SGD took no step"
    criterion = used[0]  # the loss DP-SGD minimises
    masks = torch.zeros(2, 1, 16, 16, dtype=torch.long)
    masks[0, 0, 6:10, 6:10] = 1  # a small structure
    masks[1, 0, 2:14, 2:14] = 1  # and a large one
    together = per_image_gradients(tiny_unet(2, seed=1), criterion, masks.float(), masks)
    alone = per_image_gradients(tiny_unet(2, seed=1), criterion, masks[:1].float(), masks[:1])
    # float32 round-off of a loss that decomposes over images is ~1e-7 of the gradient; batch Dice moves it ~10 %
    assert float((together[0] - alone[0]).norm() / alone[0].norm()) < 1e-4
