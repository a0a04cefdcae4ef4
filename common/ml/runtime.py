"""Device choice, seeding and CPU threads: the few process-wide settings training needs."""

from __future__ import annotations

import hashlib
import logging
import random

import numpy as np
import torch

from fedward.common.choices import DeviceChoice
from fedward.common.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(choice: DeviceChoice) -> torch.device:
    """Turn ``train.device`` into a device.

    ``auto`` picks CUDA when PyTorch sees a GPU (inside a Ray worker: the GPU fraction
    Ray assigned through ``CUDA_VISIBLE_DEVICES``), else the CPU.

    Raises:
        ConfigError: if ``cuda`` is requested and no GPU is visible.
    """
    if choice is DeviceChoice.CPU:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if choice is DeviceChoice.CUDA:
        raise ConfigError("train.device is 'cuda' but PyTorch sees no GPU here; use 'auto' or 'cpu'")
    return torch.device("cpu")


def derive_seed(*parts: int | str) -> int:
    """A stable 31-bit seed from ``parts`` (run seed, round, hospital, purpose...).

    The same parts give the same seed in every process and on every platform (SHA-256,
    not Python's salted ``hash``).
    """
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators (all CUDA devices too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_cpu_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in PyTorch ops; 0 leaves PyTorch's default."""
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        log.debug("torch uses %d CPU threads", threads)
