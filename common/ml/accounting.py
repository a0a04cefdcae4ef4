"""Privacy accounting: what (epsilon, delta) a run's Gaussian mechanisms spend.

Two units of privacy, accounted with Google's ``dp-accounting`` Rényi-DP accountant
(Mironov, 2017; Mironov, Talwar & Zhang, 2019 for the sampled Gaussian):

* **Client-level** (a hospital's whole contribution; McMahan et al., 2018, "Learning
  Differentially Private Recurrent Language Models"): every round the aggregate of
  clipped hospital updates gets Gaussian noise of standard deviation
  ``noise_multiplier * clipping_norm`` on the sum (Flower's DP wrappers): a Gaussian
  mechanism per round under add/remove-one-hospital, composed over rounds. Flower's
  strategies sample a *fixed number* ``m`` of the ``n`` hospitals per round; privacy
  amplification by sampling is proven for Poisson sampling under add/remove and for
  fixed-size sampling only under replace-one (Wang, Balle & Kasiviswanathan, 2019), so
  with ``m < n`` fedward does not claim amplification: the bound is the one of every
  hospital taking part in every round (what Flower's own accountant reports too). It is
  conservative, never optimistic.
* **Record-level** (one image; DP-SGD, Abadi et al., 2016): each local step is a
  Poisson-sampled Gaussian with sampling rate ``batch_size / n_train`` under
  add/remove-one-record; a hospital's epsilon composes all its steps over all rounds.

:func:`calibrate_noise` inverts either: the smallest noise multiplier that keeps epsilon at
or below a target, using ``dp_accounting.calibrate_dp_mechanism``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dp_accounting
from dp_accounting.rdp import RdpAccountant

from fedward.common.choices import ClientDp
from fedward.common.config import RunConfig
from fedward.common.errors import ConfigError

# Rényi orders: the dp-accounting defaults, dense at small orders where tight bounds live.
RDP_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512])
NOISE_BRACKET = (1e-3, 1e3)


@dataclass(frozen=True, slots=True)
class ClientLevelGaussian:
    """The per-round Gaussian mechanism of client-level DP.

    Attributes:
        noise_multiplier: noise standard deviation on the sum of clipped updates divided by
            the clipping norm (Flower's ``noise_multiplier``; for adaptive clipping the
            effective one, Andrew et al., 2021), > 0.
        hospitals: hospitals in the federation, n >= 1.
        sampled: hospitals sampled per round, 1 <= m <= n.
    """

    noise_multiplier: float
    hospitals: int
    sampled: int

    def __post_init__(self) -> None:
        if self.noise_multiplier <= 0:
            raise ConfigError(f"the noise multiplier must be positive for accounting; got {self.noise_multiplier}")
        if not 1 <= self.sampled <= self.hospitals:
            raise ConfigError(f"hospitals sampled per round ({self.sampled}) must be in 1..{self.hospitals}")

    @property
    def relation(self) -> dp_accounting.NeighboringRelation:
        """Add/remove-one hospital."""
        return dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE

    @property
    def amplified(self) -> bool:
        """Whether the bound uses amplification by sampling (never: see the module notes)."""
        return False

    def event(self, rounds: int) -> dp_accounting.DpEvent:
        """The DP event of ``rounds`` rounds (a hospital's worst case: sampled every round)."""
        return dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(self.noise_multiplier), rounds)

    def epsilon(self, rounds: int, delta: float) -> float:
        """Epsilon at ``delta`` after ``rounds`` rounds (0 rounds: 0)."""
        return _epsilon(self.event(rounds), delta, self.relation) if rounds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class RecordLevelGaussian:
    """DP-SGD at one hospital: Poisson-sampled Gaussian steps.

    Attributes:
        noise_multiplier: per-step noise standard deviation divided by the per-sample
            clipping norm, > 0.
        sample_rate: probability an image is in a step's batch (batch size / images), in (0, 1].
        steps_per_round: optimizer steps per round (local epochs / sample rate), >= 1.
    """

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int

    def __post_init__(self) -> None:
        if self.noise_multiplier <= 0:
            raise ConfigError(f"the DP-SGD noise multiplier must be positive; got {self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise ConfigError(f"the DP-SGD sampling rate must be in (0, 1]; got {self.sample_rate}")
        if self.steps_per_round < 1:
            raise ConfigError(f"DP-SGD needs at least one step per round; got {self.steps_per_round}")

    @property
    def relation(self) -> dp_accounting.NeighboringRelation:
        """Add/remove-one image (Poisson sampling)."""
        return dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE

    def event(self, rounds: int) -> dp_accounting.DpEvent:
        """The DP event of ``rounds`` rounds of local training."""
        gaussian = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        step = dp_accounting.PoissonSampledDpEvent(self.sample_rate, gaussian)
        return dp_accounting.SelfComposedDpEvent(step, rounds * self.steps_per_round)

    def epsilon(self, rounds: int, delta: float) -> float:
        """Epsilon at ``delta`` after ``rounds`` rounds (0 rounds: 0)."""
        return _epsilon(self.event(rounds), delta, self.relation) if rounds > 0 else 0.0


def _epsilon(event: dp_accounting.DpEvent, delta: float, relation: dp_accounting.NeighboringRelation) -> float:
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1); got {delta}")
    accountant = RdpAccountant(list(RDP_ORDERS), relation)
    accountant.compose(event)
    with _quiet_accountant():
        return float(accountant.get_epsilon(delta))


@contextlib.contextmanager
def _quiet_accountant() -> Iterator[None]:
    """dp-accounting logs a warning for every Rényi order it cannot evaluate and drops; the
    bound from the remaining orders holds, so these are noise in a hospital's log."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(level)


def calibrate_noise(
    make_mechanism: Callable[[float], ClientLevelGaussian | RecordLevelGaussian],
    rounds: int,
    target_epsilon: float,
    delta: float,
) -> float:
    """The smallest noise multiplier whose mechanism spends at most ``target_epsilon``.

    Args:
        make_mechanism: builds the mechanism for a candidate noise multiplier.
        rounds: rounds the budget must last.
        target_epsilon: epsilon at ``delta`` after ``rounds`` rounds, > 0.
        delta: target delta in (0, 1).

    Returns:
        The noise multiplier (within dp-accounting's default tolerance, rounded up).

    Raises:
        ConfigError: if no noise multiplier up to 1000 reaches the target.
    """
    if target_epsilon <= 0:
        raise ConfigError(f"the target epsilon must be positive; got {target_epsilon}")
    probe = make_mechanism(1.0)
    relation = probe.relation

    def event(noise: float) -> dp_accounting.DpEvent:
        return make_mechanism(noise).event(rounds)

    try:
        with _quiet_accountant():
            noise = dp_accounting.calibrate_dp_mechanism(
                lambda: RdpAccountant(list(RDP_ORDERS), relation),
                event,
                target_epsilon,
                delta,
                dp_accounting.ExplicitBracketInterval(*NOISE_BRACKET),
            )
    except (ValueError, RuntimeError) as err:
        raise ConfigError(
            f"no noise multiplier up to {NOISE_BRACKET[1]:g} keeps epsilon <= {target_epsilon:g} at "
            f"delta {delta:g} over {rounds} rounds ({err})"
        ) from None
    return float(noise)


def rounds_within_budget(
    mechanism: ClientLevelGaussian | RecordLevelGaussian, max_epsilon: float, delta: float, planned: int
) -> int:
    """The number of rounds, at most ``planned``, whose epsilon stays within ``max_epsilon``."""
    low, high = 0, planned
    while low < high:  # epsilon grows with rounds: binary search the last round that fits
        middle = (low + high + 1) // 2
        if mechanism.epsilon(middle, delta) <= max_epsilon:
            low = middle
        else:
            high = middle - 1
    return low


@dataclass(frozen=True, slots=True)
class DpSgd:
    """DP-SGD settings for one hospital's local training (Abadi et al., 2016, with Opacus).

    Attributes:
        noise_multiplier: per-step Gaussian noise std divided by ``clipping_norm``, > 0.
        clipping_norm: per-sample gradient L2 clipping norm, > 0.
        mechanism: the accounted mechanism (sampling rate, steps per round).
        delta: record-level delta.
    """

    noise_multiplier: float
    clipping_norm: float
    mechanism: RecordLevelGaussian
    delta: float

    @classmethod
    def plan(
        cls,
        *,
        images: int,
        batch_size: int,
        local_epochs: int,
        rounds: int,
        clipping_norm: float,
        delta: float,
        noise_multiplier: float | None = None,
        target_epsilon: float | None = None,
    ) -> DpSgd:
        """Settings for a hospital with ``images`` training images.

        With Poisson sampling each image joins a step's batch with probability
        ``batch_size / images``; an epoch has ``images / batch_size`` steps in expectation.

        Raises:
            ConfigError: if ``delta >= 1 / images`` (it could release one image outright), or
                the target epsilon cannot be reached, or neither noise nor target is given.
        """
        if images < 1:
            raise ConfigError("DP-SGD needs at least one training image")
        if delta >= 1 / images:
            raise ConfigError(
                f"privacy.dpsgd-delta ({delta:g}) must be below 1 / training images ({1 / images:.3g}) at this hospital"
            )
        sample_rate = min(1.0, batch_size / images)
        steps_per_round = local_epochs * max(1, round(1 / sample_rate))
        if noise_multiplier is None:
            if target_epsilon is None:
                raise ConfigError("set privacy.dpsgd-noise-multiplier or dpsgd-target-epsilon")
            noise_multiplier = calibrate_noise(
                lambda z: RecordLevelGaussian(z, sample_rate, steps_per_round), rounds, target_epsilon, delta
            )
        mechanism = RecordLevelGaussian(noise_multiplier, sample_rate, steps_per_round)
        return cls(noise_multiplier, clipping_norm, mechanism, delta)

    @classmethod
    def for_hospital(cls, cfg: RunConfig, images: int) -> DpSgd | None:
        """A hospital's DP-SGD settings from the run config (``None`` when DP-SGD is off).

        The noise comes from ``privacy.dpsgd-noise-multiplier``, else from
        ``privacy.dpsgd-target-epsilon`` over all planned rounds x local epochs.

        Raises:
            ConfigError: as :meth:`plan`.
        """
        p = cfg.privacy
        if not p.dpsgd:
            return None
        return cls.plan(
            images=images,
            batch_size=cfg.train.batch_size,
            local_epochs=cfg.train.local_epochs,
            rounds=cfg.federation.rounds,
            clipping_norm=p.dpsgd_clipping_norm,
            delta=p.dpsgd_delta,
            noise_multiplier=p.dpsgd_noise_multiplier,
            target_epsilon=p.dpsgd_target_epsilon,
        )

    def epsilon(self, rounds: int) -> float:
        """This hospital's record-level epsilon at :attr:`delta` after ``rounds`` rounds."""
        return self.mechanism.epsilon(rounds, self.delta)


def sampled_per_round(cfg: RunConfig) -> int:
    """Hospitals a Flower strategy samples for training each round (its ``sample_size``)."""
    fed = cfg.federation
    minimum = max(1, math.floor(fed.fraction_train * fed.required_hospitals))
    return max(math.floor(fed.fraction_train * fed.hospitals), minimum)


@dataclass(frozen=True, slots=True)
class ClientDpPlan:
    """The client-level DP numbers of one run, decided once from its config: noise, accounting, rounds.

    Attributes:
        mode: the client-level DP mode.
        noise_multiplier: the (effective) noise multiplier used.
        clipping_norm: the clipping norm (initial one for adaptive modes).
        delta: the client-level delta.
        mechanism: the accounted mechanism.
        rounds: rounds the run trains (planned rounds, or fewer under ``max-epsilon``).
        planned_rounds: rounds the config asks for.
        max_epsilon: the budget, if any.
    """

    mode: ClientDp
    noise_multiplier: float
    clipping_norm: float
    delta: float
    mechanism: ClientLevelGaussian | None
    rounds: int
    planned_rounds: int
    max_epsilon: float | None

    @classmethod
    def from_config(cls, cfg: RunConfig) -> ClientDpPlan:
        """Decide noise, accounting and rounds.

        Raises:
            ConfigError: if the target epsilon cannot be reached, or not even one round
                fits ``max-epsilon``.
        """
        p = cfg.privacy
        rounds = cfg.federation.rounds
        if p.client_dp is ClientDp.NONE:
            return cls(p.client_dp, 0.0, p.clipping_norm, p.delta, None, rounds, rounds, None)
        hospitals, sampled = cfg.federation.hospitals, sampled_per_round(cfg)
        if p.noise_multiplier is not None:
            noise = p.noise_multiplier
        else:
            target = float(p.target_epsilon or 0.0)
            noise = calibrate_noise(lambda z: ClientLevelGaussian(z, hospitals, sampled), rounds, target, p.delta)
        mechanism = ClientLevelGaussian(noise, hospitals, sampled) if noise > 0 else None
        allowed = rounds
        if p.max_epsilon is not None and mechanism is not None:
            allowed = rounds_within_budget(mechanism, p.max_epsilon, p.delta, rounds)
            if allowed == 0:
                raise ConfigError(
                    f"privacy.max-epsilon {p.max_epsilon:g}: one round already spends epsilon "
                    f"{mechanism.epsilon(1, p.delta):.3g} at delta {p.delta:g}; raise the noise or the budget"
                )
        return cls(p.client_dp, noise, p.clipping_norm, p.delta, mechanism, allowed, rounds, p.max_epsilon)

    @property
    def stopped_by_budget(self) -> bool:
        """Whether ``max-epsilon`` cut the run short."""
        return self.rounds < self.planned_rounds

    def epsilon(self, rounds: int) -> float:
        """Client-level epsilon at :attr:`delta` after ``rounds`` rounds (``inf`` without noise)."""
        if self.mode is ClientDp.NONE:
            return math.inf
        return self.mechanism.epsilon(rounds, self.delta) if self.mechanism is not None else math.inf
