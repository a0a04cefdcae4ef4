"""fedward.common.ml.tasks and classify: head_for picks a task's head; ClassificationHead's loss, batches, scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedward.common.choices import ClassWeighting, Modality, SegLoss, Task
from fedward.common.config import RunConfig
from fedward.common.config.sections import DataConfig, TrainConfig
from fedward.common.data.images import BatchPipeline, ImageDataset
from fedward.common.data.segdata import SegmentationPipeline
from fedward.common.errors import DataError
from fedward.common.ml.classify import ClassificationHead, LogitAdjustedLoss, class_weights, logit_offsets
from fedward.common.ml.metrics import METRIC_NAMES
from fedward.common.ml.segment import SegmentationHead
from fedward.common.ml.tasks import head_for
from fedward.common.schema import DatasetSchema
from fedward.common.wire import NUM_EXAMPLES

CPU = torch.device("cpu")

PNEUMONIA = DatasetSchema(Task.BINARY, ("normal", "pneumonia"), 1)
ORGANS = DatasetSchema(Task.MULTICLASS, ("liver", "kidney", "spleen"), 1)
FINDINGS = DatasetSchema(Task.MULTILABEL, ("effusion", "nodule", "mass"), 1)
LESION = DatasetSchema(Task.SEGMENTATION, ("background", "lesion"), 1, 2, Modality.US)
HIPPOCAMPUS = DatasetSchema(Task.SEGMENTATION, ("background", "anterior", "posterior"), 1, 3, Modality.MR)


class FirstPixel(nn.Module):
    """Binary logits from the first pixel of each image: ``+-10 (p - 0.5)`` (p scaled to [0, 1])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x[:, 0, 0, 0]
        return torch.stack([-10 * (p - 0.5), 10 * (p - 0.5)], dim=1)


def coded_images(labels: list[int]) -> ImageDataset:
    """4 x 4 grey images whose first pixel is 255 for class 1 and 0 for class 0, the rest noise."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(len(labels), 1, 4, 4), dtype=np.uint8)
    images[:, 0, 0, 0] = np.array(labels, dtype=np.uint8) * 255
    return ImageDataset(torch.from_numpy(images), np.array(labels, np.int64).reshape(-1, 1), Task.BINARY, 2)


@pytest.mark.parametrize("schema", [PNEUMONIA, ORGANS, FINDINGS])
def test_classification_schemas_get_the_classification_head(schema: DatasetSchema) -> None:
    head = head_for(schema, RunConfig(train=TrainConfig(seg_loss=SegLoss.DICE_FOCAL)))  # segmentation settings: unused
    assert isinstance(head, ClassificationHead)
    assert head.classes == schema.classes
    assert head.selection_metric == "val-auc"
    assert set(METRIC_NAMES) <= set(head.reported) and "balanced-accuracy" in head.reported


@pytest.mark.parametrize("loss", list(SegLoss))
def test_segmentation_schemas_get_the_segmentation_head_with_the_run_s_settings(loss: SegLoss) -> None:
    data = DataConfig(volume_size=(48, 64, 48), patch_size=(32, 32, 32))
    head = head_for(HIPPOCAMPUS, RunConfig(data=data, train=TrainConfig(seg_loss=loss)))
    assert isinstance(head, SegmentationHead)
    assert head.names == ("anterior", "posterior")  # the background is not a scored structure
    assert head.loss is loss and head.patch == (32, 32, 32)
    assert head.selection_metric == "val-dice"
    assert {"dice", "hd95", "dice-anterior", "dice-posterior", "hd95-posterior", "loss"} <= set(head.reported)
    assert not any("background" in name for name in head.reported)
    default = head_for(LESION)
    assert isinstance(default, SegmentationHead) and default.names == ("lesion",)
    assert default.loss is SegLoss.DICE_CE and default.patch == ()  # no config: whole images, Dice + CE


def test_selection_metrics_are_validation_metrics_never_test_metrics() -> None:
    for schema in (PNEUMONIA, ORGANS, FINDINGS, LESION, HIPPOCAMPUS):
        assert head_for(schema).selection_metric.startswith("val-")


def test_balanced_criterion_weights_classes_from_the_dataset_s_own_labels() -> None:
    dataset = coded_images([0, 0, 0, 1])
    head = ClassificationHead(PNEUMONIA.classes)
    criterion = head.criterion(dataset, TrainConfig(class_weighting=ClassWeighting.BALANCED), CPU)
    assert isinstance(criterion, nn.CrossEntropyLoss)
    expected = class_weights(Task.BINARY, np.array([3, 1]), 4)
    torch.testing.assert_close(criterion.weight, expected)
    assert criterion.weight.tolist() == pytest.approx([4 / 6, 4 / 2])
    unweighted = head.criterion(dataset, TrainConfig(class_weighting=ClassWeighting.NONE), CPU)
    assert isinstance(unweighted, nn.CrossEntropyLoss) and unweighted.weight is None


def test_logit_adjusted_criterion_shifts_logits_by_the_hospital_s_smoothed_prior() -> None:
    dataset = ImageDataset(
        torch.zeros(4, 1, 4, 4, dtype=torch.uint8), np.array([[0], [0], [0], [1]]), Task.MULTICLASS, 3
    )
    config = TrainConfig(class_weighting=ClassWeighting.LOGIT_ADJUSTED)
    criterion = ClassificationHead(ORGANS.classes).criterion(dataset, config, CPU)
    assert isinstance(criterion, LogitAdjustedLoss)
    # add-one smoothing: the absent class "spleen" gets a finite offset below the others
    assert criterion.offsets.tolist() == pytest.approx([math.log(4 / 7), math.log(2 / 7), math.log(1 / 7)])
    logits, targets = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    expected = nn.functional.cross_entropy(logits + criterion.offsets, targets)
    torch.testing.assert_close(criterion(logits, targets), expected)


def test_logit_adjustment_learns_balanced_logits_where_plain_cross_entropy_learns_the_prior() -> None:
    """Bias-only classifiers on a 90/10 hospital: plain CE learns log-prior logits, the adjusted loss equal ones."""
    labels = torch.tensor([0] * 90 + [1] * 10)
    counts = np.array([90, 10])
    learnt = {}
    for name, loss in (
        ("plain", nn.CrossEntropyLoss()),
        ("adjusted", LogitAdjustedLoss(Task.BINARY, logit_offsets(Task.BINARY, counts, 100))),
    ):
        bias = torch.zeros(2, requires_grad=True)
        optimizer = torch.optim.SGD([bias], lr=1.0)
        for _ in range(500):
            optimizer.zero_grad()
            loss(bias.expand(100, 2), labels).backward()
            optimizer.step()
        learnt[name] = torch.softmax(bias.detach(), 0)[1].item()
    assert learnt["plain"] == pytest.approx(0.10, abs=0.01)
    # balanced but for the add-one smoothing of the prior: odds (10 / 90) / (11 / 91)
    assert learnt["adjusted"] == pytest.approx(910 / (910 + 990), abs=0.005)


def test_multilabel_logit_offsets_are_the_smoothed_log_odds() -> None:
    offsets = logit_offsets(Task.MULTILABEL, np.array([10, 50, 0]), 100)
    assert offsets.tolist() == pytest.approx([math.log(11 / 91), 0.0, math.log(1 / 101)], rel=1e-6)


def test_multilabel_criterion_is_bce_with_positive_weights() -> None:
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 1]], np.int64)
    dataset = ImageDataset(torch.zeros(4, 1, 4, 4, dtype=torch.uint8), labels, Task.MULTILABEL, 3)
    criterion = ClassificationHead(FINDINGS.classes).criterion(dataset, TrainConfig(), CPU)
    assert isinstance(criterion, nn.BCEWithLogitsLoss)
    assert criterion.pos_weight.tolist() == pytest.approx([1 / 3, 3.0, 3.0])  # (n - p) / p


def test_classification_pipeline_scales_uint8_and_augments_only_when_asked() -> None:
    head = ClassificationHead()
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    targets = torch.tensor([0, 1, 1, 0])
    plain = head.pipeline(augment=False)
    assert isinstance(plain, BatchPipeline)
    x, y = plain.train().pair(images, targets)
    torch.testing.assert_close(x, images.float() / 255)
    assert y is targets
    augmenting = head.pipeline(augment=True, spatial_dims=2)
    x_eval, _ = augmenting.eval().pair(images, targets)
    torch.testing.assert_close(x_eval, images.float() / 255)
    x_train, _ = augmenting.train().pair(images, targets, torch.Generator().manual_seed(0))
    assert x_train.shape == x_eval.shape and not torch.equal(x_train, x_eval)


def test_segmentation_pipeline_comes_with_the_dataset_s_dimensions() -> None:
    pipeline = head_for(HIPPOCAMPUS).pipeline(augment=True, spatial_dims=3)
    assert isinstance(pipeline, SegmentationPipeline)
    assert pipeline.augment and pipeline.spatial_dims == 3


def test_classification_evaluate_scores_unaugmented_probabilities() -> None:
    labels = [0, 1, 1, 0, 1, 0, 0, 1]
    result = ClassificationHead(PNEUMONIA.classes).evaluate(FirstPixel(), coded_images(labels), CPU)
    assert result.num_examples == 8
    metrics = result.metrics.as_dict("val")
    assert metrics["val-auc"] == pytest.approx(1.0)
    assert metrics["val-accuracy"] == metrics["val-sensitivity"] == metrics["val-specificity"] == 1.0
    # every image: softmax of logits (-5, 5) on its true class
    assert metrics["val-loss"] == pytest.approx(math.log1p(math.exp(-10.0)), rel=1e-3)  # float32 softmax
    assert result.metrics.wire("val") == metrics  # classification sends no sums


def test_classification_evaluate_counts_errors() -> None:
    labels = [0, 1, 1, 0]
    dataset = coded_images(labels)
    dataset.targets = torch.tensor([0, 1, 0, 0])  # image 2 looks positive but is labelled negative
    metrics = ClassificationHead().evaluate(FirstPixel(), dataset, CPU).metrics.as_dict("test")
    assert metrics["test-accuracy"] == pytest.approx(0.75)
    assert metrics["test-sensitivity"] == pytest.approx(1.0) and metrics["test-specificity"] == pytest.approx(2 / 3)


def test_classification_evaluate_refuses_an_empty_dataset() -> None:
    empty = ImageDataset(torch.zeros(0, 1, 4, 4, dtype=torch.uint8), np.zeros((0, 1), np.int64), Task.BINARY, 2)
    with pytest.raises(DataError, match="no images"):
        ClassificationHead().evaluate(FirstPixel(), empty, CPU)


def test_classification_federation_weights_hospitals_by_their_images() -> None:
    reports = [
        {NUM_EXAMPLES: 30.0, "val-auc": 0.9, "val-loss": 0.3},
        {NUM_EXAMPLES: 10.0, "val-auc": 0.5, "val-loss": 0.7},
        {NUM_EXAMPLES: 0.0},  # a hospital without validation images counts for nothing
    ]
    federated = ClassificationHead().federate(reports)
    assert federated["val-auc"] == pytest.approx((30 * 0.9 + 10 * 0.5) / 40)
    assert federated["val-loss"] == pytest.approx((30 * 0.3 + 10 * 0.7) / 40)
    assert federated[NUM_EXAMPLES] == 40.0
