"""Scoring a model on a dataset: class probabilities and the metrics every evaluation reports.

A hospital's validation split, the server's test split and the centralized baseline's
validation all go through :func:`evaluate`, so every figure in a run directory is computed
the same way: softmax (single-label) or sigmoid (multi-label) probabilities of the
unaugmented, scaled images, then :func:`~fedward.common.ml.metrics.classification_metrics`.
On CUDA the forward pass runs under float16 autocast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedward.common.choices import Task
from fedward.common.data.images import BatchPipeline, ImageDataset
from fedward.common.errors import DataError
from fedward.common.ml.metrics import ClassificationMetrics, classification_metrics
from fedward.common.ml.training import make_loader

EVAL_BATCH_SIZE = 256
"""Images per forward pass when scoring."""


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Metrics of a model on a dataset.

    Attributes:
        metrics: AUC, accuracy, sensitivity, specificity, F1 and (unweighted) loss.
        num_examples: images evaluated.
    """

    metrics: ClassificationMetrics
    num_examples: int


@torch.no_grad()
def predict(
    model: nn.Module, dataset: ImageDataset, device: torch.device, batch_size: int = EVAL_BATCH_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of ``model`` on every image of ``dataset``.

    Returns:
        ``(probabilities, targets)``: float64 (N, K) softmax (single-label) or sigmoid
        (multi-label) outputs, and the targets as int64 (N,) or float (N, K).
    """
    model.to(device).eval()
    pipeline = BatchPipeline(augment=False).eval()
    outputs: list[torch.Tensor] = []
    use_amp = device.type == "cuda"
    for images, _ in make_loader(dataset, batch_size, device, shuffle=False):
        inputs = pipeline(images.to(device, non_blocking=True))
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(inputs).float()
        probs = torch.sigmoid(logits) if dataset.task is Task.MULTILABEL else torch.softmax(logits, dim=1)
        outputs.append(probs.cpu())
    if not outputs:
        return np.empty((0, 0)), dataset.targets.numpy()
    return torch.cat(outputs).double().numpy(), dataset.targets.numpy()


def evaluate(
    model: nn.Module, dataset: ImageDataset, device: torch.device, batch_size: int = EVAL_BATCH_SIZE
) -> EvalResult:
    """AUC, accuracy, sensitivity, specificity, F1 and mean unweighted loss on ``dataset``.

    Raises:
        DataError: if ``dataset`` is empty.
    """
    if len(dataset) == 0:
        raise DataError("no images to evaluate on")
    probabilities, targets = predict(model, dataset, device, batch_size)
    loss = _loss_from_probabilities(dataset.task, probabilities, targets)
    metrics = classification_metrics(dataset.task, targets, probabilities, loss=loss)
    return EvalResult(metrics, len(dataset))


def _loss_from_probabilities(task: Task, probabilities: np.ndarray, targets: np.ndarray) -> float:
    eps = 1e-12
    p = np.clip(probabilities, eps, 1.0 - eps)
    if task is Task.MULTILABEL:
        t = targets.astype(np.float64)
        return float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean())
    return float(-np.log(p[np.arange(len(targets)), targets.astype(np.int64)]).mean())
