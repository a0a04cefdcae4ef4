"""The centralized baseline: the same model trained on all hospitals' data pooled.

It is the upper bound a federation is measured against: the training images are exactly
the union of the simulated hospitals' training splits and model selection uses the union
of their validation splits; the model, its initial weights, the optimizer, the schedule
and the total number of epochs (rounds x local epochs) are the federation's. One
"round" here is ``local-epochs`` epochs over the pooled data, so both runs write the same
number of rows to the same run-directory format.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fedward.common.data.images import TaskDataset, concat_datasets, make_dataset
from fedward.common.data.load import cache_root_for, load_site_folder
from fedward.common.ml.networks import initial_network
from fedward.common.ml.runtime import derive_seed, device_label, resolve_device, seed_everything, set_cpu_threads
from fedward.common.ml.tasks import TaskHead, head_for
from fedward.common.ml.training import LocalTraining, train_epochs
from fedward.common.rundir.card import HospitalEntry, RunEnding, finish_run
from fedward.common.rundir.recorder import RunRecorder
from fedward.common.version import fedward_version
from fedward.common.wire import NUM_EXAMPLES, VAL_EXAMPLES
from fedward.server.tracking.tracker import open_tracker
from fedward.simulation.driver import PreparedRun

log = logging.getLogger(__name__)


def pooled_hospital_data(prepared: PreparedRun) -> tuple[TaskDataset, TaskDataset]:
    """The union of the hospitals' training splits and of their validation splits.

    Planned hospitals pool their partition indices; hospital folders are loaded (and
    decoded, through the same cache) exactly as the simulated hospitals load them.
    """
    cfg, schema, dataset = prepared.cfg, prepared.resolved.schema, prepared.resolved.dataset
    if prepared.plan is not None and dataset is not None:
        source = dataset.splits["train"]
        train_idx = np.sort(np.concatenate([h.train for h in prepared.plan.hospitals]))
        val_idx = np.sort(np.concatenate([h.val for h in prepared.plan.hospitals]))
        return (
            make_dataset(source.subset(train_idx), schema, cfg.data.image_size),
            make_dataset(source.subset(val_idx), schema, cfg.data.image_size),
        )
    cache_root = cache_root_for(cfg)
    sites = [
        load_site_folder(folder, cfg, schema, name=folder.name, cache_root=cache_root)
        for folder in cfg.data.hospital_dirs
    ]
    return concat_datasets([s.train for s in sites]), concat_datasets([s.val for s in sites])


def run_centralized(prepared: PreparedRun, on_status: Callable[[dict[str, Any]], None] | None = None) -> RunRecorder:
    """Train on the pooled hospital data and write a run directory.

    Args:
        prepared: a prepared run (``prepare(cfg, mode="centralized")``: data resolved,
            hospitals planned, run directory made).
        on_status: called after every round with the round's metrics.

    Returns:
        The run's recorder (its directory holds metrics, weights and the model card).
    """
    cfg, schema, dataset = prepared.cfg, prepared.resolved.schema, prepared.resolved.dataset
    train, val = pooled_hospital_data(prepared)
    test_split = dataset.splits.get("test") if dataset is not None else None
    test = make_dataset(test_split, schema, cfg.data.image_size) if test_split is not None and len(test_split) else None
    seed_everything(cfg.run.seed)
    set_cpu_threads(cfg.train.threads)
    model = initial_network(cfg, schema)  # the federation's initial weights
    tracker = open_tracker(prepared.spec, prepared.run_dir)
    recorder = RunRecorder(prepared.run_dir, prepared.spec, mode="centralized", listener=tracker)
    head = head_for(schema, cfg)
    device = resolve_device(cfg.train.device)
    trainer = _PooledTraining(prepared, train, val, test, device, head)
    label = device_label(device, amp=cfg.train.amp)  # the baseline trains without DP-SGD
    ending = RunEnding(
        "completed",
        hospitals=[
            HospitalEntry("pooled (all hospitals)", len(train), len(val), fedward=fedward_version(), device=label)
        ],
        parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        test_images=len(test) if test is not None else None,
    )
    try:
        for server_round in range(0, cfg.federation.rounds + 1):
            metrics = trainer.round(model, server_round)
            recorder.record_round(server_round, model.state_dict(), metrics)
            if on_status is not None:
                on_status(
                    {"round": server_round, "rounds": cfg.federation.rounds, "latest": metrics, "state": "running"}
                )
    except BaseException as err:
        ending = dataclasses.replace(ending, status="failed", reason=f"{type(err).__name__}: {err}")
        raise
    finally:
        finish_run(recorder, ending)
    return recorder


@dataclass(frozen=True, slots=True)
class _PooledTraining:
    """One "round" of the baseline: ``local-epochs`` epochs over the pooled data, then scoring."""

    prepared: PreparedRun
    train: TaskDataset
    val: TaskDataset
    test: TaskDataset | None
    device: torch.device
    head: TaskHead

    def _validate(self, model: nn.Module) -> dict[str, float]:
        """The pooled validation split's metrics, combined as the federation combines one hospital's.

        The operating point (a classifier's temperature and thresholds) is chosen on it the
        same way, so the baseline's test figures are taken at a validation-chosen point too.
        """
        result = self.head.evaluate(model, self.val, self.device)
        report = {**result.metrics.wire("val"), NUM_EXAMPLES: float(result.num_examples)}
        federated = self.head.federate([report], [result.statistics])
        federated[VAL_EXAMPLES] = federated.pop(NUM_EXAMPLES)
        return federated

    def round(self, model: nn.Module, server_round: int) -> dict[str, float]:
        """Train round ``server_round`` (round 0 only scores the initial model) and return its metrics."""
        cfg = self.prepared.cfg
        rounds, epochs = cfg.federation.rounds, cfg.train.local_epochs
        metrics: dict[str, float] = {}
        if server_round > 0:
            plan = LocalTraining(
                epochs=epochs,
                first_epoch=(server_round - 1) * epochs,
                total_epochs=rounds * epochs,
                seed=derive_seed(cfg.run.seed, "train", "centralized", server_round),
            )
            head = self.head
            result = train_epochs(model, self.train, cfg.train, plan, self.device, head=head, augment=cfg.data.augment)
            metrics["train-loss"] = result.loss
            metrics.update(self._validate(model))
        if self.test is not None:
            metrics.update(self.head.operate(self.head.evaluate(model, self.test, self.device), metrics))
        model.cpu()
        log.info(
            "centralized round %d/%d: %s",
            server_round,
            rounds,
            ", ".join(
                f"{k} {v:.4f}" for k, v in metrics.items() if k in ("val-auc", "test-auc", "val-dice", "test-dice")
            ),
        )
        return metrics
