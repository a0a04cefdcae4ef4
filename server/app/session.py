"""RunSession: one federated run on the coordinator, set up once, a step at the end of every round, closed once.

:class:`RunSession` builds everything a run needs from its
:class:`~fedward.common.config.spec.RunSpec` (the initial global model or the checkpointed
one, the recorder, the hospital directory, the guarded and DP-wrapped strategy, the
server's test split), then drives the round loop (:func:`~fedward.server.app.rounds.run_rounds`).
At the end of every round, :meth:`RunSession.on_round_end` records the round (metrics,
per-hospital rows, weights, best model) and writes the checkpoint; :meth:`RunSession.close`
writes the final status and the model card exactly once, however the run ends.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.supercore.exit import add_exit_handler

from fedward.common.choices import ClientDp
from fedward.common.config import RunSpec
from fedward.common.logs import configure_logging
from fedward.common.ml.accounting import ClientDpPlan
from fedward.common.ml.networks import initial_network
from fedward.common.ml.runtime import resolve_device, seed_everything
from fedward.common.ml.tasks import head_for
from fedward.common.rundir.card import HospitalEntry, RunEnding, finish_run
from fedward.common.rundir.checkpoint import Checkpoint, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from fedward.common.rundir.layout import CARD_MD, SERVER_LOG
from fedward.common.rundir.recorder import RunRecorder
from fedward.common.wire import DPSGD_EPSILON, arrays_to_state_dict, load_arrays, model_to_arrays
from fedward.server.app.dp_plan import EPSILON_KEY, DpSgdSummary, privacy_card, wrap_strategy
from fedward.server.app.guard import GuardedStrategy
from fedward.server.app.round_log import RoundLog
from fedward.server.app.rounds import TooFewHospitalsError, run_rounds
from fedward.server.app.sites import OrderedGrid, SiteDirectory
from fedward.server.app.strategies import EXTRAPOLATING, build_strategy
from fedward.server.app.strategy_state import restore_strategy_state, strategy_state
from fedward.server.app.testset import ServerTestScorer, load_test_split

log = logging.getLogger(__name__)

SHOWN = ("train-loss", "val-auc", "val-dice", "test-auc", "test-accuracy", "test-dice", "test-hd95")
"""Metrics the coordinator's log line of each round shows."""


class RunSession:
    """One federated run seen from the coordinator.

    Args:
        spec: the run; ``spec.run_dir`` must be set (and locked by the caller).
        run_id: Flower's run id, recorded for runs the coordinator started.
        registered: node id -> hospital name from the coordinator's roster.

    Raises:
        CheckpointError: if a run to resume has no usable checkpoint.
        ConfigError: if the privacy settings cannot be met.
        DataError: if the server's test split exists but is invalid.
    """

    def __init__(self, spec: RunSpec, run_id: int | None = None, registered: Mapping[int, str] | None = None) -> None:
        if spec.run_dir is None:
            raise ValueError("a run session needs its run directory")
        cfg, self.spec, self.run_dir, self.run_id = spec.config, spec, spec.run_dir, run_id
        configure_logging(file=self.run_dir / SERVER_LOG)
        seed_everything(cfg.run.seed)  # Python's RNG drives Flower's node sampling
        self.checkpoint = load_checkpoint(self.run_dir) if spec.resume else None
        self.model = initial_network(cfg, spec.schema)
        if self.checkpoint is not None:
            self.model.load_state_dict(self.checkpoint.model_state(), strict=True)
        self.parameters = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.head = head_for(spec.schema, cfg)
        self.recorder = RunRecorder(self.run_dir, spec, mode="federated", flower_run_id=run_id)
        if self.checkpoint is not None:
            self.recorder.resume(self.checkpoint.server_round)
        self.directory = SiteDirectory(timeout=cfg.federation.round_timeout, registered=registered or {})
        self.privacy = ClientDpPlan.from_config(cfg)
        self.strategy = self._strategy()
        if self.checkpoint is not None:
            restore_strategy_state(self.strategy, self.checkpoint.strategy)
        self.test_split = load_test_split(cfg, spec.schema)
        device = resolve_device(cfg.train.device)
        self.tester = ServerTestScorer(self.test_split, self.head, device) if self.test_split is not None else None
        self.dpsgd_epsilon = float(self.checkpoint.extra.get(DPSGD_EPSILON, 0.0)) if self.checkpoint else 0.0
        """Largest record-level (DP-SGD) epsilon any hospital reported so far."""
        self._closed = False

    def _strategy(self) -> GuardedStrategy:
        """The configured Flower strategy, wrapped for client-level DP, then guarded."""
        cfg = self.spec.config
        buffers = frozenset(name for name, _ in self.model.named_buffers())
        return GuardedStrategy(
            wrap_strategy(self.privacy, build_strategy(cfg), cfg),
            names=self.directory.name,
            averaged_buffers=buffers if cfg.strategy.name in EXTRAPOLATING else frozenset(),
            reject_unchanged=self.privacy.mode in (ClientDp.SERVER_FIXED, ClientDp.SERVER_ADAPTIVE),
            federate=self.head.federate,
        )

    def run(self, grid: Grid) -> None:
        """Run the remaining rounds on ``grid``, then close the run.

        Raises:
            Exception: whatever ends the run early is re-raised after the run directory
                records the failure.
        """
        cfg = self.spec.config
        log.info(
            "run %s: %s on %s, %d hospitals, %d rounds, strategy %s; writing to %s",
            *(self.run_id or "-", cfg.model.name.value, cfg.data.dataset, cfg.federation.hospitals),
            *(cfg.federation.rounds, cfg.strategy.name.value, self.run_dir),
        )
        # `flwr stop` / `fedward run stop` ends the ServerApp process through Flower's exit
        # path (SIGINT, then a forced exit 5 s later); close the run directory before that.
        add_exit_handler(self._stopped, run_before_force_exit=True)
        first_round = 1
        if self.checkpoint is not None:
            first_round = self.checkpoint.server_round + 1
            log.info("resuming after round %d of %d", self.checkpoint.server_round, self.privacy.rounds)
            restore_rng(self.checkpoint.rng)  # the generators as they were when that round ended
        try:
            run_rounds(
                self.strategy,
                OrderedGrid(grid, self.directory),
                model_to_arrays(self.model),
                first_round=first_round,
                num_rounds=self.privacy.rounds,
                timeout=cfg.federation.round_timeout,
                on_round_end=self.on_round_end,
                train_config=ConfigRecord(),
                evaluate_config=ConfigRecord(),
                min_hospitals=(cfg.federation.min_hospitals, cfg.federation.min_hospitals_wait),
            )
        except TooFewHospitalsError as err:  # a clean stop: every completed round is recorded
            log.warning("%s", err)
            self.close("stopped", str(err))
            return
        except BaseException as err:
            reason = f"{type(err).__name__}: {err}"
            log.error("run failed after round %d: %s", self.recorder.last_round, reason)
            self.close("failed", reason)
            raise
        self.close("completed", self._budget_reason())

    def on_round_end(self, server_round: int, arrays: ArrayRecord, entry: RoundLog) -> None:
        """Record a completed round (round 0: the initial model) and checkpoint the run after it.

        Args:
            server_round: the round that just ended.
            arrays: the global model after it.
            entry: what the hospitals sent in it.
        """
        load_arrays(self.model, arrays)
        metrics = entry.metrics() if server_round > 0 else {}
        if self.privacy.mechanism is not None:
            metrics[EPSILON_KEY] = self.privacy.epsilon(server_round)
        reported = [r.metrics[DPSGD_EPSILON] for r in entry.train if DPSGD_EPSILON in r.metrics]
        if reported:  # the run's record-level guarantee is its weakest hospital's
            metrics[DPSGD_EPSILON] = self.dpsgd_epsilon = max(max(reported), self.dpsgd_epsilon)
        if self.tester is not None:
            metrics.update(self.tester(self.model))
        self.recorder.record_round(server_round, arrays_to_state_dict(arrays), metrics, entry.rows())
        state = {k: a.numpy() for k, a in arrays.items()}
        extra = {DPSGD_EPSILON: self.dpsgd_epsilon}
        save_checkpoint(
            self.run_dir, Checkpoint(server_round, state, strategy_state(self.strategy), capture_rng(), extra)
        )
        _log_round(server_round, self.spec.config.federation.rounds, metrics)

    def close(self, status: str, reason: str = "") -> None:
        """Write the final status, plots and model card, once (later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        cfg = self.spec.config
        hospitals = [
            HospitalEntry(s.name, s.train_examples, s.val_examples, files_skipped=s.files_skipped)
            for s in sorted(self.directory.sites.values(), key=lambda s: s.name)
            if s.compatible
        ]
        dpsgd = DpSgdSummary.of(cfg, self.dpsgd_epsilon) if cfg.privacy.dpsgd else None
        ending = RunEnding(
            status,
            reason,
            hospitals,
            self.parameters,
            len(self.test_split) if self.test_split is not None else None,
            privacy_card(self.privacy, max(self.recorder.last_round, 0), dpsgd),
        )
        finish_run(self.recorder, ending)
        log.info("run %s %s; model card: %s", self.run_id or "-", status, self.run_dir / CARD_MD)

    def _stopped(self) -> None:
        self.close("stopped", f"stopped by the coordinator after round {self.recorder.last_round}")

    def _budget_reason(self) -> str:
        """Why a run under ``privacy.max-epsilon`` ended before its planned rounds ('' if it did not)."""
        plan = self.privacy
        if not plan.stopped_by_budget:
            return ""
        return (
            f"privacy budget: stopped after round {plan.rounds} of {plan.planned_rounds} at epsilon "
            f"{plan.epsilon(plan.rounds):.3g} (delta {plan.delta:g}); one more round would exceed max-epsilon "
            f"{plan.max_epsilon:g}"
        )


def _log_round(server_round: int, rounds: int, metrics: Mapping[str, float]) -> None:
    shown = ", ".join(
        f"{k} {v:.4f}" for k, v in metrics.items() if k in SHOWN and isinstance(v, float) and math.isfinite(v)
    )
    log.info("round %d/%d done%s", server_round, rounds, f": {shown}" if shown else "")
