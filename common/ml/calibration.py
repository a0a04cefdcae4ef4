"""Temperature scaling from sums its hospitals can add up: fit, measure and draw calibration.

Temperature scaling (Guo et al., "On calibration of modern neural networks", ICML 2017)
divides a classifier's logits by one temperature T > 0 chosen to minimise the negative
log-likelihood (NLL) of the validation split. A federation cannot run an optimiser over
images it never sees, so every hospital evaluates its validation split at every candidate
temperature of a fixed grid (:data:`TEMPERATURES`) and sends only sums over its images, a
:class:`CalibrationStats`: NLL, Brier score (Brier, "Verification of forecasts expressed in
terms of probability", Monthly Weather Review 1950) and the per-bin sums of the expected
calibration error (ECE, Guo et al.; Naeini et al., AAAI 2015). Sums add up across
hospitals (:meth:`CalibrationStats.merge`), so the server picks the temperature that
minimises the pooled NLL (:meth:`CalibrationStats.best_index`) exactly as if it held all
the images, at the resolution of the grid.

Probabilities: binary and multi-class ``softmax(z / T)``; multi-label ``sigmoid(z_k / T)``
per label, each (image, label) pair counted as one binary prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fedward.common.choices import Task

TEMPERATURES: np.ndarray = 2.0 ** np.linspace(-2.0, 3.0, 41)
"""float64 (41,) candidate temperatures 0.25..8, geometric with ratio 2**(1/8) (about 9%).
Built as powers of two so that index :data:`UNCALIBRATED` is exactly 1.0."""

UNCALIBRATED: int = 16
"""Index of temperature 1.0 in :data:`TEMPERATURES` (the network as trained)."""

RELIABILITY_BINS: int = 15
"""Equal-width confidence bins over [0, 1] of the ECE and reliability diagrams (Guo et al.)."""

_CHUNK_ELEMENTS = 1 << 22
"""Largest (temperatures x images x columns) array :meth:`CalibrationStats.of` builds at once."""


def _check_inputs(logits: np.ndarray, targets: np.ndarray, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Logits as float64 (N, K) and targets as int64, validated for the task."""
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"logits must have shape (N, K) with N, K > 0, got {logits.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("logits must be finite")
    if task is Task.MULTILABEL:
        if targets.shape != logits.shape:
            raise ValueError(f"multi-label targets {targets.shape} must have the logits' shape {logits.shape}")
        if not np.isin(targets, (0, 1)).all():
            raise ValueError("multi-label targets must be 0 or 1")
    elif task in (Task.BINARY, Task.MULTICLASS):
        if targets.shape != (logits.shape[0],):
            raise ValueError(f"targets must have shape ({logits.shape[0]},), got {targets.shape}")
        if task is Task.BINARY and logits.shape[1] != 2:
            raise ValueError(f"binary logits must have shape (N, 2), got {logits.shape}")
        if not np.isin(targets, np.arange(logits.shape[1])).all():
            raise ValueError(f"targets must be class indices in 0..{logits.shape[1] - 1}")
    else:
        raise ValueError(f"temperature scaling calibrates classifiers, not a {task.value} task")
    return logits, targets.astype(np.int64)


def _softmax_terms(logits: np.ndarray, targets: np.ndarray, task: Task) -> tuple[np.ndarray, ...]:
    """Per-temperature NLL, Brier, confidence and correctness of softmax predictions.

    Returns:
        float64 (T, n) NLL, (T, n) Brier, (T, n) confidence and bool (T, n) correct.
    """
    scaled = logits[None, :, :] / TEMPERATURES[:, None, None]
    shifted = scaled - scaled.max(axis=2, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))
    rows = np.arange(logits.shape[0])
    nll = -log_p[:, rows, targets]
    p = np.exp(log_p)
    if task is Task.BINARY:
        brier = (p[:, :, 1] - targets[None, :]) ** 2
    else:
        onehot = np.zeros(logits.shape)
        onehot[rows, targets] = 1.0
        brier = ((p - onehot[None]) ** 2).sum(axis=2)
    return nll, brier, p.max(axis=2), p.argmax(axis=2) == targets[None, :]


def _sigmoid_terms(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-temperature NLL, Brier, confidence and correctness of every (image, label) pair.

    Returns:
        float64 (T, n*K) binary cross-entropy, (T, n*K) Brier, (T, n*K) confidence and bool
        (T, n*K) correct.
    """
    scaled = logits.reshape(1, -1) / TEMPERATURES[:, None]
    truth = targets.reshape(1, -1).astype(np.float64)
    log_p = -np.logaddexp(0.0, -scaled)  # log sigmoid(s)
    log_q = -np.logaddexp(0.0, scaled)  # log (1 - sigmoid(s))
    nll = -(truth * log_p + (1.0 - truth) * log_q)
    p = np.exp(log_p)
    return nll, (p - truth) ** 2, np.maximum(p, 1.0 - p), (p >= 0.5) == (truth == 1.0)


@dataclass(frozen=True, slots=True, eq=False)
class CalibrationStats:
    """Sums over validation predictions at every candidate temperature of :data:`TEMPERATURES`.

    ``eq=False``: arrays have no single truth value; compare the fields.

    Attributes:
        images: predictions counted: images for binary and multi-class tasks, (image, label)
            pairs for multi-label tasks.
        nll: float64 (T,) summed negative log-likelihood per temperature.
        brier: float64 (T,) summed Brier score per temperature.
        bin_count: float64 (T, 15) predictions per confidence bin.
        bin_confidence: float64 (T, 15) summed confidence (probability of the predicted class).
        bin_correct: float64 (T, 15) summed correctness (1 when the prediction is right).
    """

    images: int
    nll: np.ndarray
    brier: np.ndarray
    bin_count: np.ndarray
    bin_confidence: np.ndarray
    bin_correct: np.ndarray

    def __post_init__(self) -> None:
        if self.images < 0:
            raise ValueError(f"calibration stats: images must be >= 0, got {self.images}")
        shapes = {
            "nll": (TEMPERATURES.size,),
            "brier": (TEMPERATURES.size,),
            "bin_count": (TEMPERATURES.size, RELIABILITY_BINS),
            "bin_confidence": (TEMPERATURES.size, RELIABILITY_BINS),
            "bin_correct": (TEMPERATURES.size, RELIABILITY_BINS),
        }
        for name, shape in shapes.items():
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.shape != shape:
                raise ValueError(f"calibration stats: {name} must be an array of shape {shape}")

    @classmethod
    def of(cls, logits: np.ndarray, targets: np.ndarray, task: Task) -> CalibrationStats:
        """The sums of one split's predictions at every candidate temperature.

        Binary and multi-class: ``p = softmax(z / T)``, NLL ``-log p_y`` (log-softmax),
        Brier ``(p_1 - y)^2`` (binary) or ``sum_k (p_k - 1[y = k])^2`` (multi-class),
        confidence ``max_k p_k``, correct when ``argmax_k p_k == y`` (the first index on ties).
        Multi-label: each pair is a binary prediction ``p = sigmoid(z / T)`` with NLL the
        binary cross-entropy, Brier ``(p - y)^2``, confidence ``max(p, 1 - p)``, correct when
        ``(p >= 0.5) == y``. Confidence ``c`` falls in bin ``min(floor(15 c), 14)``.

        Args:
            logits: float (N, K) network outputs (binary: K = 2).
            targets: binary and multi-class: int (N,) class indices; multi-label: (N, K) in {0, 1}.
            task: binary, multi-class or multi-label.

        Raises:
            ValueError: if there are no images, the shapes or targets do not fit the task,
                a logit is not finite, or the task is segmentation.
        """
        logits, targets = _check_inputs(logits, targets, task)
        step = max(1, _CHUNK_ELEMENTS // (TEMPERATURES.size * logits.shape[1]))
        total = cls.empty()
        for start in range(0, logits.shape[0], step):
            chunk, truth = logits[start : start + step], targets[start : start + step]
            if task is Task.MULTILABEL:
                nll, brier, confidence, correct = _sigmoid_terms(chunk, truth)
            else:
                nll, brier, confidence, correct = _softmax_terms(chunk, truth, task)
            total = total.merge(cls._summed(nll, brier, confidence, correct))
        return total

    @classmethod
    def _summed(
        cls, nll: np.ndarray, brier: np.ndarray, confidence: np.ndarray, correct: np.ndarray
    ) -> CalibrationStats:
        """Sums of per-prediction terms, each (T, n)."""
        bins = np.minimum((confidence * RELIABILITY_BINS).astype(np.int64), RELIABILITY_BINS - 1)
        flat = (bins + RELIABILITY_BINS * np.arange(TEMPERATURES.size)[:, None]).ravel()
        size = TEMPERATURES.size * RELIABILITY_BINS
        shape = (TEMPERATURES.size, RELIABILITY_BINS)

        def binned(weights: np.ndarray | None) -> np.ndarray:
            return np.bincount(flat, weights=weights, minlength=size).astype(np.float64).reshape(shape)

        return cls(
            images=int(nll.shape[1]),
            nll=nll.sum(axis=1),
            brier=brier.sum(axis=1),
            bin_count=binned(None),
            bin_confidence=binned(confidence.ravel()),
            bin_correct=binned(correct.ravel().astype(np.float64)),
        )

    @classmethod
    def empty(cls) -> CalibrationStats:
        """Stats of no predictions (the start of a sum)."""
        shape = (TEMPERATURES.size, RELIABILITY_BINS)
        zeros = np.zeros(TEMPERATURES.size)
        return cls(0, zeros, zeros.copy(), np.zeros(shape), np.zeros(shape), np.zeros(shape))

    def merge(self, other: CalibrationStats) -> CalibrationStats:
        """The stats of both splits' predictions pooled (every sum added)."""
        return CalibrationStats(
            self.images + other.images,
            self.nll + other.nll,
            self.brier + other.brier,
            self.bin_count + other.bin_count,
            self.bin_confidence + other.bin_confidence,
            self.bin_correct + other.bin_correct,
        )

    def _require_images(self) -> None:
        if self.images == 0:
            raise ValueError("calibration stats hold no predictions")

    def best_index(self) -> int:
        """Index into :data:`TEMPERATURES` of the temperature with the lowest NLL (the lowest index on ties).

        Raises:
            ValueError: if no prediction was counted.
        """
        self._require_images()
        return int(np.argmin(self.nll))

    @staticmethod
    def index_of(temperature: float) -> int:
        """Index of the grid temperature nearest ``temperature`` in log space (1.0 -> 16).

        Raises:
            ValueError: if the temperature is not a positive finite number.
        """
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        return int(np.argmin(np.abs(np.log2(TEMPERATURES) - np.log2(temperature))))

    def mean_nll(self, index: int) -> float:
        """Mean NLL per prediction at temperature ``TEMPERATURES[index]`` (ValueError if empty)."""
        self._require_images()
        return float(self.nll[index] / self.images)

    def mean_brier(self, index: int) -> float:
        """Mean Brier score per prediction at temperature ``TEMPERATURES[index]`` (ValueError if empty)."""
        self._require_images()
        return float(self.brier[index] / self.images)

    def ece(self, index: int) -> float:
        """Expected calibration error at temperature ``TEMPERATURES[index]`` (Guo et al., 2017).

        ``sum_b (n_b / n) |accuracy_b - confidence_b|`` over the non-empty bins.

        Raises:
            ValueError: if no prediction was counted.
        """
        self._require_images()
        gaps = np.abs(self.bin_correct[index] - self.bin_confidence[index])  # n_b |acc_b - conf_b|
        return float(gaps.sum() / self.images)

    def reliability(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The reliability diagram at temperature ``TEMPERATURES[index]``.

        Returns:
            float64 (15,) mean confidence per bin, float64 (15,) accuracy per bin (both NaN
            for empty bins) and float64 (15,) predictions per bin.
        """
        count = self.bin_count[index].copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = np.where(count > 0, self.bin_confidence[index] / count, np.nan)
            accuracy = np.where(count > 0, self.bin_correct[index] / count, np.nan)
        return confidence, accuracy, count


def plot_reliability(stats: CalibrationStats, path: Path, title: str) -> None:
    """Draw reliability diagrams before (T = 1) and after (the best T) temperature scaling into a PNG.

    Each panel shows the accuracy per confidence bin as bars, the mean confidence per bin as
    dots, the diagonal of perfect calibration and the ECE in the legend (Guo et al., 2017, Fig. 1).

    Args:
        stats: the federation's validation stats.
        path: output PNG (its folder is created).
        title: the figure's title.

    Raises:
        ValueError: if no prediction was counted.
    """
    best = stats.best_index()
    fig = Figure(figsize=(9, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    width = 1.0 / RELIABILITY_BINS
    centers = (np.arange(RELIABILITY_BINS) + 0.5) * width
    for ax, index, label in ((axes[0], UNCALIBRATED, "before"), (axes[1], best, "after")):
        confidence, accuracy, _ = stats.reliability(index)
        filled = ~np.isnan(accuracy)
        ax.bar(centers[filled], accuracy[filled], width=width, edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot(confidence[filled], accuracy[filled], "o", ms=3, color="C1", label="accuracy at mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        ax.plot([], [], " ", label=f"ECE {stats.ece(index):.3f}, NLL {stats.mean_nll(index):.3f}")
        ax.set(title=f"{label}: T = {TEMPERATURES[index]:.2f}", xlabel="confidence", xlim=(0, 1), ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set(ylabel="accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def calibration_of(probabilities: np.ndarray, targets: np.ndarray, task: Task) -> tuple[float, float]:
    """ECE (15 bins) and mean Brier score of probabilities already calibrated, as :class:`CalibrationStats` counts them.

    The probabilities are turned back into logits (``log p``, softmax's inverse up to a
    constant; ``logit p`` per label) and measured at temperature 1, so a model evaluated
    here and a run's records agree to the last bin.

    Args:
        probabilities: float (N, K) softmax (binary, multi-class) or sigmoid (multi-label) outputs.
        targets: int (N,) or (N, 1) class indices, or (N, K) 0/1 labels (multi-label).
        task: binary, multi-class or multi-label.

    Returns:
        ``(ece, brier)``.

    Raises:
        ValueError: as :meth:`CalibrationStats.of`.
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-15, 1.0 - 1e-15)
    logits = np.log(p) - np.log1p(-p) if task is Task.MULTILABEL else np.log(p)
    labels = np.asarray(targets)
    if task is not Task.MULTILABEL:
        labels = labels.reshape(-1)
    stats = CalibrationStats.of(logits, labels, task)
    return stats.ece(UNCALIBRATED), stats.mean_brier(UNCALIBRATED)
