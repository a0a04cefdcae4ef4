"""Plain PyTorch training loops, free of Flower types: a hospital's local epochs, FedProx, DP-SGD.

The same functions train a hospital's round in the ClientApp (simulation and
deployment) and every epoch of the centralized baseline, so the two differ only in what
data they see and how often weights are averaged. The task (classification or
segmentation) enters through its head (:mod:`fedward.common.ml.tasks`): the loss and the
batch pipeline; scoring a model is the head's ``evaluate``.

GPU path: on CUDA, batches come from pinned memory and move with ``non_blocking=True``;
with ``train.amp`` the network's forward pass runs under float16 autocast with a
:class:`torch.amp.GradScaler` (Micikevicius et al., "Mixed Precision Training", 2018).
On a CPU with native bfloat16 (AVX512-BF16 or AMX), ``train.amp`` runs it under bfloat16
autocast instead, about twice as fast (:func:`~fedward.common.ml.runtime.training_precision`);
the loss, weights and optimizer stay float32 in both. On a given machine, with the same
precision and threads, results are bit-for-bit reproducible for a given seed.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

from fedward.common.choices import OptimizerName, Precision, Schedule
from fedward.common.config.sections import TrainConfig
from fedward.common.errors import DataError
from fedward.common.ml.accounting import DpSgd
from fedward.common.ml.loader import make_loader, poisson_loader
from fedward.common.ml.runtime import derive_seed, training_layout, training_precision
from fedward.common.ml.tasks import BatchPairs, TaskHead

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LocalTraining:
    """Which part of the run one call to :func:`train_epochs` covers.

    Attributes:
        epochs: epochs to run now (>= 1).
        first_epoch: index of the first of them in the whole run (0-based), for the
            learning-rate schedule (round r of a federated run starts at
            ``(r - 1) * local_epochs``).
        total_epochs: epochs in the whole run (rounds x local epochs).
        proximal_mu: FedProx proximal weight mu; 0 disables the term (Li et al., 2020).
        seed: seed of this call's shuffling, dropout and augmentation.
    """

    epochs: int
    first_epoch: int
    total_epochs: int
    proximal_mu: float = 0.0
    seed: int = 0


@dataclass(frozen=True, slots=True)
class TrainResult:
    """Summary of one :func:`train_epochs` call.

    Attributes:
        loss: mean training loss over all examples of the last epoch (float).
        num_examples: training images (the FedAvg weight).
        steps: optimizer steps taken.
        seconds: wall time in seconds.
    """

    loss: float
    num_examples: int
    steps: int
    seconds: float


def learning_rate(cfg: TrainConfig, epoch: int, total_epochs: int) -> float:
    """Learning rate for run-wide epoch ``epoch`` (0-based) of ``total_epochs``.

    ``cosine``: ``lr * (1 + cos(pi * epoch / total)) / 2`` (Loshchilov & Hutter, 2017),
    stepped once per epoch; ``constant``: ``lr``.
    """
    if cfg.schedule is Schedule.CONSTANT or total_epochs <= 1:
        return cfg.lr
    progress = min(max(epoch / total_epochs, 0.0), 1.0)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter, 2019) or SGD with momentum, at ``cfg.lr``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer is OptimizerName.SGD:
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_epochs(
    model: nn.Module,
    dataset: Dataset[Any],
    cfg: TrainConfig,
    plan: LocalTraining,
    device: torch.device,
    *,
    head: TaskHead,
    augment: bool,
    dpsgd: DpSgd | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``plan.epochs`` epochs on ``dataset``.

    The optimizer is created afresh (local state does not persist across rounds, as in
    FedAvg); the learning rate follows the run-wide schedule. With ``plan.proximal_mu``
    > 0 the FedProx term ``mu / 2 * ||w - w_start||^2`` is added to the loss.

    Args:
        model: network, moved to ``device`` here.
        dataset: training images and targets (an image dataset or a segmentation dataset).
        cfg: local training settings.
        plan: epochs, schedule position, FedProx mu, seed.
        device: training device.
        head: the task's loss and batch pipeline (:func:`~fedward.common.ml.tasks.head_for`).
        augment: random flip / rotation / zoom per image (jointly with label maps for segmentation).
        dpsgd: train with DP-SGD through Opacus: Poisson-sampled batches, per-sample
            gradients clipped to ``dpsgd.clipping_norm``, Gaussian noise of std
            ``noise_multiplier * clipping_norm`` on their sum (Abadi et al., 2016). The
            model must be Opacus-compatible (``build_network(..., private=True)``); AMP and
            the FedProx term are not used with it.

    Returns:
        Loss of the last epoch, examples, steps and wall time.

    Raises:
        DataError: if ``dataset`` is empty.
    """
    images = len(dataset)  # type: ignore[arg-type]
    if images == 0:
        raise DataError("no training images: the hospital's training split is empty")
    started = time.perf_counter()
    torch.manual_seed(plan.seed)  # dropout and any other global-RNG layer
    layout = training_layout(model, private=dpsgd is not None)
    model.to(device=device, memory_format=layout).train()  # type: ignore[call-overload]  # Module.to takes memory_format
    criterion = head.criterion(dataset, cfg, device, per_sample=dpsgd is not None)
    pipeline = head.pipeline(augment, getattr(dataset, "spatial_dims", 2))
    session = _start_session(model, criterion, pipeline, cfg, plan, device, dpsgd, images=images)
    session.layout = layout
    steps = 0
    epoch_loss = float("nan")
    for offset in range(plan.epochs):
        epoch_loss, epoch_steps = _train_epoch(session, dataset, cfg, plan, device, offset, dpsgd)
        steps += epoch_steps
    if session.private is not None:
        session.private.remove_hooks()  # the wrapped network keeps the trained weights
    return TrainResult(epoch_loss, images, steps, time.perf_counter() - started)


@dataclass(slots=True)
class _Session:
    """What one :func:`train_epochs` call sets up before its first epoch (see :func:`_start_session`)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    pipeline: BatchPairs
    scaler: torch.amp.GradScaler
    precision: Precision
    reference: list[torch.Tensor] | None
    aug_generator: torch.Generator
    private: GradSampleModule | None
    layout: torch.memory_format = torch.contiguous_format


def _start_session(
    model: nn.Module,
    criterion: nn.Module,
    pipeline: BatchPairs,
    cfg: TrainConfig,
    plan: LocalTraining,
    device: torch.device,
    dpsgd: DpSgd | None,
    *,
    images: int,
) -> _Session:
    """A fresh optimizer (Opacus-wrapped under DP-SGD), AMP scaler, FedProx reference and augmentation RNG.

    ``model`` is already on ``device`` in training mode; ``images`` is the training split's size.
    """
    precision = training_precision(device, amp=cfg.amp, private=dpsgd is not None)
    pipeline.train()
    optimizer = make_optimizer(model, cfg)
    private = _make_private(model, optimizer, dpsgd, images, cfg.batch_size, plan.seed) if dpsgd else None
    if private is not None:
        model, optimizer = private
    scaler = torch.amp.GradScaler("cuda", enabled=precision is Precision.FLOAT16)
    reference = [p.detach().clone() for p in model.parameters()] if plan.proximal_mu > 0 and not dpsgd else None
    aug_generator = torch.Generator().manual_seed(derive_seed(plan.seed, "augment"))
    return _Session(
        model=model,
        optimizer=optimizer,
        criterion=criterion,
        pipeline=pipeline,
        scaler=scaler,
        precision=precision,
        reference=reference,
        aug_generator=aug_generator,
        private=private[0] if private is not None else None,
    )


def _train_epoch(
    session: _Session,
    dataset: Dataset[Any],
    cfg: TrainConfig,
    plan: LocalTraining,
    device: torch.device,
    offset: int,
    dpsgd: DpSgd | None,
) -> tuple[float, int]:
    """Epoch ``offset`` of this call at its scheduled learning rate: (mean loss over its examples, steps)."""
    lr = learning_rate(cfg, plan.first_epoch + offset, plan.total_epochs)
    for group in session.optimizer.param_groups:
        group["lr"] = lr
    loader = make_loader(dataset, cfg.batch_size, device, shuffle=True, seed=derive_seed(plan.seed, "epoch", offset))
    if dpsgd is not None:
        loader = poisson_loader(loader, derive_seed(plan.seed, "poisson", offset))
    total, seen, steps = 0.0, 0, 0
    for images, targets in loader:
        if images.shape[0] == 0:  # Poisson sampling: an empty batch (probability (1 - B/N)^N)
            continue
        images = images.to(device, non_blocking=True)
        targets = _to_device(targets, device)
        loss = _train_step(session, images, targets, plan.proximal_mu, device)
        steps += 1
        total += loss * images.shape[0]
        seen += images.shape[0]
    return total / max(seen, 1), steps


def _to_device(targets: Any, device: torch.device) -> Any:
    """A batch's targets on ``device``: one tensor, or a sequence of them (classes and lesion masks)."""
    if isinstance(targets, torch.Tensor):
        return targets.to(device, non_blocking=True)
    return tuple(t.to(device, non_blocking=True) for t in targets)


def _train_step(
    session: _Session, images: torch.Tensor, targets: Any, proximal_mu: float, device: torch.device
) -> float:
    """Augment, forward, add the FedProx term, backward and step on one batch; returns the batch's mean loss."""
    inputs, targets = session.pipeline.pair(images, targets, session.aug_generator)
    if session.layout is torch.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)  # as the network's weights
    low = session.precision is not Precision.FLOAT32
    with torch.autocast(device_type=device.type, dtype=_AUTOCAST[session.precision], enabled=low):
        outputs = session.model(inputs)
    loss = session.criterion(_as_float32(outputs) if low else outputs, targets)
    objective = loss
    if session.reference is not None:
        prox = sum(((p - r) ** 2).sum() for p, r in zip(session.model.parameters(), session.reference, strict=True))
        objective = loss + 0.5 * proximal_mu * prox
    session.optimizer.zero_grad(set_to_none=True)
    session.scaler.scale(objective).backward()
    session.scaler.step(session.optimizer)
    session.scaler.update()
    return float(loss.detach())


_AUTOCAST = {Precision.FLOAT32: torch.float32, Precision.BFLOAT16: torch.bfloat16, Precision.FLOAT16: torch.float16}


def _as_float32(outputs: Any) -> Any:
    """A network's outputs (one tensor, or a tuple of them: classes and lesion masks) in float32 for the loss."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    return tuple(o.float() for o in outputs)


def _make_private(
    model: nn.Module, optimizer: torch.optim.Optimizer, dpsgd: DpSgd, images: int, batch_size: int, seed: int
) -> tuple[GradSampleModule, DPOptimizer]:
    """Opacus' per-sample-gradient module and DP optimizer around ``model`` and ``optimizer``."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    # Opacus' hooks fire on the first layer, whose input (the images) needs no gradient;
    # PyTorch warns about that on every step. The per-sample gradients are unaffected.
    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
    wrapped = GradSampleModule(model)
    private = DPOptimizer(
        optimizer,
        noise_multiplier=dpsgd.noise_multiplier,
        max_grad_norm=dpsgd.clipping_norm,
        expected_batch_size=batch_size,
        generator=torch.Generator(device=next(model.parameters()).device).manual_seed(derive_seed(seed, "dp-noise")),
    )
    return wrapped, private
