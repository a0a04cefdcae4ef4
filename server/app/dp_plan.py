"""Client-level differential privacy at the coordinator: Flower's DP wrappers plus accounting.

:class:`PrivacyPlan` is decided once when the ServerApp starts, from the run config:

* the noise multiplier (given, or the smallest one whose epsilon after all planned
  rounds stays within ``privacy.target-epsilon``, :func:`fedward.common.ml.accounting.calibrate_noise`);
* how many rounds fit ``privacy.max-epsilon``: the run trains exactly those and stops
  cleanly, keeping the model of the last round within the budget;
* the Flower wrapper around the strategy: ``DifferentialPrivacy{Server,Client}Side
  {Fixed,Adaptive}Clipping`` (client-side modes clip at the hospital with Flower's
  ``fixedclipping_mod``/``adaptiveclipping_mod``, see :mod:`fedward.client.hospital.clipping`).

Every round, the client-level epsilon spent so far is recorded in the metrics; the model
card states unit, (epsilon, delta), accountant, noise multiplier, clipping norm, rounds
and sampling.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)

from fedward.common.choices import ClientDp
from fedward.common.config import RunConfig
from fedward.common.errors import ConfigError
from fedward.common.ml.accounting import ClientLevelGaussian, calibrate_noise, rounds_within_budget

log = logging.getLogger(__name__)

ACCOUNTANT = "Rényi DP (dp-accounting RdpAccountant; Mironov 2017)"
EPSILON_KEY = "epsilon"


def sampled_per_round(cfg: RunConfig) -> int:
    """Hospitals a Flower strategy samples for training each round (its ``sample_size``)."""
    fed = cfg.federation
    minimum = max(1, math.floor(fed.fraction_train * fed.required_hospitals))
    return max(math.floor(fed.fraction_train * fed.hospitals), minimum)


@dataclass(frozen=True, slots=True)
class DpSgdSummary:
    """What DP-SGD did at the hospitals, for the model card.

    Attributes:
        epsilon: the largest record-level epsilon a hospital reported.
        delta: record-level delta.
        clipping_norm: per-sample clipping norm.
        noise_multiplier: the configured noise multiplier, or ``None`` when each hospital
            computed its own from ``target_epsilon``.
        target_epsilon: the configured target, if any.
        local_epochs: local epochs per round.
        batch_size: expected batch size (Poisson sampling).
    """

    epsilon: float
    delta: float
    clipping_norm: float
    noise_multiplier: float | None
    target_epsilon: float | None
    local_epochs: int
    batch_size: int

    @classmethod
    def of(cls, cfg: RunConfig, epsilon: float) -> DpSgdSummary:
        """The summary of ``cfg``'s DP-SGD settings with the largest reported ``epsilon``."""
        p = cfg.privacy
        return cls(
            epsilon,
            p.dpsgd_delta,
            p.dpsgd_clipping_norm,
            p.dpsgd_noise_multiplier,
            p.dpsgd_target_epsilon,
            cfg.train.local_epochs,
            cfg.train.batch_size,
        )


def clipped_count_stddev(noise_multiplier: float, sampled: int) -> float:
    """Noise std of the clipped-count release of adaptive clipping (Andrew et al., 2021).

    The paper's default is ``sampled / 20``; the update noise is then raised to
    ``(z^-2 - (2 sigma_b)^-2)^-1/2`` so that the two releases together spend what one
    Gaussian with multiplier ``z`` spends, which needs ``sigma_b > z / 2``. When the
    default is too small (few hospitals), ``sigma_b = z`` is used: the update noise grows
    by 15 % and the guarantee stays that of ``z``.
    """
    default = sampled / 20
    return default if noise_multiplier < 2 * default else max(default, noise_multiplier)


@dataclass(frozen=True, slots=True)
class PrivacyPlan:
    """The client-level DP decisions of one run.

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
    def from_config(cls, cfg: RunConfig) -> PrivacyPlan:
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

    def wrap(self, strategy: Strategy, cfg: RunConfig) -> Strategy:
        """Wrap ``strategy`` with the Flower DP wrapper of :attr:`mode` (unchanged for ``none``)."""
        if self.mode is ClientDp.NONE:
            return strategy
        sampled = sampled_per_round(cfg)
        p = cfg.privacy
        if self.mode is ClientDp.SERVER_FIXED:
            return DifferentialPrivacyServerSideFixedClipping(strategy, self.noise_multiplier, p.clipping_norm, sampled)
        if self.mode is ClientDp.CLIENT_FIXED:
            return DifferentialPrivacyClientSideFixedClipping(strategy, self.noise_multiplier, p.clipping_norm, sampled)
        adaptive: dict[str, Any] = {
            "noise_multiplier": self.noise_multiplier,
            "num_sampled_clients": sampled,
            "initial_clipping_norm": p.clipping_norm,
            "target_clipped_quantile": p.target_clipped_quantile,
            "clip_norm_lr": p.clip_norm_lr,
            "clipped_count_stddev": clipped_count_stddev(self.noise_multiplier, sampled),
        }
        if self.mode is ClientDp.SERVER_ADAPTIVE:
            return DifferentialPrivacyServerSideAdaptiveClipping(strategy, **adaptive)
        return DifferentialPrivacyClientSideAdaptiveClipping(strategy, **adaptive)

    def card(self, rounds_done: int, dpsgd: DpSgdSummary | None = None) -> dict[str, Any]:
        """The model card's ``privacy`` section after ``rounds_done`` rounds.

        Args:
            rounds_done: rounds whose updates were released.
            dpsgd: what DP-SGD did at the hospitals, when it ran.
        """
        guarantees: list[dict[str, Any]] = []
        statements: list[str] = []
        if self.mode is not ClientDp.NONE and self.mechanism is None:
            statements.append(
                f"hospital updates clipped to norm {self.clipping_norm:g} but not noised: no formal guarantee"
            )
        elif self.mode is not ClientDp.NONE:
            epsilon = self.epsilon(rounds_done)
            guarantees.append(
                {
                    "unit": "hospital",
                    "mechanism": f"{self.mode.value} clipping + Gaussian noise on the aggregate (Flower DP wrapper)",
                    "epsilon": epsilon,
                    "delta": self.delta,
                    "accountant": ACCOUNTANT,
                    "noise_multiplier": self.noise_multiplier,
                    "clipping_norm": self.clipping_norm,
                    "clipping": "adaptive (initial norm)" if "adaptive" in self.mode.value else "fixed",
                    "rounds": rounds_done,
                    "sampling": "bound assumes every hospital in every round (no amplification by sampling claimed)",
                    "neighbouring": "add/remove one hospital",
                }
            )
            statements.append(f"({epsilon:.3g}, {self.delta:g})-DP for each hospital's whole contribution")
        if dpsgd is not None:
            guarantees.append(
                {
                    "unit": "image",
                    "mechanism": "DP-SGD at every hospital (Opacus): per-sample clipping + Gaussian noise",
                    "epsilon": dpsgd.epsilon,
                    "delta": dpsgd.delta,
                    "accountant": ACCOUNTANT,
                    "noise_multiplier": dpsgd.noise_multiplier
                    if dpsgd.noise_multiplier is not None
                    else f"per hospital, from target epsilon {dpsgd.target_epsilon:g} over the planned rounds",
                    "clipping_norm": dpsgd.clipping_norm,
                    "rounds": rounds_done,
                    "local_epochs": dpsgd.local_epochs,
                    "sampling": f"Poisson, rate batch size {dpsgd.batch_size} / the hospital's training images",
                    "neighbouring": "add/remove one image",
                    "reported": "the largest epsilon any hospital reached",
                }
            )
            statements.append(f"({dpsgd.epsilon:.3g}, {dpsgd.delta:g})-DP for each image (largest over hospitals)")
        if not guarantees:
            unnoised = "Model updates were not noised; no formal (epsilon, delta) guarantee holds"
            return {
                "differential_privacy": "none",
                "statement": f"{statements[0] if statements else unnoised}. Images never left the hospitals.",
                "guarantees": [],
            }
        statement = "; ".join(statements) + "."
        if self.stopped_by_budget:
            statement += (
                f" The run stopped after round {self.rounds} of {self.planned_rounds}: "
                f"one more round would exceed max-epsilon {self.max_epsilon:g}."
            )
        return {
            "differential_privacy": " + ".join(f"{g['unit']}-level" for g in guarantees),
            "statement": statement,
            "guarantees": guarantees,
        }
