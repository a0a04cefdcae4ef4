"""ROC curves of a model's probabilities: one per class (one-vs-rest) or label, and their PNG.

Points are computed exactly (one per distinct score); each curve's AUC is MONAI's
``compute_roc_auc``. The figure is drawn with matplotlib without a display, AUC in the
legend.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedward.common.choices import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RocCurve:
    """One ROC curve.

    Attributes:
        name: class or label name.
        fpr: false positive rates, float64 (T,), from 0 to 1.
        tpr: true positive rates, float64 (T,).
        auc: area under it (MONAI ``compute_roc_auc``).
    """

    name: str
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


def roc_points(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve of one column: (fpr, tpr), float64 (T,), one point per distinct score.

    Args:
        scores: float (N,), higher means more likely positive.
        truth: bool or 0/1 (N,), with both classes present.
    """
    order = np.argsort(-scores, kind="mergesort")
    ranked, hits = scores[order], truth[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]  # last index of each distinct score
    tps = np.cumsum(hits)[last]
    fps = (last + 1) - tps
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def roc_curves(task: Task, labels: np.ndarray, probabilities: np.ndarray, classes: tuple[str, ...]) -> list[RocCurve]:
    """One ROC curve per class (one-vs-rest) or label; binary tasks: the positive class only.

    Classes whose labels are all equal have no curve.
    """
    from monai.metrics import compute_roc_auc

    multilabel = task is Task.MULTILABEL
    truth = labels.astype(bool) if multilabel else np.eye(len(classes), dtype=bool)[labels[:, 0]]
    columns = [1] if task is Task.BINARY else list(range(len(classes)))
    curves = []
    for column in columns:
        positives = int(truth[:, column].sum())
        if positives in (0, truth.shape[0]):
            continue
        scores = probabilities[:, column].astype(np.float64)
        fpr, tpr = roc_points(scores, truth[:, column])
        auc = compute_roc_auc(torch.from_numpy(scores), torch.from_numpy(truth[:, column].astype(np.int64)))
        curves.append(RocCurve(classes[column], fpr, tpr, float(auc)))  # type: ignore[arg-type]
    return curves


def plot_roc(curves: list[RocCurve], path: Path, title: str) -> Path:
    """Draw ROC curves (AUC in the legend) into a PNG (matplotlib, no display needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5.0))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    for curve in curves:
        ax.plot(curve.fpr, curve.tpr, linewidth=1.5, label=f"{curve.name} (AUC {curve.auc:.3f})")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false positive rate (1 - specificity)",
        ylabel="true positive rate (sensitivity)",
        title=title,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
