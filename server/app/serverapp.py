"""The fedward ServerApp: one federated run, from the initial model to the model card.

The same ServerApp runs in simulation (Flower's simulation runtime) and in deployment
(a SuperLink started by ``fedward server start``). Per round::

    global model --train--> hospitals (sampled by the strategy, ordered by name)
    replies --validate--> accepted updates --strategy--> new global model
    new global model --evaluate--> hospitals' local validation metrics (weighted mean)
    new global model --> server test split (when this machine has it)
    --> run directory: metrics, weights, best model, status, checkpoint

With ``run.resume`` the ServerApp continues the run directory ``run.dir`` from its
checkpoint (global model, strategy state, RNG state) at the round after the last one
completed; on a CPU the result is the same, bit for bit, as an uninterrupted run.

Component string for Flower: ``fedward.server.app.serverapp:app``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.exit import add_exit_handler

from fedward.common.choices import ClientDp
from fedward.common.config import RunConfig
from fedward.common.data.npz import DatasetSchema
from fedward.common.errors import ConfigError
from fedward.common.logs import configure_logging
from fedward.common.ml.networks import build_model, load_initial_weights
from fedward.common.ml.runtime import derive_seed, resolve_device, seed_everything
from fedward.common.rundir.card import HospitalEntry, finish_run
from fedward.common.rundir.checkpoint import (
    Checkpoint,
    capture_rng,
    load_checkpoint,
    restore_rng,
    restore_strategy_state,
    save_checkpoint,
    strategy_state,
)
from fedward.common.rundir.lock import RunLock
from fedward.common.rundir.recorder import RunRecorder, new_run_dir
from fedward.common.wire import DPSGD_EPSILON, NUM_EXAMPLES, arrays_to_state_dict, load_arrays, model_to_arrays
from fedward.server.app.dp_plan import EPSILON_KEY, DpSgdSummary, PrivacyPlan
from fedward.server.app.guard import GuardedStrategy, RoundLog
from fedward.server.app.rounds import run_rounds
from fedward.server.app.sites import OrderedGrid, SiteDirectory
from fedward.server.app.strategies import EXTRAPOLATING, build_strategy
from fedward.server.app.testset import TestEvaluator, load_test_split
from fedward.server.coordinator.admission import read_registered_names
from fedward.server.coordinator.superlink import RUNS_DIR_ENV, STATE_DIR_ENV, CoordinatorState

log = logging.getLogger(__name__)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower entry point: parse the run config once and run the federation."""
    cfg = RunConfig.from_flower(context.run_config)
    run_federation(grid, cfg, run_id=context.run_id)


def coordinator_overrides(cfg: RunConfig) -> RunConfig:
    """Where runs go on a coordinator: ``$FEDWARD_RUNS_DIR`` (set by ``fedward server start``)
    replaces the submitter's ``run.output-dir``, which names a folder on another machine.

    Raises:
        ConfigError: if a submitted ``run.dir`` (a run to resume) is not a run directory
            directly inside the coordinator's runs folder.
    """
    runs = os.environ.get(RUNS_DIR_ENV)
    if not runs:
        return cfg
    if cfg.run.dir is not None:
        if Path(cfg.run.dir).resolve().parent != Path(runs).resolve():
            raise ConfigError(f"run.dir {cfg.run.dir} is not a run directory of this coordinator ({runs})")
        return cfg
    return cfg.replace(run=dataclasses.replace(cfg.run, output_dir=Path(runs)))


def registered_hospitals() -> dict[int, str]:
    """Node id -> name from the coordinator's registry (``$FEDWARD_STATE_DIR``), if any."""
    state = os.environ.get(STATE_DIR_ENV)
    if not state:
        return {}
    registry = CoordinatorState(Path(state)).hospitals_file
    return read_registered_names(registry)


def round_rows(entry: RoundLog) -> list[dict[str, Any]]:
    """Per-hospital rows of one round for ``metrics/hospitals.jsonl``."""
    rows: list[dict[str, Any]] = []
    for phase, reports in (("train", entry.train), ("evaluate", entry.evaluate)):
        rows += [{"hospital": r.name, "phase": phase, "node-id": r.node_id, **r.metrics} for r in reports]
    for phase, exclusions in (("rejected", entry.rejected), ("failed", entry.failed)):
        rows += [{"hospital": x.name, "phase": phase, "node-id": x.node_id, "reason": x.reason} for x in exclusions]
    return rows


def round_metrics(entry: RoundLog) -> dict[str, float]:
    """Aggregated metrics of one round (train-*, val-*, counts)."""
    metrics: dict[str, float] = {k: v for k, v in entry.train_metrics.items() if k != NUM_EXAMPLES}
    for key, value in entry.evaluate_metrics.items():
        metrics["val-examples" if key == NUM_EXAMPLES else key] = value
    metrics["hospitals-trained"] = len(entry.train)
    metrics["hospitals-evaluated"] = len(entry.evaluate)
    metrics["hospitals-rejected"] = len(entry.rejected)
    metrics["hospitals-failed"] = len(entry.failed)
    return metrics


def run_federation(grid: Grid, cfg: RunConfig, run_id: int | None = None) -> None:
    """Run all rounds of ``cfg`` on ``grid`` and write the run directory.

    Raises:
        ConfigError: if the config was not resolved against the dataset.
        RunBusyError: if another ServerApp is running the same run directory (a resume of
            a run that has not stopped).
        CheckpointError: if a run to resume has no usable checkpoint.
        Exception: whatever ends the run early is re-raised after the run directory
            records the failure.
    """
    schema = cfg.data.schema()
    cfg = coordinator_overrides(cfg)
    run_dir = cfg.run.dir or new_run_dir(cfg, suffix=str(run_id) if run_id else "")
    with RunLock(run_dir):  # released by the OS however this process ends
        _federate(grid, cfg, schema, run_dir, run_id)


def _federate(grid: Grid, cfg: RunConfig, schema: DatasetSchema, run_dir: Path, run_id: int | None) -> None:
    """The body of :func:`run_federation`, with the run directory locked."""
    configure_logging(file=run_dir / "logs" / "server.log")
    seed_everything(cfg.run.seed)  # Python's RNG drives Flower's node sampling
    torch.manual_seed(derive_seed(cfg.run.seed, "initial-model"))
    model = build_model(cfg.model.name, schema.channels, schema.num_outputs, private=cfg.privacy.enabled)
    checkpoint = load_checkpoint(run_dir) if cfg.run.resume else None
    if checkpoint is not None:
        load_arrays(model, checkpoint.model_arrays())
    elif cfg.model.init_weights is not None:
        load_initial_weights(model, cfg.model.init_weights)
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    initial = model_to_arrays(model)

    recorder = RunRecorder(run_dir, cfg, mode="federated")
    if checkpoint is not None:
        recorder.resume(checkpoint.server_round)
    directory = SiteDirectory(timeout=cfg.federation.round_timeout, registered=registered_hospitals())
    buffers = frozenset(name for name, _ in model.named_buffers())
    privacy = PrivacyPlan.from_config(cfg)
    strategy = GuardedStrategy(
        privacy.wrap(build_strategy(cfg), cfg),
        names=directory.name,
        averaged_buffers=buffers if cfg.strategy.name in EXTRAPOLATING else frozenset(),
        reject_unchanged=privacy.mode in (ClientDp.SERVER_FIXED, ClientDp.SERVER_ADAPTIVE),
    )
    if checkpoint is not None:
        restore_strategy_state(strategy, checkpoint.strategy)
    test_split = load_test_split(cfg, schema)
    tester = TestEvaluator(test_split, resolve_device(cfg.train.device)) if test_split is not None else None
    log.info(
        "run %s: %s on %s, %d hospitals, %d rounds, strategy %s; writing to %s",
        run_id or "-",
        cfg.model.name.value,
        cfg.data.dataset,
        cfg.federation.hospitals,
        cfg.federation.rounds,
        cfg.strategy.name.value,
        run_dir,
    )

    # largest record-level epsilon any hospital reported so far
    dpsgd_epsilon = [float(checkpoint.extra.get(DPSGD_EPSILON, 0.0)) if checkpoint else 0.0]

    def after_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        load_arrays(model, arrays)
        entry = strategy.rounds.get(server_round, RoundLog())
        metrics = round_metrics(entry) if server_round > 0 else {}
        if privacy.mechanism is not None:
            metrics[EPSILON_KEY] = privacy.epsilon(server_round)
        reported = [r.metrics[DPSGD_EPSILON] for r in entry.train if DPSGD_EPSILON in r.metrics]
        if reported:  # the run's record-level guarantee is its weakest hospital's
            metrics[DPSGD_EPSILON] = dpsgd_epsilon[0] = max(max(reported), dpsgd_epsilon[0])
        test = tester(model) if tester is not None else {}
        metrics.update(test)
        recorder.record_round(server_round, arrays_to_state_dict(arrays), metrics, round_rows(entry))
        save_checkpoint(
            run_dir,
            Checkpoint(
                server_round,
                {k: a.numpy() for k, a in arrays.items()},
                strategy_state(strategy),
                capture_rng(),
                {DPSGD_EPSILON: dpsgd_epsilon[0]},
            ),
        )
        _log_round(server_round, cfg.federation.rounds, metrics)
        return MetricRecord(test) if test else None  # type: ignore[arg-type]

    closed = False

    def close(status: str, reason: str = "") -> None:
        """Write the final status, plots and model card, once."""
        nonlocal closed
        if closed:
            return
        closed = True
        hospitals = [
            HospitalEntry(s.name, s.train_examples, s.val_examples, files_skipped=s.files_skipped)
            for s in sorted(directory.sites.values(), key=lambda s: s.name)
            if s.compatible
        ]
        finish_run(
            cfg,
            recorder,
            status=status,
            reason=reason,
            hospitals=hospitals,
            parameters=parameters,
            test_images=len(test_split) if test_split is not None else None,
            privacy=privacy.card(
                max(recorder.last_round, 0),
                dpsgd=DpSgdSummary.of(cfg, dpsgd_epsilon[0]) if cfg.privacy.dpsgd else None,
            ),
        )
        log.info("run %s %s; model card: %s", run_id or "-", status, run_dir / "model_card.md")

    # `flwr stop` / `fedward run stop` ends the ServerApp process through Flower's exit
    # path (SIGINT, then a forced exit 5 s later); close the run directory before that.
    add_exit_handler(
        lambda: close("stopped", f"stopped by the coordinator after round {recorder.last_round}"),
        run_before_force_exit=True,
    )
    first_round = 1
    if checkpoint is not None:
        first_round = checkpoint.server_round + 1
        log.info("resuming after round %d of %d from %s", checkpoint.server_round, privacy.rounds, run_dir)
        restore_rng(checkpoint.rng)  # the generators as they were when that round ended
    try:
        run_rounds(
            strategy,
            OrderedGrid(grid, directory),
            initial,
            first_round=first_round,
            num_rounds=privacy.rounds,
            timeout=cfg.federation.round_timeout,
            evaluate_fn=after_round,
            train_config=ConfigRecord(),
            evaluate_config=ConfigRecord(),
        )
    except BaseException as err:
        reason = f"{type(err).__name__}: {err}"
        log.error("run failed after round %d: %s", recorder.last_round, reason)
        close("failed", reason)
        raise
    if privacy.stopped_by_budget:
        epsilon = privacy.epsilon(privacy.rounds)
        close(
            "completed",
            f"privacy budget: stopped after round {privacy.rounds} of {privacy.planned_rounds} at epsilon "
            f"{epsilon:.3g} (delta {privacy.delta:g}); one more round would exceed max-epsilon {privacy.max_epsilon:g}",
        )
    else:
        close("completed")


def _log_round(server_round: int, rounds: int, metrics: dict[str, float]) -> None:
    shown = ", ".join(
        f"{k} {v:.4f}"
        for k, v in metrics.items()
        if k in ("train-loss", "val-auc", "test-auc", "test-accuracy") and isinstance(v, float) and math.isfinite(v)
    )
    log.info("round %d/%d done%s", server_round, rounds, f": {shown}" if shown else "")
