"""Split a dataset's official training split across simulated hospitals.

Three schemes (:class:`~fedward.common.choices.Partition`), all run by ``flwr-datasets``
partitioners over a tiny Hugging Face dataset of labels and row indices (never pixels):

* ``iid``: ``IidPartitioner`` (contiguous shards) on a seeded shuffle: near-equal sizes.
* ``dirichlet``: label skew; each class is shared among hospitals in proportions drawn from
  Dirichlet(alpha) (Hsu et al., 2019, arXiv:1909.06335) by ``DirichletPartitioner``.
* ``quantity``: size skew with IID labels (Li et al., "Federated Learning on Non-IID Data
  Silos: An Experimental Study", ICDE 2022): sizes from Dirichlet(alpha), then
  ``SizePartitioner`` on a seeded shuffle.

Multi-label datasets (labels of shape (N, K), K > 1) are partitioned by ``dirichlet`` on
a derived key: the index of an image's first positive label, or K ("no finding") when it
has none. :func:`label_skew` measures skew on the same key.

The same arguments always give the same partition.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Nothing here may touch the network; set before `datasets` is first imported.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner, SizePartitioner
from rich.table import Table

from fedward.common.choices import Partition, choose
from fedward.common.config.sections import FederationConfig
from fedward.common.data.hospital import holdout_split
from fedward.common.data.plan import HospitalSplit, PartitionPlan
from fedward.common.errors import ConfigError, DataError

log = logging.getLogger(__name__)
datasets.disable_progress_bars()

_QUANTITY_DRAWS = 100  # Dirichlet draws of hospital sizes tried before rebalancing


@dataclass(frozen=True, slots=True)
class HospitalSummary:
    """Image and class counts of one simulated hospital.

    Attributes:
        name: hospital name.
        train: number of training images.
        val: number of local validation images.
        class_counts: train + val images per class (positives per label for multi-label).
    """

    name: str
    train: int
    val: int
    class_counts: tuple[int, ...]


def partition_indices(
    labels: np.ndarray, n_hospitals: int, method: Partition, alpha: float, seed: int, min_size: int
) -> list[np.ndarray]:
    """Divide the rows of a training split among hospitals (same arguments, same result).

    Args:
        labels: int array (N, K) as read from MedMNIST; K = 1 holds a class index, K > 1
            multi-labels. A 1-D array (N,) is read as (N, 1).
        n_hospitals: number of hospitals, in [1, N].
        method: ``iid``, ``dirichlet`` (Hsu et al., 2019) or ``quantity`` (Li et al., 2022).
        alpha: Dirichlet concentration (> 0) of ``dirichlet`` and ``quantity``; ignored by
            ``iid``.
        seed: seed (>= 0) of every random choice.
        min_size: smallest number of rows a hospital may get (at least 1 in any case).

    Returns:
        One sorted int64 index array (M_i,) per hospital; together they cover range(N)
        exactly once.

    Raises:
        ConfigError: if ``n_hospitals`` < 1 or > N, ``alpha`` <= 0, ``seed`` < 0, or no
            partition gives every hospital ``min_size`` rows.
        DataError: if ``labels`` is not an integer array of shape (N,) or (N, K).
    """
    labels = _as_2d(labels)
    n_rows = labels.shape[0]
    method = choose(method, Partition, "federation.partition")
    min_size = _check_partition_arguments(n_rows, n_hospitals, alpha, seed, min_size)
    table = datasets.Dataset.from_dict({"label": _partition_key(labels), "idx": np.arange(n_rows, dtype=np.int64)})
    partitioner = _partitioner(method, table, n_hospitals, alpha, seed, min_size)
    parts = _load_parts(partitioner, method, n_hospitals, alpha, min_size)
    if sum(p.size for p in parts) != n_rows or np.unique(np.concatenate(parts)).size != n_rows:
        raise RuntimeError(f"{method.value} partition does not cover the {n_rows} rows exactly once")
    log.info("%s partition of %d images: sizes %s", method.value, n_rows, [p.size for p in parts])
    return parts


def _check_partition_arguments(n_rows: int, n_hospitals: int, alpha: float, seed: int, min_size: int) -> int:
    """The effective minimum hospital size (at least 1), after checking every argument against ``n_rows``."""
    if n_hospitals < 1:
        raise ConfigError(f"federation.hospitals must be at least 1; got {n_hospitals}")
    if n_hospitals > n_rows:
        raise ConfigError(
            f"federation.hospitals ({n_hospitals}) exceeds the {n_rows} training images; use fewer hospitals"
        )
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"federation.alpha must be a positive number; got {alpha}")
    if seed < 0:
        raise ConfigError(f"run.seed must be >= 0; got {seed}")
    min_size = max(int(min_size), 1)
    if n_hospitals * min_size > n_rows:
        raise ConfigError(
            f"{n_hospitals} hospitals x federation.min-hospital-size {min_size} = "
            f"{n_hospitals * min_size} exceeds the {n_rows} training images; "
            "use fewer hospitals or a smaller federation.min-hospital-size"
        )
    return min_size


def _partitioner(
    method: Partition, table: datasets.Dataset, n_hospitals: int, alpha: float, seed: int, min_size: int
) -> Partitioner:
    """The flwr-datasets partitioner of ``method``, bound to ``table`` (shuffled first for ``iid`` and ``quantity``)."""
    partitioner: Partitioner
    if method is Partition.DIRICHLET:
        partitioner = DirichletPartitioner(
            num_partitions=n_hospitals,
            partition_by="label",
            alpha=float(alpha),
            min_partition_size=min_size,
            self_balancing=False,
            shuffle=True,
            seed=seed,
        )
        partitioner.dataset = table
        return partitioner
    if method is Partition.IID:
        partitioner = IidPartitioner(num_partitions=n_hospitals)
    else:
        partitioner = SizePartitioner(_quantity_sizes(len(table), n_hospitals, alpha, seed, min_size))
    # Both take contiguous runs of rows: shuffle first so that each run is a random sample.
    partitioner.dataset = table.shuffle(seed=seed, keep_in_memory=True)
    return partitioner


def _load_parts(
    partitioner: Partitioner, method: Partition, n_hospitals: int, alpha: float, min_size: int
) -> list[np.ndarray]:
    """Each hospital's sorted int64 row indices; ConfigError when Dirichlet draws cannot meet ``min_size``."""
    with warnings.catch_warnings():
        # DirichletPartitioner warns on every redraw; running out of draws is reported below.
        warnings.filterwarnings("ignore", message="The specified min_partition_size", category=UserWarning)
        try:
            return [
                np.sort(np.asarray(partitioner.load_partition(i)[:]["idx"], dtype=np.int64)) for i in range(n_hospitals)
            ]
        except ValueError:
            if method is not Partition.DIRICHLET:
                raise
            raise ConfigError(
                f"dirichlet partition: no Dirichlet draw (flwr-datasets tries 11) gave each of "
                f"{n_hospitals} hospitals at least {min_size} training images with alpha={alpha}; use fewer "
                "hospitals (federation.hospitals), a larger federation.alpha or a smaller "
                "federation.min-hospital-size"
            ) from None


def make_plan(
    dataset: str,
    source: Path,
    labels: np.ndarray,
    federation: FederationConfig,
    val_fraction: float,
    seed: int,
) -> PartitionPlan:
    """Partition the training split and hold out each hospital's local validation split.

    Hospital ``i`` (``hospital-i``) gets its rows from :func:`partition_indices`; a
    stratified share ``val_fraction`` of them (:func:`holdout_split` with seed
    ``seed + i``) becomes its validation split. Plan indices are rows of the train split.

    Args:
        dataset: dataset name.
        source: the ``.npz`` file whose ``train`` split ``labels`` come from.
        labels: int array (N, K) of the training split.
        federation: hospitals, partition method, alpha and minimum hospital size.
        val_fraction: share of each hospital's rows held out, in (0, 0.5].
        seed: seed of the partition and the hold-outs.

    Raises:
        ConfigError: as :func:`partition_indices`, or if ``val_fraction`` is out of range.
    """
    if not 0.0 < val_fraction <= 0.5:
        raise ConfigError(f"data.val-fraction must be in (0, 0.5]; got {val_fraction}")
    labels = _as_2d(labels)
    fed = federation
    parts = partition_indices(labels, fed.hospitals, fed.partition, fed.alpha, seed, fed.min_hospital_size)
    hospitals = []
    for i, part in enumerate(parts):
        train, val = holdout_split(labels[part], val_fraction, seed + i)
        hospitals.append(HospitalSplit(f"hospital-{i}", part[train], part[val]))
    return PartitionPlan(dataset, Path(source), fed.partition.value, float(fed.alpha), seed, tuple(hospitals))


def summarize_plan(plan: PartitionPlan, labels: np.ndarray, num_classes: int) -> list[HospitalSummary]:
    """Count each hospital's images and classes (one summary per hospital, in plan order).

    Args:
        plan: the partition plan.
        labels: int array (N, K) of the training split the plan refers to.
        num_classes: number of classes (labels, for multi-label).

    Raises:
        DataError: if a label does not fit ``num_classes``.
    """
    labels = _as_2d(labels)
    return [
        HospitalSummary(
            h.name,
            int(h.train.size),
            int(h.val.size),
            tuple(int(c) for c in _class_counts(labels[np.concatenate([h.train, h.val])], num_classes)),
        )
        for h in plan.hospitals
    ]


def label_skew(parts: PartitionPlan | Sequence[np.ndarray], labels: np.ndarray, num_classes: int) -> float:
    """Mean total-variation distance between each hospital's class distribution and the global one.

    ``TV(p, q) = 0.5 * sum_k |p_k - q_k|``, averaged over the non-empty hospitals; the
    global distribution is that of all their rows together. 0 means every hospital sees
    the classes in the same proportions; 1 is the maximum. Multi-label rows are counted
    by the key ``dirichlet`` partitions by (first positive label, or "no finding").

    Args:
        parts: a plan (train + val of each hospital) or one index array per hospital.
        labels: int array (N, K) the indices refer to.
        num_classes: number of classes (labels, for multi-label).

    Returns:
        The skew, in [0, 1].

    Raises:
        DataError: if a label does not fit ``num_classes``.
    """
    labels = _as_2d(labels)
    if isinstance(parts, PartitionPlan):
        parts = [np.concatenate([h.train, h.val]) for h in parts.hospitals]
    key = _partition_key(labels)
    categories = num_classes if labels.shape[1] == 1 else num_classes + 1
    if key.size and (key.min() < 0 or key.max() >= categories):
        raise DataError(f"labels do not fit {num_classes} classes")
    nonempty = [np.asarray(p, dtype=np.int64) for p in parts if len(p)]
    if not nonempty:
        return 0.0
    counts = np.stack([np.bincount(key[p], minlength=categories) for p in nonempty])
    overall = counts.sum(axis=0) / counts.sum()
    local = counts / counts.sum(axis=1, keepdims=True)
    return float(np.mean(0.5 * np.abs(local - overall).sum(axis=1)))


def describe_table(summaries: Sequence[HospitalSummary], class_names: Sequence[str]) -> Table:
    """A table of hospitals: train and val sizes, then each class's count and share, then totals.

    For multi-label datasets the share of a label is the fraction of the hospital's images
    positive for it (shares need not add up to 100 %).

    Raises:
        ValueError: if a summary's class counts do not match ``class_names``.
    """
    table = Table(title="Hospitals", title_justify="left")
    table.add_column("hospital")
    for column in ("train", "val", *class_names):
        table.add_column(column, justify="right")
    for s in summaries:
        if len(s.class_counts) != len(class_names):
            raise ValueError(f"{s.name} has {len(s.class_counts)} class counts for {len(class_names)} classes")
        table.add_row(s.name, str(s.train), str(s.val), *_count_cells(s.class_counts, s.train + s.val))
    totals = [sum(s.class_counts[k] for s in summaries) for k in range(len(class_names))]
    train, val = sum(s.train for s in summaries), sum(s.val for s in summaries)
    table.add_section()
    table.add_row("total", str(train), str(val), *_count_cells(totals, train + val), style="bold")
    return table


def _count_cells(counts: Sequence[int], images: int) -> list[str]:
    return [f"{c} ({100.0 * c / images:.1f}%)" if images else str(c) for c in counts]


def _as_2d(labels: np.ndarray) -> np.ndarray:
    """Labels as an integer array (N, K)."""
    arr = np.asarray(labels)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise DataError(f"labels must be an integer array of shape (N, K); got {arr.dtype} {arr.shape}")
    return arr


def _partition_key(labels: np.ndarray) -> np.ndarray:
    """int64 (N,): the class index, or for K > 1 labels the first positive label (K if none)."""
    if labels.shape[1] == 1:
        return labels[:, 0].astype(np.int64)
    positive = labels > 0
    key: np.ndarray = np.where(positive.any(axis=1), positive.argmax(axis=1), labels.shape[1])
    return key.astype(np.int64)


def _class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Images per class (K = 1) or positives per label (K > 1), shape (num_classes,)."""
    if labels.shape[1] > 1:
        if labels.shape[1] != num_classes:
            raise DataError(f"{labels.shape[1]} labels per image do not fit {num_classes} classes")
        positives: np.ndarray = np.count_nonzero(labels > 0, axis=0)
        return positives
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"class indices do not fit {num_classes} classes")
    return np.bincount(labels[:, 0].astype(np.int64), minlength=num_classes)


def _quantity_sizes(n_rows: int, n_hospitals: int, alpha: float, seed: int, min_size: int) -> list[int]:
    """Hospital sizes from Dirichlet(alpha), summing to ``n_rows``, each >= ``min_size``.

    As Li et al. (2022), proportions are redrawn until every hospital is large enough;
    after :data:`_QUANTITY_DRAWS` draws, each hospital gets ``min_size`` and the rest is
    shared in proportion to the last draw.
    """
    rng = np.random.default_rng([seed, 1])  # a stream apart from the row shuffle's
    concentration = np.full(n_hospitals, float(alpha))
    for _ in range(_QUANTITY_DRAWS):
        shares = rng.dirichlet(concentration)
        sizes = _apportion(shares, n_rows)
        if sizes.min() >= min_size:
            return [int(s) for s in sizes]
    log.debug("quantity sizes: no draw reached min size %d; rebalancing the last draw", min_size)
    sizes = min_size + _apportion(shares, n_rows - n_hospitals * min_size)
    return [int(s) for s in sizes]


def _apportion(shares: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``shares`` summing to ``total`` (largest remainders)."""
    raw = shares / shares.sum() * total
    sizes: np.ndarray = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - sizes), kind="stable")
    sizes[order[: total - int(sizes.sum())]] += 1
    return sizes
