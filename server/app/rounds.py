"""The round loop of a Flower strategy, able to start at any round.

Flower's ``Strategy.start`` always runs rounds ``1..num_rounds`` from the initial arrays;
a resumed run must continue at ``k + 1`` with the checkpointed global model. This loop
makes exactly the calls ``Strategy.start`` makes (Flower 1.41, ``flwr/serverapp/strategy/
strategy.py``), in the same order, with a first round:

    configure_train -> send_and_receive -> aggregate_train
    configure_evaluate -> send_and_receive -> aggregate_evaluate
    on_round_end(round, arrays, round log)

so an uninterrupted run and a run resumed from a checkpoint make the same calls with
the same round numbers (FedAdam's bias correction, for one, depends on the round).
Where ``Strategy.start`` calls its ``evaluate_fn`` hook, this loop calls the run's
explicit end-of-round step with the round's log, handed over by the guard.

With ``federation.min-hospitals`` each round first waits, at most
``min-hospitals-wait`` seconds, for that many connected hospitals
(:func:`wait_for_hospitals`); Flower's own sampling would wait without limit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from fedward.common.errors import FedwardError
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


def run_rounds(
    strategy: GuardedStrategy,
    grid: Grid,
    arrays: ArrayRecord,
    *,
    first_round: int,
    num_rounds: int,
    timeout: float,
    on_round_end: RoundEnd,
    train_config: ConfigRecord | None = None,
    evaluate_config: ConfigRecord | None = None,
    min_hospitals: tuple[int, float] = (0, 0.0),
) -> ArrayRecord:
    """Run rounds ``first_round..num_rounds`` of ``strategy`` starting from ``arrays``.

    Args:
        strategy: fedward's guarded (possibly DP-wrapped) strategy.
        grid: the grid to the hospitals' SuperNodes.
        arrays: the global model after round ``first_round - 1``.
        first_round: 1 for a new run, ``k + 1`` to resume after round ``k``. A new run
            ends round 0 (the initial model) first, as Flower's ``start`` evaluates it.
        num_rounds: the last round; nothing runs when ``first_round > num_rounds``.
        timeout: seconds to wait for the hospitals' replies in each phase.
        on_round_end: called after every round with the new global model and the round's log.
        train_config: config sent with every training instruction.
        evaluate_config: config sent with every evaluation instruction.
        min_hospitals: ``(hospitals, seconds)``: wait for that many connected hospitals
            before each round, at most that long; ``(0, ...)``: do not wait here.

    Returns:
        The global model after ``num_rounds``.

    Raises:
        TooFewHospitalsError: from :func:`wait_for_hospitals`; the rounds before it are complete.
    """
    train_config = train_config if train_config is not None else ConfigRecord()
    evaluate_config = evaluate_config if evaluate_config is not None else ConfigRecord()
    started = time.monotonic()
    if first_round <= 1:
        on_round_end(0, arrays, RoundLog())
    for current in range(max(first_round, 1), num_rounds + 1):
        log.info("[ROUND %d/%d]", current, num_rounds)
        if min_hospitals[0] > 0:
            wait_for_hospitals(grid, min_hospitals[0], min_hospitals[1], current)
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
        on_round_end(current, arrays, strategy.take_log(current))
    log.info("rounds %d..%d done in %.1f s", first_round, num_rounds, time.monotonic() - started)
    return arrays
