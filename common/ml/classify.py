"""The classification task: its loss, its batches, and scoring a classifier on a split.

:class:`ClassificationHead` is what the task-agnostic code (training loop, hospitals'
evaluation, the server's test split, the centralized baseline) asks of a classification
run (:mod:`fedward.common.ml.tasks`): cross-entropy (BCE for multi-label) with optional
balanced class weights, the uint8 image pipeline (:class:`~fedward.common.data.images.BatchPipeline`),
and the metrics of :func:`~fedward.common.ml.metrics.classification_metrics` on softmax
(single-label) or sigmoid (multi-label) probabilities of the unaugmented images. On CUDA
the forward pass runs under float16 autocast. Hospitals' validation metrics combine into
the federation's as means weighted by their image counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fedward.common.choices import ClassWeighting, Task
from fedward.common.config.evaluation import EvaluationConfig
from fedward.common.config.sections import TrainConfig
from fedward.common.data.images import BatchPipeline, ImageDataset
from fedward.common.errors import DataError
from fedward.common.ml.loader import make_loader
from fedward.common.ml.metrics import METRIC_NAMES, classification_metrics
from fedward.common.ml.operating_choice import OPERATING_HOSPITALS, choose_operating_point, point_from_metrics
from fedward.common.ml.pointscores import ScoredSplit, scores_at
from fedward.common.ml.scores import EvalResult, weighted_means
from fedward.common.ml.valstats import ValidationStatistics, merge_wire
from fedward.common.wire import metric_key

EVAL_BATCH_SIZE = 256
"""Images per forward pass when scoring."""

MAX_CLASS_WEIGHT = 10.0
"""Upper bound of a ``balanced`` class weight (and multi-label ``pos_weight``): a hospital
with 3 images of a class would otherwise weight them 100x and destabilise its update."""


def class_weights(task: Task, counts: np.ndarray, num_examples: int) -> torch.Tensor:
    """Balanced loss weights from local label counts.

    Args:
        task: the task.
        counts: images per class (single-label) or positives per label (multi-label), (K,).
        num_examples: images in the dataset.

    Returns:
        float32 (K,): ``n / (K * n_k)`` per class for single-label tasks (scikit-learn's
        "balanced"), ``(n - p_k) / p_k`` per label for multi-label tasks (BCE
        ``pos_weight``); clipped to [1 / MAX_CLASS_WEIGHT, MAX_CLASS_WEIGHT]; classes
        absent locally get weight 1.
    """
    counts = counts.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = (num_examples - counts) / counts if task is Task.MULTILABEL else num_examples / (len(counts) * counts)
    weights = np.where(counts > 0, weights, 1.0)
    weights = np.clip(weights, 1.0 / MAX_CLASS_WEIGHT, MAX_CLASS_WEIGHT)
    return torch.tensor(weights, dtype=torch.float32)


def make_loss(task: Task, weights: torch.Tensor | None = None) -> nn.Module:
    """Cross-entropy for binary/multi-class logits (B, K), BCE-with-logits for multi-label."""
    if task is Task.MULTILABEL:
        return nn.BCEWithLogitsLoss(pos_weight=weights)
    return nn.CrossEntropyLoss(weight=weights)


def logit_offsets(task: Task, counts: np.ndarray, num_examples: int) -> torch.Tensor:
    """The hospital's class prior as logit offsets, for logit-adjusted training.

    The prior is add-one (Laplace) smoothed, so a class absent at the hospital gets a
    finite offset: ``log((n_k + 1) / (n + K))`` per class for single-label tasks, the log
    odds ``log((p_k + 1) / (n - p_k + 1))`` per label for multi-label tasks.

    Args:
        task: the task.
        counts: images per class (single-label) or positives per label (multi-label), (K,).
        num_examples: images in the dataset.

    Returns:
        float32 (K,) offsets added to the logits (B, K) during training only.
    """
    counts = counts.astype(np.float64)
    if task is Task.MULTILABEL:
        offsets = np.log((counts + 1.0) / (num_examples - counts + 1.0))
    else:
        offsets = np.log((counts + 1.0) / (num_examples + len(counts)))
    return torch.tensor(offsets, dtype=torch.float32)


class LogitAdjustedLoss(nn.Module):
    """Cross-entropy (BCE for multi-label) of logits shifted by the local class prior.

    Training on ``logits + log prior`` makes the network's own logits estimate the
    class-balanced posterior (Menon et al., "Long-tail learning via logit adjustment",
    ICLR 2021). In a federation each hospital shifts by its own prior, so the shared
    classifier is not pulled towards each hospital's majority classes (FedLC: Zhang et
    al., "Federated learning with label distribution skew via logits calibration", ICML
    2022). Scoring and prediction use the unshifted logits.

    Args:
        task: the task (the loss follows :func:`make_loss`).
        offsets: float32 (K,) from :func:`logit_offsets`.

    Shapes:
        logits (B, K) float; targets (B,) int64 (single-label) or (B, K) float
        (multi-label); returns a scalar float32.
    """

    offsets: torch.Tensor

    def __init__(self, task: Task, offsets: torch.Tensor) -> None:
        super().__init__()
        self.loss = make_loss(task)
        self.register_buffer("offsets", offsets)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean loss of the shifted logits."""
        loss: torch.Tensor = self.loss(logits + self.offsets.to(logits.dtype), targets)
        return loss


@torch.no_grad()
def predict_logits(
    model: nn.Module, dataset: ImageDataset, device: torch.device, batch_size: int = EVAL_BATCH_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Logits of ``model`` on every image of ``dataset`` (unaugmented; float16 autocast on CUDA).

    Returns:
        ``(logits, targets)``: float64 (N, K), and the targets as int64 (N,) or float (N, K).
    """
    model.to(device).eval()
    pipeline = BatchPipeline(augment=False).eval()
    outputs: list[torch.Tensor] = []
    use_amp = device.type == "cuda"
    for images, _ in make_loader(dataset, batch_size, device, shuffle=False):
        inputs = pipeline(images.to(device, non_blocking=True))
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            outputs.append(model(inputs).float().cpu())
    if not outputs:
        return np.empty((0, 0)), dataset.targets.numpy()
    return torch.cat(outputs).double().numpy(), dataset.targets.numpy()


def activate(logits: np.ndarray, task: Task, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Probabilities at temperature 1, as the network's float32 output activation gives them.

    Computed batch by batch in float32, as scoring always has: PyTorch's vectorised
    kernels can differ in the last bit with a tensor's size, and recorded metrics stay
    reproducible to the bit.

    Args:
        logits: float (N, K) from :func:`predict_logits` (float32 values held in float64).
        task: softmax over K for binary and multi-class tasks, sigmoid per label for multi-label.
        batch_size: rows per activation, the scoring batch size.

    Returns:
        float64 (N, K).
    """
    values = torch.from_numpy(np.ascontiguousarray(logits)).float()
    parts = []
    for start in range(0, values.shape[0], batch_size):
        batch = values[start : start + batch_size].clone()
        parts.append(torch.sigmoid(batch) if task is Task.MULTILABEL else torch.softmax(batch, dim=1))
    return torch.cat(parts).double().numpy() if parts else np.empty((0, values.shape[1] if values.ndim == 2 else 0))


def predict(
    model: nn.Module, dataset: ImageDataset, device: torch.device, batch_size: int = EVAL_BATCH_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of ``model`` on every image of ``dataset``.

    Returns:
        ``(probabilities, targets)``: float64 (N, K) softmax (single-label) or sigmoid
        (multi-label) outputs, and the targets as int64 (N,) or float (N, K).
    """
    logits, targets = predict_logits(model, dataset, device, batch_size)
    if logits.size == 0:
        return logits, targets
    return activate(logits, dataset.task, batch_size), targets


def _loss_from_probabilities(task: Task, probabilities: np.ndarray, targets: np.ndarray) -> float:
    eps = 1e-12
    p = np.clip(probabilities, eps, 1.0 - eps)
    if task is Task.MULTILABEL:
        t = targets.astype(np.float64)
        return float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean())
    return float(-np.log(p[np.arange(len(targets)), targets.astype(np.int64)]).mean())


class ClassificationHead:
    """Binary, multi-class and multi-label classification, as the task-agnostic code needs it.

    Args:
        classes: the class (or label) names, index order, for per-class metrics.
        evaluation: the run's ``[evaluation]`` settings (operating point, calibration).
    """

    def __init__(self, classes: tuple[str, ...] = (), evaluation: EvaluationConfig | None = None) -> None:
        self.classes = classes
        self.evaluation = evaluation or EvaluationConfig()

    selection_metric = metric_key("val", "auc")
    """Federated validation AUC picks the best round."""

    reported: tuple[str, ...] = (*METRIC_NAMES, "balanced-accuracy", "ece", "brier")
    """Metric names (without split) a model card reports."""

    def criterion(
        self, dataset: ImageDataset, cfg: TrainConfig, device: torch.device, *, per_sample: bool = False
    ) -> nn.Module:
        """The loss for ``dataset``'s task, weighted or logit-adjusted by its own labels when asked.

        ``train.class-weighting``: ``balanced`` weights (:func:`class_weights`),
        ``logit-adjusted`` (:class:`LogitAdjustedLoss`) or ``none``. Cross-entropy is a
        mean of per-image losses whatever ``per_sample`` says (DP-SGD's need).
        """
        counts = dataset.class_counts()
        if cfg.class_weighting is ClassWeighting.LOGIT_ADJUSTED:
            return LogitAdjustedLoss(dataset.task, logit_offsets(dataset.task, counts, len(dataset))).to(device)
        weights = None
        if cfg.class_weighting is ClassWeighting.BALANCED:
            weights = class_weights(dataset.task, counts, len(dataset)).to(device)
        return make_loss(dataset.task, weights)

    def pipeline(self, augment: bool, spatial_dims: int = 2) -> BatchPipeline:
        """uint8 batches to float input in [0, 1], randomly flipped/rotated/zoomed when ``augment``."""
        return BatchPipeline(augment=augment)

    def evaluate(self, model: nn.Module, dataset: ImageDataset, device: torch.device) -> EvalResult:
        """AUC, accuracy, sensitivity, specificity, F1 (at 0.5) and loss on ``dataset``, with its statistics.

        The result's ``statistics`` are the split's :class:`~fedward.common.ml.valstats.ValidationStatistics`
        on the wire (what a hospital sends for the operating point); its ``outputs`` the
        :class:`ScoredSplit` that :meth:`operate` re-scores.

        Raises:
            DataError: if ``dataset`` is empty.
        """
        if len(dataset) == 0:
            raise DataError("no images to evaluate on")
        logits, targets = predict_logits(model, dataset, device)
        task = dataset.task
        probabilities = activate(logits, task)
        loss = _loss_from_probabilities(task, probabilities, targets)
        metrics = classification_metrics(task, targets, probabilities, loss=loss, class_names=self.classes)
        statistics = ValidationStatistics.of(logits, targets, task).wire()
        return EvalResult(metrics, len(dataset), statistics, ScoredSplit(task, logits, targets, loss, metrics.auc))

    def federate(
        self, reports: list[dict[str, float]], statistics: Sequence[Mapping[str, Any]] = ()
    ) -> dict[str, float]:
        """The federation's validation metrics, and its operating point from the hospitals' statistics.

        Metrics are each hospital's, weighted by its ``num-examples``. When hospitals sent
        validation statistics, they are merged and the temperature and thresholds chosen
        (:func:`~fedward.common.ml.operating_choice.choose_operating_point`); the figures at
        the chosen threshold replace the means at 0.5. ``operating-hospitals``: how many
        hospitals' statistics were used; a reply with malformed statistics is left out.
        """
        federated = weighted_means(reports)
        total, used = merge_wire(statistics)
        if total is None:
            return federated
        _, chosen = choose_operating_point(total, self.evaluation)
        federated.update(chosen)
        federated[OPERATING_HOSPITALS] = float(used)
        return federated

    def operate(self, result: EvalResult, federated: Mapping[str, float]) -> dict[str, float]:
        """``test-*`` metrics of a scored split at the operating point the round's validation chose.

        Sensitivity, specificity, accuracy and F1 are taken at the round's threshold(s) on
        the calibrated probabilities, ECE and Brier score of the calibrated probabilities
        are added; AUC is unchanged by calibration. Without a chosen point (no hospital
        sent statistics): the metrics at 0.5, as scored.
        """
        scored = result.outputs
        if not isinstance(scored, ScoredSplit):
            return result.metrics.as_dict("test")
        labels = scored.logits.shape[1]
        point = point_from_metrics(federated, scored.task, labels, self.evaluation)
        if point is None:
            return result.metrics.as_dict("test")
        return scores_at(point, scored, self.classes).as_dict("test")
