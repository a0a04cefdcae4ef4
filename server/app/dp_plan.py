"""Differential privacy at the coordinator: Flower's DP wrapper around the strategy, and the card's privacy section.

The numbers are decided once from the run config
(:class:`~fedward.common.ml.accounting.ClientDpPlan`): the noise multiplier (given, or the
smallest one whose epsilon after all planned rounds stays within
``privacy.target-epsilon``) and how many rounds fit ``privacy.max-epsilon`` (the run
trains exactly those and stops cleanly). This module applies them:

* :func:`wrap_strategy` puts the Flower wrapper around the strategy:
  ``DifferentialPrivacy{Server,Client}Side{Fixed,Adaptive}Clipping`` (client-side modes clip
  at the hospital with Flower's ``fixedclipping_mod``/``adaptiveclipping_mod``, see
  :mod:`fedward.client.hospital.clipping`);
* :func:`privacy_card` states, for the model card, each guarantee: unit, (epsilon, delta),
  accountant, noise multiplier, clipping norm, rounds and sampling.

Every round, the client-level epsilon spent so far is recorded in the metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)

from fedward.common.choices import ClientDp, TunedOn
from fedward.common.config import RunConfig
from fedward.common.ml.accounting import ClientDpPlan, sampled_per_round

log = logging.getLogger(__name__)

ACCOUNTANT = "Rényi DP (dp-accounting RdpAccountant; Mironov 2017)"
EPSILON_KEY = "epsilon"


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


def wrap_strategy(plan: ClientDpPlan, strategy: Strategy, cfg: RunConfig) -> Strategy:
    """Wrap ``strategy`` with the Flower DP wrapper of ``plan.mode`` (unchanged for ``none``)."""
    if plan.mode is ClientDp.NONE:
        return strategy
    sampled = sampled_per_round(cfg)
    p = cfg.privacy
    if plan.mode is ClientDp.SERVER_FIXED:
        return DifferentialPrivacyServerSideFixedClipping(strategy, plan.noise_multiplier, p.clipping_norm, sampled)
    if plan.mode is ClientDp.CLIENT_FIXED:
        return DifferentialPrivacyClientSideFixedClipping(strategy, plan.noise_multiplier, p.clipping_norm, sampled)
    adaptive: dict[str, Any] = {
        "noise_multiplier": plan.noise_multiplier,
        "num_sampled_clients": sampled,
        "initial_clipping_norm": p.clipping_norm,
        "target_clipped_quantile": p.target_clipped_quantile,
        "clip_norm_lr": p.clip_norm_lr,
        "clipped_count_stddev": clipped_count_stddev(plan.noise_multiplier, sampled),
    }
    if plan.mode is ClientDp.SERVER_ADAPTIVE:
        return DifferentialPrivacyServerSideAdaptiveClipping(strategy, **adaptive)
    return DifferentialPrivacyClientSideAdaptiveClipping(strategy, **adaptive)


SCOPE = (
    " The guarantee covers the model updates computed from the training images. Each hospital's "
    "validation metrics and validation statistics (counts over fixed score bins and sums at fixed "
    "temperatures, from which the operating point and temperature are chosen) are released without "
    "noise and are not covered; no per-image value is released."
)
"""What the (epsilon, delta) statement of a private run does and does not cover."""


@dataclass(frozen=True, slots=True)
class Tuning:
    """Where a private run's settings were chosen (``privacy.tuned-on``), for the model card.

    Attributes:
        tuned_on: fixed in advance, or chosen on these hospitals' validation splits.
        trials: configurations compared on validation (0 when fixed).
    """

    tuned_on: TunedOn = TunedOn.FIXED
    trials: int = 0

    @classmethod
    def of(cls, cfg: RunConfig) -> Tuning:
        """The tuning ``cfg`` declares."""
        return cls(cfg.privacy.tuned_on, cfg.privacy.tuning_trials)

    def sentence(self) -> str:
        """What the statement says about the settings' choice (one sentence, leading space)."""
        if self.tuned_on is TunedOn.VALIDATION:
            return (
                f" The private settings (network, learning rate, ...) were chosen among {self.trials} "
                "configurations by their validation AUC on these hospitals' validation splits: that "
                "choice used private data and is not accounted in this statement (its cost is bounded "
                "by Papernot & Steinke, ICLR 2022)."
            )
        return (
            " The private settings are the run's configuration, fixed before training and not tuned "
            "on these hospitals' data; tuning them on private data would spend privacy that this "
            "statement does not account."
        )


def privacy_card(
    plan: ClientDpPlan, rounds_done: int, dpsgd: DpSgdSummary | None = None, tuning: Tuning | None = None
) -> dict[str, Any]:
    """The model card's ``privacy`` section after ``rounds_done`` rounds.

    Args:
        plan: the run's client-level DP numbers.
        rounds_done: rounds whose updates were released.
        dpsgd: what DP-SGD did at the hospitals, when it ran.
        tuning: where the private settings were chosen (default: fixed in advance).

    Returns:
        ``{"differential_privacy", "statement", "guarantees", "tuned_on"}``: one guarantee
        per unit of privacy (hospital, image) with its epsilon at delta, accountant and
        mechanism; ``tuned_on`` only for a private run.
    """
    guarantees = [g for g in (_hospital_guarantee(plan, rounds_done), _image_guarantee(dpsgd, rounds_done)) if g]
    notes = []
    if plan.mode is not ClientDp.NONE and plan.mechanism is None:
        notes.append(f"hospital updates clipped to norm {plan.clipping_norm:g} but not noised: no formal guarantee")
    if not guarantees:
        unnoised = "Model updates were not noised; no formal (epsilon, delta) guarantee holds"
        return {
            "differential_privacy": "none",
            "statement": f"{notes[0] if notes else unnoised}. Images never left the hospitals.",
            "guarantees": [],
        }
    statements = notes + [
        f"({g['epsilon']:.3g}, {g['delta']:g})-DP for each hospital's whole contribution"
        if g["unit"] == "hospital"
        else f"({g['epsilon']:.3g}, {g['delta']:g})-DP for each image (largest over hospitals)"
        for g in guarantees
    ]
    tuning = tuning or Tuning()
    statement = "; ".join(statements) + "." + SCOPE + tuning.sentence()
    if plan.stopped_by_budget:
        statement += (
            f" The run stopped after round {plan.rounds} of {plan.planned_rounds}: "
            f"one more round would exceed max-epsilon {plan.max_epsilon:g}."
        )
    return {
        "differential_privacy": " + ".join(f"{g['unit']}-level" for g in guarantees),
        "statement": statement,
        "guarantees": guarantees,
        "tuned_on": {"source": tuning.tuned_on.value, "trials": tuning.trials},
    }


def _hospital_guarantee(plan: ClientDpPlan, rounds_done: int) -> dict[str, Any] | None:
    """The client-level guarantee (unit: a hospital's whole contribution), if noise was added."""
    if plan.mode is ClientDp.NONE or plan.mechanism is None:
        return None
    return {
        "unit": "hospital",
        "mechanism": f"{plan.mode.value} clipping + Gaussian noise on the aggregate (Flower DP wrapper)",
        "epsilon": plan.epsilon(rounds_done),
        "delta": plan.delta,
        "accountant": ACCOUNTANT,
        "noise_multiplier": plan.noise_multiplier,
        "clipping_norm": plan.clipping_norm,
        "clipping": "adaptive (initial norm)" if "adaptive" in plan.mode.value else "fixed",
        "rounds": rounds_done,
        "sampling": "bound assumes every hospital in every round (no amplification by sampling claimed)",
        "neighbouring": "add/remove one hospital",
    }


def _image_guarantee(dpsgd: DpSgdSummary | None, rounds_done: int) -> dict[str, Any] | None:
    """The record-level guarantee of DP-SGD (unit: one image), when it ran."""
    if dpsgd is None:
        return None
    noise = dpsgd.noise_multiplier
    return {
        "unit": "image",
        "mechanism": "DP-SGD at every hospital (Opacus): per-sample clipping + Gaussian noise",
        "epsilon": dpsgd.epsilon,
        "delta": dpsgd.delta,
        "accountant": ACCOUNTANT,
        "noise_multiplier": noise
        if noise is not None
        else f"per hospital, from target epsilon {dpsgd.target_epsilon:g} over the planned rounds",
        "clipping_norm": dpsgd.clipping_norm,
        "rounds": rounds_done,
        "local_epochs": dpsgd.local_epochs,
        "sampling": f"Poisson, rate batch size {dpsgd.batch_size} / the hospital's training images",
        "neighbouring": "add/remove one image",
        "reported": "the largest epsilon any hospital reached",
    }
