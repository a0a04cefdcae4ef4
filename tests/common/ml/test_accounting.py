"""Privacy accounting: dp-accounting against Opacus' independent RDP analysis, calibration, budgets."""

from __future__ import annotations

import math

import pytest
from opacus.accountants.analysis import rdp as opacus_rdp

from fedward.common.config import RunConfig
from fedward.common.errors import ConfigError
from fedward.common.ml.accounting import (
    RDP_ORDERS,
    ClientLevelGaussian,
    RecordLevelGaussian,
    calibrate_noise,
    rounds_within_budget,
)


def opacus_epsilon(q: float, noise: float, steps: int, delta: float) -> float:
    orders = list(RDP_ORDERS)
    rdp = opacus_rdp.compute_rdp(q=q, noise_multiplier=noise, steps=steps, orders=orders)
    return float(opacus_rdp.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)[0])


@pytest.mark.parametrize(
    ("noise", "rate", "steps", "rounds", "delta"),
    [(1.1, 0.01, 100, 10, 1e-5), (0.8, 0.05, 20, 20, 1e-5), (2.0, 0.1, 10, 5, 1e-6), (0.6, 0.02, 50, 3, 1e-5)],
)
def test_dpsgd_epsilon_matches_opacus_within_two_percent(
    noise: float, rate: float, steps: int, rounds: int, delta: float
) -> None:
    ours = RecordLevelGaussian(noise, rate, steps).epsilon(rounds, delta)
    theirs = opacus_epsilon(rate, noise, steps * rounds, delta)
    assert ours == pytest.approx(theirs, rel=0.02)


@pytest.mark.parametrize(("noise", "rounds", "delta"), [(1.0, 20, 1e-3), (0.7, 5, 1e-4), (3.0, 100, 1e-5)])
def test_client_level_epsilon_matches_opacus_without_sampling(noise: float, rounds: int, delta: float) -> None:
    ours = ClientLevelGaussian(noise, hospitals=5, sampled=5).epsilon(rounds, delta)
    assert ours == pytest.approx(opacus_epsilon(1.0, noise, rounds, delta), rel=0.02)


def test_sampling_hospitals_claims_no_amplification() -> None:
    everyone = ClientLevelGaussian(1.0, hospitals=10, sampled=10).epsilon(10, 1e-3)
    sampled = ClientLevelGaussian(1.0, hospitals=10, sampled=3)
    assert not sampled.amplified
    assert sampled.epsilon(10, 1e-3) == pytest.approx(everyone)


def test_epsilon_grows_with_rounds_and_shrinks_with_noise() -> None:
    mechanism = ClientLevelGaussian(1.0, 5, 5)
    values = [mechanism.epsilon(r, 1e-3) for r in (0, 1, 2, 5, 10)]
    assert values[0] == 0.0 and values == sorted(values)
    assert ClientLevelGaussian(2.0, 5, 5).epsilon(10, 1e-3) < values[-1]


def test_calibration_reaches_the_target_from_below() -> None:
    noise = calibrate_noise(lambda z: RecordLevelGaussian(z, 0.01, 100), rounds=10, target_epsilon=8.0, delta=1e-5)
    epsilon = RecordLevelGaussian(noise, 0.01, 100).epsilon(10, 1e-5)
    assert epsilon <= 8.0 + 1e-6 and epsilon == pytest.approx(8.0, rel=0.01)


def test_unreachable_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no noise multiplier"):
        calibrate_noise(lambda z: ClientLevelGaussian(z, 5, 5), rounds=10_000, target_epsilon=1e-4, delta=1e-9)


def test_rounds_within_budget_is_the_last_round_that_fits() -> None:
    mechanism = ClientLevelGaussian(1.0, 3, 3)
    budget = (mechanism.epsilon(2, 1e-3) + mechanism.epsilon(3, 1e-3)) / 2
    assert rounds_within_budget(mechanism, budget, 1e-3, planned=10) == 2
    assert rounds_within_budget(mechanism, 1e9, 1e-3, planned=10) == 10
    assert rounds_within_budget(mechanism, 1e-9, 1e-3, planned=10) == 0


@pytest.mark.parametrize(
    ("privacy", "message"),
    [
        ({"client-dp": "server-fixed", "noise-multiplier": -0.5}, "privacy.noise-multiplier"),
        ({"client-dp": "server-fixed", "noise-multiplier": 1.0, "clipping-norm": 0}, "privacy.clipping-norm"),
        ({"client-dp": "server-fixed", "noise-multiplier": 1.0, "delta": 0.25}, "1 / federation.hospitals"),
        ({"client-dp": "server-fixed"}, "noise-multiplier or target-epsilon"),
        ({"client-dp": "server-fixed", "noise-multiplier": 1.0, "target-epsilon": 3.0}, "or target-epsilon"),
        ({"client-dp": "server-fixed", "noise-multiplier": 0.0, "max-epsilon": 3.0}, "cannot be accounted"),
        ({"noise-multiplier": 1.0}, "need privacy.client-dp"),
        ({"client-dp": "clientside"}, "privacy.client-dp"),
        ({"dpsgd": True}, "dpsgd-noise-multiplier or dpsgd-target-epsilon"),
        ({"dpsgd-target-epsilon": 3.0}, "need privacy.dpsgd"),
        ({"dpsgd": True, "dpsgd-noise-multiplier": 1.0, "dpsgd-delta": 1.0}, "privacy.dpsgd-delta"),
    ],
)
def test_settings_that_make_no_sense_are_refused_at_parse_time(privacy: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        RunConfig.from_mapping({"privacy": privacy, "federation": {"hospitals": 5}})


def test_client_dp_refuses_strategies_that_do_not_average() -> None:
    with pytest.raises(ConfigError, match="fedmedian"):
        RunConfig.from_mapping(
            {"privacy": {"client-dp": "server-fixed", "noise-multiplier": 1.0}, "strategy": {"name": "fedmedian"}}
        )


def test_privacy_config_round_trips_through_flower() -> None:
    cfg = RunConfig.from_mapping({"privacy": {"client-dp": "client-adaptive", "target-epsilon": 3.0, "delta": 1e-4}})
    again = RunConfig.from_flower(cfg.to_flower())
    assert again.privacy == cfg.privacy and again.privacy.enabled
    assert not RunConfig().privacy.enabled
    assert math.isfinite(again.privacy.delta)
