"""The round loop of a Flower strategy, able to start at any round.

Flower's ``Strategy.start`` always runs rounds ``1..num_rounds`` from the initial arrays;
a resumed run must continue at ``k + 1`` with the checkpointed global model. This loop
makes exactly the calls ``Strategy.start`` makes (Flower 1.41, ``flwr/serverapp/strategy/
strategy.py``), in the same order, with a first round:

    configure_train -> send_and_receive -> aggregate_train
    configure_evaluate -> send_and_receive -> aggregate_evaluate
    evaluate_fn(round, arrays)

so an uninterrupted run and a run resumed from a checkpoint make the same calls with
the same round numbers (FedAdam's bias correction, for one, depends on the round).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

log = logging.getLogger(__name__)

EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]


def run_rounds(
    strategy: Strategy,
    grid: Grid,
    arrays: ArrayRecord,
    *,
    first_round: int,
    num_rounds: int,
    timeout: float,
    evaluate_fn: EvaluateFn,
    train_config: ConfigRecord | None = None,
    evaluate_config: ConfigRecord | None = None,
) -> ArrayRecord:
    """Run rounds ``first_round..num_rounds`` of ``strategy`` starting from ``arrays``.

    Args:
        strategy: any Flower strategy (fedward's guarded, possibly DP-wrapped one).
        grid: the grid to the hospitals' SuperNodes.
        arrays: the global model after round ``first_round - 1``.
        first_round: 1 for a new run, ``k + 1`` to resume after round ``k``. A new run
            evaluates ``arrays`` as round 0 first, as Flower's ``start`` does.
        num_rounds: the last round; nothing runs when ``first_round > num_rounds``.
        timeout: seconds to wait for the hospitals' replies in each phase.
        evaluate_fn: server-side evaluation, called after every round with the new global model.
        train_config: config sent with every training instruction.
        evaluate_config: config sent with every evaluation instruction.

    Returns:
        The global model after ``num_rounds``.
    """
    train_config = train_config if train_config is not None else ConfigRecord()
    evaluate_config = evaluate_config if evaluate_config is not None else ConfigRecord()
    started = time.monotonic()
    if first_round <= 1:
        evaluate_fn(0, arrays)
    for current in range(max(first_round, 1), num_rounds + 1):
        log.info("[ROUND %d/%d]", current, num_rounds)
        replies = grid.send_and_receive(
            messages=strategy.configure_train(current, arrays, train_config, grid), timeout=timeout
        )
        aggregated, _ = strategy.aggregate_train(current, replies)
        if aggregated is not None:
            arrays = aggregated
        replies = grid.send_and_receive(
            messages=strategy.configure_evaluate(current, arrays, evaluate_config, grid), timeout=timeout
        )
        strategy.aggregate_evaluate(current, replies)
        evaluate_fn(current, arrays)
    log.info("rounds %d..%d done in %.1f s", first_round, num_rounds, time.monotonic() - started)
    return arrays
