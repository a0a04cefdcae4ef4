"""The round loop of a Flower strategy, able to start at any round, with evaluation carried by training.

Flower's ``Strategy.start`` always runs rounds ``1..num_rounds`` from the initial arrays;
a resumed run must continue at ``k + 1`` with the checkpointed global model. This loop
makes the calls ``Strategy.start`` makes (Flower 1.41, ``flwr/serverapp/strategy/
strategy.py``), in the same order, with a first round:

    configure_train -> send_and_receive -> aggregate_train
    configure_evaluate -> send_and_receive -> aggregate_evaluate
    on_round_end(round, arrays, round log)

so an uninterrupted run and a run resumed from a checkpoint make the same calls with
the same round numbers (FedAdam's bias correction, for one, depends on the round).
Where ``Strategy.start`` calls its ``evaluate_fn`` hook, this loop calls the run's
explicit end-of-round step with the round's log, handed over by the guard.

With ``carry_evaluation`` (every hospital trains and evaluates every round), a round's
global model is not sent out a second time to be evaluated: the next round's training
message asks each hospital to score the model it receives before training on it, and
replies with those metrics beside its update. Per round that saves one message to every
hospital and back, with its model. Round ``r`` then ends when round ``r + 1``'s
training replies arrive, just before they are aggregated; the last round is evaluated
by an evaluation message as before::

    train(1) -> [validate 1 + train(2)] -> end 1 -> ... -> [validate N-1 + train(N)] -> end N-1 -> evaluate(N) -> end N

The recorded metrics mean the same: round ``r``'s validation metrics are the hospitals'
scores of the global model after round ``r``. A hospital that fails round ``r + 1``'s
training sends no scores for round ``r``.

With ``federation.min-hospitals`` each round first waits, at most
``min-hospitals-wait`` seconds, for that many connected hospitals
(:func:`wait_for_hospitals`); Flower's own sampling would wait without limit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from fedward.common.errors import FedwardError
from fedward.common.wire import EVALUATE_FIRST
from fedward.server.app.guard import GuardedStrategy
from fedward.server.app.round_log import RoundLog

log = logging.getLogger(__name__)

RoundEnd = Callable[[int, ArrayRecord, RoundLog], None]
"""``(round, global model after it, what the hospitals sent)``; round 0 is the initial model."""

POLL_S = 1.0
"""How often :func:`wait_for_hospitals` counts the connected hospitals, seconds."""


class TooFewHospitalsError(FedwardError):
    """Fewer hospitals than ``federation.min-hospitals`` were connected within the wait; the run stops."""


def wait_for_hospitals(
    grid: Grid,
    needed: int,
    wait_s: float,
    server_round: int,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Wait until ``needed`` hospitals are connected (``grid.get_node_ids()``), at most ``wait_s`` seconds.

    Returns:
        How many are connected.

    Raises:
        TooFewHospitalsError: naming the round, the count, ``needed`` and the wait.
    """
    ends = clock() + wait_s
    while (connected := len(list(grid.get_node_ids()))) < needed:
        if clock() >= ends:
            raise TooFewHospitalsError(
                f"too few hospitals: {connected} of federation.min-hospitals {needed} connected after "
                f"{wait_s:g} s of waiting before round {server_round}; the run stopped"
            )
        log.info("round %d waits for hospitals: %d of %d connected", server_round, connected, needed)
        sleep(POLL_S)
    return connected


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """Which rounds to run and how.

    Attributes:
        first_round: 1 for a new run, ``k + 1`` to resume after round ``k``.
        num_rounds: the last round; nothing runs when ``first_round > num_rounds``.
        timeout: seconds to wait for the hospitals' replies in each phase.
        carry_evaluation: evaluate each round's global model inside the next round's
            training message (``evaluate-first``) instead of an evaluation message of its
            own; the last round is always evaluated by an evaluation message.
        owed: the model to start from (after ``first_round - 1``) has not been evaluated
            yet: a run resumed from a checkpoint written before that round's evaluation.
        min_hospitals: ``(hospitals, seconds)``: wait for that many connected hospitals
            before each round, at most that long; ``(0, ...)``: do not wait here.
    """

    first_round: int
    num_rounds: int
    timeout: float
    carry_evaluation: bool = False
    owed: bool = False
    min_hospitals: tuple[int, float] = (0, 0.0)


class RoundLoop:
    """The rounds of one run: Flower's ``Strategy.start`` calls, resumable, with evaluation carried.

    Args:
        strategy: fedward's guarded (possibly DP-wrapped) strategy.
        grid: the grid to the hospitals' SuperNodes.
        on_round_end: called after every round, in order, with the new global model and the
            round's log; round 0 (the initial model) first in a new run.
        on_trained: with ``carry_evaluation``, called as soon as a round's global model
            exists and before anything of the next round happens (its evaluation follows
            with the next round's training replies), so the run can checkpoint it.
        train_config: config sent with every training instruction.
        evaluate_config: config sent with every evaluation instruction.
    """

    def __init__(
        self,
        strategy: GuardedStrategy,
        grid: Grid,
        on_round_end: RoundEnd,
        on_trained: Callable[[int, ArrayRecord], None] | None = None,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
    ) -> None:
        self.strategy, self.grid = strategy, grid
        self.on_round_end, self.on_trained = on_round_end, on_trained
        self.train_config = train_config if train_config is not None else ConfigRecord()
        self.evaluate_config = evaluate_config if evaluate_config is not None else ConfigRecord()

    def run(self, arrays: ArrayRecord, plan: RoundPlan) -> ArrayRecord:
        """Run rounds ``plan.first_round..plan.num_rounds`` starting from ``arrays``.

        Returns:
            The global model after ``plan.num_rounds``.

        Raises:
            TooFewHospitalsError: from :func:`wait_for_hospitals`; every round before it is
                complete and recorded (an owed evaluation is done first).
        """
        started = time.monotonic()
        owed = plan.first_round - 1 if plan.owed else None
        if plan.first_round <= 1 and owed is None:
            self.on_round_end(0, arrays, RoundLog())
        for current in range(max(plan.first_round, 1), plan.num_rounds + 1):
            log.info("[ROUND %d/%d]", current, plan.num_rounds)
            if owed is not None and not plan.carry_evaluation:
                self._evaluate(owed, arrays, plan.timeout)
                owed = None
            if plan.min_hospitals[0] > 0:
                self._wait(plan, current, owed, arrays)
            arrays = self._train(current, arrays, plan.timeout, owed)
            if plan.carry_evaluation and current < plan.num_rounds:
                owed = current
                if self.on_trained is not None:
                    self.on_trained(current, arrays)
            else:
                self._evaluate(current, arrays, plan.timeout)
                owed = None
        if owed is not None:
            self._evaluate(owed, arrays, plan.timeout)
        log.info("rounds %d..%d done in %.1f s", plan.first_round, plan.num_rounds, time.monotonic() - started)
        return arrays

    def _train(self, current: int, arrays: ArrayRecord, timeout: float, owed: int | None) -> ArrayRecord:
        """Round ``current``'s training; first the ``owed`` round's evaluation when it rides along."""
        config = self.train_config
        if owed is not None:
            config = ConfigRecord({**config, EVALUATE_FIRST: True})
        replies = list(
            self.grid.send_and_receive(
                messages=self.strategy.configure_train(current, arrays, config, self.grid), timeout=timeout
            )
        )
        if owed is not None:
            self.strategy.aggregate_validation(owed, replies)
            self.on_round_end(owed, arrays, self.strategy.take_log(owed))
        aggregated, _ = self.strategy.aggregate_train(current, replies)
        return aggregated if aggregated is not None else arrays

    def _evaluate(self, server_round: int, arrays: ArrayRecord, timeout: float) -> None:
        """Evaluate ``server_round``'s global model with an evaluation message and end the round."""
        replies = self.grid.send_and_receive(
            messages=self.strategy.configure_evaluate(server_round, arrays, self.evaluate_config, self.grid),
            timeout=timeout,
        )
        self.strategy.aggregate_evaluate(server_round, replies)
        self.on_round_end(server_round, arrays, self.strategy.take_log(server_round))

    def _wait(self, plan: RoundPlan, current: int, owed: int | None, arrays: ArrayRecord) -> None:
        """:func:`wait_for_hospitals` before ``current``; an owed evaluation is done before the run stops."""
        try:
            wait_for_hospitals(self.grid, plan.min_hospitals[0], plan.min_hospitals[1], current)
        except TooFewHospitalsError:
            if owed is not None:
                self._evaluate(owed, arrays, plan.timeout)
            raise
