"""RunSession: one federated run on the coordinator, set up once, a step at the end of every round, closed once.

:class:`RunSession` builds everything a run needs from its
:class:`~fedward.common.config.spec.RunSpec` (the initial global model or the checkpointed
one, the recorder, the hospital directory, the guarded and DP-wrapped strategy, the
server's test split), then drives the round loop (:class:`~fedward.server.app.rounds.RoundLoop`).
At the end of every round, :meth:`RunSession.on_round_end` records the round (metrics,
per-hospital rows, weights, best model) and writes the checkpoint; :meth:`RunSession.close`
writes the final status and the model card exactly once, however the run ends.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from flwr.app import ArrayRecord
from flwr.serverapp import Grid
from flwr.supercore.exit import add_exit_handler

from fedward.common.choices import ClientDp
from fedward.common.config import RunSpec
from fedward.common.logs import configure_logging
from fedward.common.ml.accounting import ClientDpPlan
from fedward.common.ml.networks import initial_network
from fedward.common.ml.runtime import resolve_device, seed_everything
from fedward.common.ml.tasks import head_for
from fedward.common.ml.valstats import merge_wire
from fedward.common.rundir.card import HospitalEntry, RunEnding, finish_run
from fedward.common.rundir.checkpoint import (
    Checkpoint,
    CheckpointError,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from fedward.common.rundir.layout import CARD_MD, SERVER_LOG
from fedward.common.rundir.recorder import RunRecorder
from fedward.common.wire import DPSGD_EPSILON, arrays_to_state_dict, load_arrays, model_to_arrays
from fedward.server.app.dp_plan import EPSILON_KEY, DpSgdSummary, Tuning, privacy_card, wrap_strategy
from fedward.server.app.guard import GuardedStrategy
from fedward.server.app.round_log import RoundLog
from fedward.server.app.rounds import RoundLoop, RoundPlan, TooFewHospitalsError
from fedward.server.app.sites import OrderedGrid, SiteDirectory
from fedward.server.app.strategies import EXTRAPOLATING, build_strategy
from fedward.server.app.strategy_state import restore_strategy_state, strategy_state
from fedward.server.app.testset import BackgroundScoring, ServerTestScorer, load_test_split
from fedward.server.tracking.tracker import open_tracker

log = logging.getLogger(__name__)

EVALUATION_OWED = "evaluation-owed"
"""Checkpoint flag: the round's model is saved, its evaluation (and record) still to come."""

SHOWN = ("train-loss", "val-auc", "val-dice", "test-auc", "test-accuracy", "test-dice", "test-hd95")
"""Metrics the coordinator's log line of each round shows."""


class RunSession:
    """One federated run seen from the coordinator.

    Args:
        spec: the run; ``spec.run_dir`` must be set (and locked by the caller).
        run_id: Flower's run id, recorded for runs the coordinator started.
        directory: the hospitals (with the coordinator's roster; enrolment possibly
            announced); default: a new directory without a roster.

    Raises:
        CheckpointError: if a run to resume has no usable checkpoint.
        ConfigError: if the privacy settings cannot be met.
        DataError: if the server's test split exists but is invalid.
    """

    def __init__(self, spec: RunSpec, run_id: int | None = None, directory: SiteDirectory | None = None) -> None:
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
        self.recorder = RunRecorder(
            self.run_dir, spec, mode="federated", flower_run_id=run_id, listener=open_tracker(spec, self.run_dir)
        )
        owed = self.checkpoint.extra.get(EVALUATION_OWED) if self.checkpoint is not None else None
        self.owed = owed is not None
        """The checkpointed round's model was saved before its evaluation (which the resumed run does)."""
        if self.checkpoint is not None:
            self.recorder.resume(self.checkpoint.server_round, owed=self.owed)
        self.directory = directory or SiteDirectory(timeout=cfg.federation.round_timeout)
        self.privacy = ClientDpPlan.from_config(cfg)
        self.strategy = self._strategy()
        if self.checkpoint is not None:
            restore_strategy_state(self.strategy, self.checkpoint.strategy)
        if self.checkpoint is not None and owed is not None:  # what that round's hospitals sent in training
            self.strategy.rounds[self.checkpoint.server_round] = owed_log(owed)
        self.test_split = load_test_split(cfg, spec.schema)
        device = resolve_device(cfg.train.device)
        self.tester = (
            BackgroundScoring(ServerTestScorer(self.test_split, self.head, device), copy.deepcopy(self.model))
            if self.test_split is not None
            else None
        )
        self.dpsgd_epsilon = float(self.checkpoint.extra.get(DPSGD_EPSILON, 0.0)) if self.checkpoint else 0.0
        """Largest record-level (DP-SGD) epsilon any hospital reported so far."""
        self._rng: dict[int, dict[str, Any]] = {}
        """Generators captured by :meth:`on_trained`, by round, until the round ends."""
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
        plan = RoundPlan(
            first_round,
            self.privacy.rounds,
            cfg.federation.round_timeout,
            carry_evaluation=cfg.federation.carries_evaluation,
            owed=self.owed,
            min_hospitals=(cfg.federation.min_hospitals, cfg.federation.min_hospitals_wait),
        )
        loop = RoundLoop(self.strategy, OrderedGrid(grid, self.directory), self.on_round_end, self.on_trained)
        try:
            loop.run(model_to_arrays(self.model), plan)
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

    def on_trained(self, server_round: int, arrays: ArrayRecord) -> None:
        """Checkpoint a round's global model before its evaluation (which rides on the next round's training).

        The checkpoint is marked :data:`EVALUATION_OWED`: a run stopped before that
        evaluation resumes by doing it. The generators are captured here, where an
        uninterrupted run's next round starts, and reused by :meth:`on_round_end`. The
        model's test-split scoring starts here too, in the background
        (:class:`~fedward.server.app.testset.BackgroundScoring`).
        """
        self._rng[server_round] = capture_rng()
        entry = self.strategy.log_for(server_round)
        self._note_dpsgd_epsilon(entry)
        self._checkpoint(server_round, arrays, self._rng[server_round], owed=entry)
        if self.tester is not None:  # while the hospitals validate it and train on it
            self.tester.start(server_round, arrays)

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
        if self._note_dpsgd_epsilon(entry):  # the run's record-level guarantee is its weakest hospital's
            metrics[DPSGD_EPSILON] = self.dpsgd_epsilon
        if self.tester is not None:
            metrics.update(self.tester.result(server_round, arrays, metrics))
        statistics, _ = merge_wire([r.statistics for r in entry.evaluate])
        self.recorder.record_round(
            server_round,
            arrays_to_state_dict(arrays),
            metrics,
            entry.rows(),
            statistics.wire() if statistics is not None else None,
        )
        self.recorder.record_hospitals([asdict(h) for h in self._hospitals()])
        rng = self._rng.pop(server_round, None)
        self._checkpoint(server_round, arrays, rng if rng is not None else capture_rng(), owed=None)
        _log_round(server_round, self.spec.config.federation.rounds, metrics)

    def _note_dpsgd_epsilon(self, entry: RoundLog) -> bool:
        """Raise :attr:`dpsgd_epsilon` to the largest a hospital reported in ``entry``; whether any did."""
        reported = [r.metrics[DPSGD_EPSILON] for r in entry.train if DPSGD_EPSILON in r.metrics]
        if reported:
            self.dpsgd_epsilon = max(max(reported), self.dpsgd_epsilon)
        return bool(reported)

    def _checkpoint(
        self, server_round: int, arrays: ArrayRecord, rng: dict[str, Any], *, owed: RoundLog | None
    ) -> None:
        """Save the run after ``server_round``; ``owed``: that round's log so far, its evaluation still to come."""
        state = {k: a.numpy() for k, a in arrays.items()}
        extra: dict[str, Any] = {DPSGD_EPSILON: self.dpsgd_epsilon}
        if owed is not None:
            extra[EVALUATION_OWED] = owed.to_json()
        save_checkpoint(self.run_dir, Checkpoint(server_round, state, strategy_state(self.strategy), rng, extra))

    def close(self, status: str, reason: str = "") -> None:
        """Write the final status, plots and model card, once (later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        if self.tester is not None:
            self.tester.close()
        cfg = self.spec.config
        hospitals = self._hospitals()
        dpsgd = DpSgdSummary.of(cfg, self.dpsgd_epsilon) if cfg.privacy.dpsgd else None
        ending = RunEnding(
            status,
            reason,
            hospitals,
            self.parameters,
            len(self.test_split) if self.test_split is not None else None,
            privacy_card(self.privacy, max(self.recorder.last_round, 0), dpsgd, Tuning.of(cfg)),
        )
        finish_run(self.recorder, ending)
        log.info("run %s %s; model card: %s", self.run_id or "-", status, self.run_dir / CARD_MD)

    def _hospitals(self) -> list[HospitalEntry]:
        """The enrolled, compatible hospitals as the model card lists them (counts and versions only)."""
        return [
            HospitalEntry(
                *(s.name, s.train_examples, s.val_examples),
                files_skipped=s.files_skipped,
                fedward=s.version,
                device=s.device,
            )
            for s in sorted(self.directory.sites.values(), key=lambda s: s.name)
            if s.compatible
        ]

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


def owed_log(data: Any) -> RoundLog:
    """The round log a checkpoint kept for a round whose evaluation is owed.

    Raises:
        CheckpointError: if it is not one.
    """
    try:
        return RoundLog.from_json(data)
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"the checkpoint's {EVALUATION_OWED} entry is not a round log ({err})") from None


def _log_round(server_round: int, rounds: int, metrics: Mapping[str, float]) -> None:
    shown = ", ".join(
        f"{k} {v:.4f}" for k, v in metrics.items() if k in SHOWN and isinstance(v, float) and math.isfinite(v)
    )
    log.info("round %d/%d done%s", server_round, rounds, f": {shown}" if shown else "")
