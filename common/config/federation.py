"""The ``[federation]`` section of a run configuration: the hospitals, the rounds, and how long to wait for them.

Validated when built (:class:`~fedward.common.errors.ConfigError` naming the key), like every
section of :mod:`fedward.common.config.sections`, which re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedward.common.choices import Partition
from fedward.common.config.checks import check_min, check_range
from fedward.common.errors import ConfigError


@dataclass(frozen=True, slots=True)
class FederationConfig:
    """The hospitals and the rounds.

    Attributes:
        hospitals: number of hospitals (simulated SuperNodes, or expected SuperNodes in
            deployment), >= 1.
        partition: how simulation splits the training images across hospitals.
        alpha: Dirichlet concentration for ``dirichlet`` and ``quantity`` (> 0); smaller
            means more skew.
        min_hospital_size: smallest number of training images a simulated hospital may get.
        rounds: federated rounds (>= 1).
        fraction_train: share of connected hospitals sampled for training each round, (0, 1].
        fraction_evaluate: share sampled for federated evaluation each round, [0, 1].
        min_available: hospitals that must be connected before a round starts; 0 means all
            ``hospitals``. Flower waits for them without limit.
        min_hospitals: hospitals that must be connected before a round starts, waited for
            at most ``min_hospitals_wait`` seconds; then the run stops cleanly, the completed
            rounds kept and the reason in the model card. 0: off (``min_available`` applies).
        min_hospitals_wait: longest wait for ``min_hospitals`` before a round, seconds (> 0).
        round_timeout: seconds the server waits for replies in one round (> 0); late
            hospitals are left out of that round.
        evaluate_in_train: when every hospital trains and evaluates every round
            (``fraction_train`` and ``fraction_evaluate`` 1), each round's global model is
            scored on the hospitals' validation splits at the start of the next round's
            training message instead of by an evaluation message of its own (the last
            round's by one); same metrics, one message fewer per hospital and round.
    """

    hospitals: int = 5
    partition: Partition = Partition.IID
    alpha: float = 0.5
    min_hospital_size: int = 20
    rounds: int = 20
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_available: int = 0
    min_hospitals: int = 0
    min_hospitals_wait: float = 600.0
    round_timeout: float = 600.0
    evaluate_in_train: bool = True

    def __post_init__(self) -> None:
        check_min("federation.hospitals", self.hospitals, 1)
        check_range("federation.alpha", self.alpha, low=0.0, high=1e6, low_open=True)
        check_min("federation.min-hospital-size", self.min_hospital_size, 1)
        check_min("federation.rounds", self.rounds, 1)
        check_range("federation.fraction-train", self.fraction_train, low=0.0, high=1.0, low_open=True)
        check_range("federation.fraction-evaluate", self.fraction_evaluate, low=0.0, high=1.0)
        check_min("federation.min-available", self.min_available, 0)
        if self.min_available > self.hospitals:
            raise ConfigError(
                f"federation.min-available ({self.min_available}) cannot exceed federation.hospitals ({self.hospitals})"
            )
        check_range("federation.round-timeout", self.round_timeout, low=0.0, high=7 * 86400.0, low_open=True)
        self._check_min_hospitals()

    def _check_min_hospitals(self) -> None:
        check_min("federation.min-hospitals", self.min_hospitals, 0)
        if self.min_hospitals > self.hospitals:
            raise ConfigError(
                f"federation.min-hospitals ({self.min_hospitals}) cannot exceed federation.hospitals ({self.hospitals})"
            )
        if self.min_hospitals and self.min_available:
            raise ConfigError(
                "set federation.min-hospitals (waits at most min-hospitals-wait seconds) or "
                "federation.min-available (waits without limit), not both"
            )
        check_range("federation.min-hospitals-wait", self.min_hospitals_wait, low=0.0, high=7 * 86400.0, low_open=True)

    @property
    def carries_evaluation(self) -> bool:
        """Whether rounds evaluate inside the next round's training message (see ``evaluate_in_train``)."""
        return self.evaluate_in_train and self.fraction_train == 1.0 and self.fraction_evaluate == 1.0

    @property
    def required_hospitals(self) -> int:
        """Hospitals that must be connected before a round starts."""
        return self.min_hospitals or self.min_available or self.hospitals
