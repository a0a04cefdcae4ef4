"""Device choice, precision, seeding and CPU threads: the few process-wide settings training needs."""

from __future__ import annotations

import hashlib
import logging
import random

import numpy as np
import torch
from torch import nn

from fedward.common.choices import DeviceChoice, Precision
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


def training_layout(model: nn.Module, *, private: bool = False) -> torch.memory_format:
    """The memory layout to train ``model`` in: ``channels_last`` for networks of 2D convolutions.

    oneDNN (CPU) and cuDNN (GPU, AMP on tensor cores) run 2D convolutions, batch norm and
    pooling faster on NHWC activations than on NCHW: measured here, a ``smallcnn`` step
    on a 64-image batch of 28 px images ran about 1.3x faster on one CPU thread.
    Networks with 3D convolutions (5-D weights) keep the contiguous layout, as does DP-SGD
    (Opacus computes per-sample gradients of convolutions by unfolding their inputs).
    The weights a model sends are made contiguous again (:func:`~fedward.common.wire.model_to_arrays`).

    Args:
        model: the network.
        private: trained with DP-SGD.

    Returns:
        ``torch.channels_last`` or ``torch.contiguous_format``.
    """
    dims = {p.dim() for p in model.parameters()}
    if private or 4 not in dims or 5 in dims:
        return torch.contiguous_format
    return torch.channels_last


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 dot products in hardware (x86 AVX512-BF16 or AMX tiles).

    There oneDNN convolves and multiplies bfloat16 at about twice the float32 rate
    (measured here on an AMD EPYC with AVX512-BF16: a ``smallcnn`` training step on 64
    images of 28 px ran 1.9-2.0x faster on one thread); elsewhere bfloat16 is emulated and slower.
    """
    cpu = torch.cpu
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # PyTorch's own CPU probes
    return any(bool(getattr(cpu, name, lambda: False)()) for name in probes)


def training_precision(device: torch.device, *, amp: bool, private: bool = False) -> Precision:
    """The arithmetic of a training step on ``device`` under ``train.amp``.

    With ``amp``: float16 autocast with gradient scaling on CUDA (Micikevicius et al.,
    "Mixed Precision Training", ICLR 2018); bfloat16 autocast on a CPU that has native
    bfloat16 (:func:`cpu_has_native_bfloat16`; Kalamkar et al., "A Study of BFLOAT16 for
    Deep Learning Training", 2019), which needs no scaling as bfloat16 keeps float32's
    exponent range. In both, the weights, the optimizer state, the loss and every
    evaluation stay float32; only the network's forward (and so backward) operations
    that autocast lists run in the lower precision. Otherwise, without ``amp`` and under
    DP-SGD (Opacus's per-sample gradients and clipping), float32.

    Args:
        device: where the hospital trains.
        amp: ``train.amp``.
        private: trained with DP-SGD.

    Returns:
        The :class:`~fedward.common.choices.Precision` of the training steps.
    """
    if not amp or private:
        return Precision.FLOAT32
    if device.type == "cuda":
        return Precision.FLOAT16
    if device.type == "cpu" and cpu_has_native_bfloat16():
        return Precision.BFLOAT16
    return Precision.FLOAT32


def device_label(device: torch.device, *, amp: bool, private: bool = False) -> str:
    """Where and in what precision training runs, for logs and model cards: ``cpu (bfloat16)``, ``cuda (float16)``."""
    return f"{device.type} ({training_precision(device, amp=amp, private=private)})"
