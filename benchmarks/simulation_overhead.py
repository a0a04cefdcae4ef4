"""``fedward simulate`` against a plain PyTorch FedAvg loop: same hospitals, model, seed and epochs.

The reference is the loop a researcher writes by hand: every hospital's images decoded once
into one uint8 tensor in memory, all hospitals trained one after the other in one process
(PyTorch on ``--threads`` threads), FedAvg of the weights by image counts, and each round the
same evaluation the federation runs (every hospital's validation split, the test split).
It uses fedward only to build the same workload: the hospitals' partitions
(:func:`~fedward.simulation.driver.plan_hospitals`), the images at the run's size, and the
seeded initial network; its optimizer (AdamW), cosine schedule and loss (unweighted
cross-entropy) are fedward's defaults written out, and it trains in the precision fedward
picks on this machine (bfloat16 autocast on CPUs with native bfloat16, see
:func:`~fedward.common.ml.runtime.training_precision`), so the ratio measures the federation's
cost, not arithmetic. Then ``fedward simulate`` runs the same
settings as a subprocess (start-up, Ray, checkpoints and records included).

Default workload (issue 13): PneumoniaMNIST 28 px, 5 Dirichlet-0.5 hospitals, 20 rounds x 1
local epoch, batch 32, no augmentation, no class weighting, ``smallcnn``. Prints each run's
wall time, the selected round (best validation AUC) with its test AUC, and the ratio
``fedward simulate`` / plain loop. Wall times are only comparable within one invocation.

Usage::

    python benchmarks/simulation_overhead.py --data-dir ../shared/data [--rounds 20] [--threads 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_config import build_config, parser, selected
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score
from torch import nn

from fedward.common.choices import Precision
from fedward.common.config import RunConfig
from fedward.common.data.images import ImageDataset, make_dataset
from fedward.common.ml.networks import initial_network
from fedward.common.ml.runtime import derive_seed, training_precision
from fedward.common.ml.training import learning_rate
from fedward.common.runsetup import Setting, resolve_run
from fedward.simulation.driver import plan_hospitals

WORKLOAD = {
    "train.local-epochs": 1,
    "train.batch-size": 32,
    "train.class-weighting": "none",
    "data.augment": False,
}
"""Issue 13's workload on top of the benchmark flags."""

Split = tuple[torch.Tensor, torch.Tensor]
"""uint8 images (N, C, S, S) and int64 class indices (N,)."""


def tensors(dataset: ImageDataset) -> Split:
    """A split's images and class indices as contiguous tensors."""
    return dataset.images.contiguous(), dataset.targets.contiguous()


def workload(cfg: RunConfig) -> tuple[list[Split], list[Split], Split, nn.Module]:
    """The hospitals' training and validation splits, the test split and the initial network."""
    resolved = resolve_run(cfg, Setting.SIMULATION, download=False)
    plan, schema, dataset = plan_hospitals(resolved), resolved.schema, resolved.dataset
    if dataset is None:  # pragma: no cover - plan_hospitals refuses runs without a dataset file
        raise SystemExit("the plain loop needs a dataset file")
    size = cfg.data.image_size
    train = [tensors(make_dataset(dataset.splits["train"].subset(h.train), schema, size)) for h in plan.hospitals]
    val = [tensors(make_dataset(dataset.splits["train"].subset(h.val), schema, size)) for h in plan.hospitals]
    test = tensors(make_dataset(dataset.splits["test"], schema, size))
    return train, val, test, initial_network(cfg, schema)


def local_epoch(model: nn.Module, split: Split, lr: float, cfg: RunConfig, seed: int) -> None:
    """One epoch of AdamW on one hospital's images in random order (the model trains in place)."""
    images, targets = split
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.train.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    model.train()
    for start in range(0, len(order), cfg.train.batch_size):
        batch = order[start : start + cfg.train.batch_size]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=_precision(cfg) is Precision.BFLOAT16):
            logits = model(images[batch].float().div_(255.0))
        loss = loss_fn(logits.float(), targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _precision(cfg: RunConfig) -> Precision:
    """The precision fedward trains in on this machine's CPU."""
    return training_precision(torch.device("cpu"), amp=cfg.train.amp)


@torch.no_grad()
def auc(model: nn.Module, split: Split) -> float | None:
    """ROC AUC (one-vs-rest macro for more than two classes) of ``model`` on ``split``; ``None`` with one class."""
    model.eval()
    images, targets = split
    if len(torch.unique(targets)) < 2:
        return None
    probabilities = torch.softmax(model(images.float().div_(255.0)), dim=1).numpy()
    if probabilities.shape[1] == 2:
        return float(roc_auc_score(targets.numpy(), probabilities[:, 1]))
    return float(roc_auc_score(targets.numpy(), probabilities, multi_class="ovr"))


def fedavg(states: list[dict[str, torch.Tensor]], weights: list[int]) -> dict[str, torch.Tensor]:
    """Image-count-weighted mean of floating-point tensors; integer buffers from the first hospital."""
    total = float(sum(weights))
    return {
        key: sum(s[key] * (w / total) for s, w in zip(states, weights, strict=True))  # type: ignore[misc]
        if states[0][key].is_floating_point()
        else states[0][key]
        for key in states[0]
    }


def plain_loop(cfg: RunConfig, threads: int) -> tuple[float, int, float]:
    """The hand-written FedAvg run: (wall seconds, selected round, its test AUC)."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    train, val, test, model = workload(cfg)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    best = (-1.0, 0, float("nan"))
    rounds = cfg.federation.rounds
    for number in range(1, rounds + 1):
        lr = learning_rate(cfg.train, number - 1, rounds * cfg.train.local_epochs)
        states = []
        for index, split in enumerate(train):
            model.load_state_dict(state)
            local_epoch(model, split, lr, cfg, derive_seed(cfg.run.seed, "plain", number, index))
            states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        state = fedavg(states, [len(split[1]) for split in train])
        model.load_state_dict(state)
        scored = [(value, len(split[1])) for split in val if (value := auc(model, split)) is not None]
        val_auc = float(np.average([v for v, _ in scored], weights=[n for _, n in scored]))  # as fedward's
        test_auc = auc(model, test) or float("nan")
        if val_auc > best[0]:
            best = (val_auc, number, test_auc)
    return time.perf_counter() - started, best[1], best[2]


def fedward_simulate(args: argparse.Namespace, out: Path) -> tuple[float, int, float]:
    """``fedward simulate`` with the same settings: (wall seconds, selected round, its test AUC)."""
    command = [
        str(Path(sys.executable).parent / "fedward"), "simulate", "--dataset", args.dataset,
        "--data-dir", str(args.data_dir), "--hospitals", str(args.hospitals), "--partition", args.partition,
        "--alpha", str(args.alpha), "--rounds", str(args.rounds), "--seed", str(args.seed),
        "--local-epochs", "1", "--batch-size", "32", "--class-weighting", "none", "--no-augment",
        "--output-dir", str(out), *[f"--set={s}" for s in args.sets],
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    chosen = selected(run_dir)
    return seconds, int(chosen["round"]), float(chosen["test-auc"])


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--threads", type=int, default=2, help="PyTorch threads of the plain loop (the machine's cores)")
    args = cli.parse_args()
    cfg = build_config(args, **WORKLOAD)
    plain = plain_loop(cfg, args.threads)
    with tempfile.TemporaryDirectory(prefix="fedward-overhead-") as out:
        simulated = fedward_simulate(args, Path(out))
    table = Table(
        title=f"{args.dataset}, {args.hospitals} hospitals ({args.partition}), {args.rounds} rounds x 1 epoch"
    )
    for column in ("run", "wall (s)", "selected round", "test AUC"):
        table.add_column(column, justify="right")
    for name, (seconds, number, test_auc) in (("plain PyTorch loop", plain), ("fedward simulate", simulated)):
        table.add_row(name, f"{seconds:.1f}", str(number), f"{test_auc:.4f}")
    console = Console()
    console.print(table)
    console.print(f"training precision of both: {_precision(cfg)}")
    console.print(f"fedward simulate / plain loop: {simulated[0] / plain[0]:.2f}x wall time (issue 13: <= 1.25x)")


if __name__ == "__main__":
    main()
