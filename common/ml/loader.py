"""Batches from in-memory datasets: the one DataLoader recipe of training and scoring.

Datasets here are tensors already at the model's input size (a hospital's images are
decoded once), so loading is indexing: no worker processes (``num_workers=0``), pinned
memory on CUDA so batches move with ``non_blocking=True``, seeded shuffling, and Poisson
sampling for DP-SGD (Opacus' :class:`~opacus.data_loader.DPDataLoader`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


def make_loader(
    dataset: Dataset[Any],
    batch_size: int,
    device: torch.device,
    *,
    shuffle: bool,
    seed: int = 0,
) -> DataLoader[Any]:
    """A DataLoader over an in-memory dataset; pinned memory on CUDA; seeded shuffling.

    Args:
        dataset: items ``(image, target)`` (tensors).
        batch_size: items per batch, >= 1.
        device: where the batches go (pins memory for CUDA).
        shuffle: draw a new order each epoch from a generator seeded with ``seed``.
        seed: the shuffling seed.
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator if shuffle else None,
        pin_memory=device.type == "cuda",
        num_workers=0,
    )


def poisson_loader(loader: DataLoader[Any], seed: int) -> DataLoader[Any]:
    """The same dataset with Poisson sampling: each item joins each batch with probability B / N (DP-SGD)."""
    from opacus.data_loader import DPDataLoader

    poisson: DataLoader[Any] = DPDataLoader.from_data_loader(loader, generator=torch.Generator().manual_seed(seed))
    return poisson
