"""Strategy factory: every configured name builds Flower's own strategy with our settings."""

from __future__ import annotations

import flwr.serverapp.strategy as flower_strategies
import pytest

from fedward.common.choices import StrategyName
from fedward.common.config import RunConfig
from fedward.server.app.strategies import build_strategy


@pytest.mark.parametrize("name", list(StrategyName))
def test_every_strategy_builds(name: StrategyName) -> None:
    cfg = RunConfig.from_mapping({"strategy": {"name": name.value}, "federation": {"hospitals": 5}})
    strategy = build_strategy(cfg)
    kind = type(strategy)
    assert kind.__name__.lower() == name.value  # FedAvg for fedavg, Krum for krum, ...
    assert getattr(flower_strategies, kind.__name__) is kind, "Flower's own strategy class"
    assert strategy.min_available_nodes == 5
    assert strategy.weighted_by_key == "num-examples"


def test_parameters_reach_the_strategy() -> None:
    prox = build_strategy(RunConfig.from_mapping({"strategy": {"name": "fedprox", "proximal-mu": 0.5}}))
    assert prox.proximal_mu == 0.5
    adam = build_strategy(RunConfig.from_mapping({"strategy": {"name": "fedadam", "server-lr": 0.02, "tau": 0.001}}))
    assert (adam.eta, adam.tau) == (0.02, 0.001)
    assert build_strategy(RunConfig.from_mapping({"strategy": {"name": "fedadam"}})).eta == 0.01
    assert build_strategy(RunConfig.from_mapping({"strategy": {"name": "fedyogi"}})).eta == 0.01  # Flower's
    avgm = build_strategy(RunConfig.from_mapping({"strategy": {"name": "fedavgm", "server-momentum": 0.5}}))
    assert avgm.server_momentum == 0.5
    trimmed = build_strategy(RunConfig.from_mapping({"strategy": {"name": "fedtrimmedavg", "trim-beta": 0.1}}))
    assert trimmed.beta == 0.1
    krum = build_strategy(RunConfig.from_mapping({"strategy": {"name": "krum", "num-malicious": 1}}))
    assert krum.num_malicious_nodes == 1


def test_sampling_settings() -> None:
    cfg = RunConfig.from_mapping(
        {"federation": {"hospitals": 10, "fraction-train": 0.5, "min-available": 8, "fraction-evaluate": 0}}
    )
    strategy = build_strategy(cfg)
    assert (strategy.fraction_train, strategy.min_available_nodes, strategy.min_train_nodes) == (0.5, 8, 4)
    assert strategy.min_evaluate_nodes == 0
