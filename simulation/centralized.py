"""The centralized baseline: the same model trained on all hospitals' data pooled.

It is the upper bound a federation is measured against: the training images are exactly
the union of the simulated hospitals' training splits and model selection uses the union
of their validation splits; the model, its initial weights, the optimizer, the schedule
and the total number of epochs (rounds x local epochs) are the federation's. One
"round" here is ``local-epochs`` epochs over the pooled data, so both runs write the same
number of rows to the same run-directory format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedward.common.data.cache import default_cache_root
from fedward.common.data.images import ImageDataset, concat_datasets, make_dataset
from fedward.common.data.load import load_hospital_folder
from fedward.common.ml.networks import build_model, load_initial_weights
from fedward.common.ml.runtime import derive_seed, resolve_device, seed_everything, set_cpu_threads
from fedward.common.ml.training import LocalTraining, evaluate, train_epochs
from fedward.common.rundir.card import HospitalEntry, finish_run
from fedward.common.rundir.recorder import RunRecorder
from fedward.simulation.driver import PreparedRun

log = logging.getLogger(__name__)


def pooled_hospital_data(prepared: PreparedRun) -> tuple[ImageDataset, ImageDataset]:
    """The union of the hospitals' training splits and of their validation splits.

    Planned hospitals pool their partition indices; hospital folders are loaded (and
    decoded, through the same cache) exactly as the simulated hospitals load them.
    """
    cfg, schema = prepared.cfg, prepared.resolved.schema
    if prepared.plan is not None:
        source = prepared.resolved.splits["train"]
        train_idx = np.sort(np.concatenate([h.train for h in prepared.plan.hospitals]))
        val_idx = np.sort(np.concatenate([h.val for h in prepared.plan.hospitals]))
        return (
            make_dataset(source.subset(train_idx), schema, cfg.data.image_size),
            make_dataset(source.subset(val_idx), schema, cfg.data.image_size),
        )
    cache_root = (cfg.data.cache_dir or default_cache_root()) if cfg.data.cache else None
    sites = [
        load_hospital_folder(
            folder,
            cfg.data.dataset,
            schema,
            cfg.data.image_size,
            frames=cfg.data.frames,
            val_fraction=cfg.data.val_fraction,
            seed=derive_seed(cfg.run.seed, "holdout"),
            name=folder.name,
            cache_root=cache_root,
        )
        for folder in cfg.data.hospital_dirs
    ]
    return concat_datasets([s.train for s in sites]), concat_datasets([s.val for s in sites])


def run_centralized(prepared: PreparedRun, on_status: Callable[[dict[str, Any]], None] | None = None) -> RunRecorder:
    """Train on the pooled hospital data and write a run directory.

    Args:
        prepared: a prepared run (data resolved, hospitals planned, run directory made).
        on_status: called after every round with the round's metrics.

    Returns:
        The run's recorder (its directory holds metrics, weights and the model card).
    """
    cfg = prepared.cfg
    schema = prepared.resolved.schema
    train, val = pooled_hospital_data(prepared)
    splits = prepared.resolved.splits
    test = make_dataset(splits["test"], schema, cfg.data.image_size) if len(splits.get("test", ())) else None

    seed_everything(cfg.run.seed)
    set_cpu_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    torch.manual_seed(derive_seed(cfg.run.seed, "initial-model"))  # same start as the federation
    model = build_model(cfg.model.name, schema.channels, schema.num_outputs, private=cfg.privacy.enabled)
    if cfg.model.init_weights is not None:
        load_initial_weights(model, cfg.model.init_weights)
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)

    recorder = RunRecorder(prepared.run_dir, cfg, mode="centralized")
    rounds, epochs = cfg.federation.rounds, cfg.train.local_epochs
    status, reason = "completed", ""
    try:
        for server_round in range(0, rounds + 1):
            metrics: dict[str, float] = {}
            if server_round > 0:
                plan_now = LocalTraining(
                    epochs=epochs,
                    first_epoch=(server_round - 1) * epochs,
                    total_epochs=rounds * epochs,
                    seed=derive_seed(cfg.run.seed, "train", "centralized", server_round),
                )
                result = train_epochs(model, train, cfg.train, plan_now, device, augment=cfg.data.augment)
                metrics["train-loss"] = result.loss
                metrics.update(evaluate(model, val, device).metrics.as_dict("val"))
                metrics["val-examples"] = float(len(val))
            if test is not None:
                metrics.update(evaluate(model, test, device).metrics.as_dict("test"))
            model.cpu()
            recorder.record_round(server_round, model.state_dict(), metrics)
            log.info(
                "centralized round %d/%d: %s",
                server_round,
                rounds,
                ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in ("val-auc", "test-auc")),
            )
            if on_status is not None:
                on_status({"round": server_round, "rounds": rounds, "latest": metrics, "state": "running"})
    except BaseException as err:
        status, reason = "failed", f"{type(err).__name__}: {err}"
        raise
    finally:
        finish_run(
            cfg,
            recorder,
            status=status,
            reason=reason,
            hospitals=[HospitalEntry("pooled (all hospitals)", len(train), len(val))],
            parameters=parameters,
            test_images=len(test) if test is not None else None,
        )
    return recorder
