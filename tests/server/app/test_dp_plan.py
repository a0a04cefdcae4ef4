"""Client-level DP at the coordinator: clipping bounds, noise scale, DP off, plans and model cards."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.flower import reply
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from fedward.client.hospital.clipping import client_clipping_mod
from fedward.common.choices import Task
from fedward.common.config import RunConfig, RunSpec
from fedward.common.errors import ConfigError
from fedward.common.ml.accounting import ClientDpPlan, sampled_per_round
from fedward.common.schema import DatasetSchema
from fedward.server.app.dp_plan import DpSgdSummary, Tuning, privacy_card, wrap_strategy
from fedward.server.app.guard import GuardedStrategy

BINARY = DatasetSchema(Task.BINARY, ("normal", "pneumonia"), 1)

SHAPE = (200, 100)  # 20,000 parameters: enough draws for the noise's standard deviation


def config(hospitals: int = 4, **privacy: object) -> RunConfig:
    return RunConfig.from_mapping({"federation": {"hospitals": hospitals, "rounds": 10}, "privacy": privacy})


def zeros() -> ArrayRecord:
    return ArrayRecord({"w": Array(np.zeros(SHAPE, np.float32))})


def wrapped(cfg: RunConfig):  # type: ignore[no-untyped-def]
    plan = ClientDpPlan.from_config(cfg)
    strategy = wrap_strategy(plan, FedAvg(min_available_nodes=1, min_train_nodes=1), cfg)
    strategy.current_arrays = zeros()  # as configure_train sets it
    return plan, strategy


def updates(values: list[float]) -> list[Message]:
    return [reply(i + 1, {"w": np.full(SHAPE, v, np.float32)}, {"num-examples": 10}) for i, v in enumerate(values)]


def test_server_side_noise_has_the_configured_standard_deviation() -> None:
    cfg = config(**{"client-dp": "server-fixed", "noise-multiplier": 1.0, "clipping-norm": 2.0})
    plan, strategy = wrapped(cfg)
    arrays, _ = strategy.aggregate_train(1, updates([1e-3] * 4))  # tiny updates, clipped to themselves
    noise = arrays["w"].numpy() - 1e-3
    expected = plan.noise_multiplier * plan.clipping_norm / sampled_per_round(cfg)  # on the mean of 4 updates
    assert abs(float(noise.mean())) < 5 * expected / np.sqrt(noise.size)
    assert float(noise.std()) == pytest.approx(expected, rel=0.03)


def test_server_side_clipping_bounds_every_update() -> None:
    cfg = config(**{"client-dp": "server-fixed", "noise-multiplier": 0.0, "clipping-norm": 1.5})
    _, strategy = wrapped(cfg)
    arrays, _ = strategy.aggregate_train(1, updates([3.0, -7.0, 0.5, 100.0]))
    # Each clipped update has norm <= 1.5, so their mean does too (no noise here).
    assert float(np.linalg.norm(arrays["w"].numpy())) <= 1.5 + 1e-4


def test_client_side_clipping_bounds_the_update_that_leaves_the_hospital() -> None:
    start = ArrayRecord({"w": Array(np.zeros(SHAPE, np.float32)), "b": Array(np.ones(3, np.float32))})
    message = Message(
        content=RecordDict({"arrays": start, "config": ConfigRecord({KEY_CLIPPING_NORM: 0.75})}),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )
    cfg = config(**{"client-dp": "client-fixed", "noise-multiplier": 1.0, "clipping-norm": 0.75})
    context = Context(
        run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=RunSpec(cfg, BINARY).to_flower()
    )

    def train(msg: Message, ctx: Context) -> Message:
        trained = ArrayRecord({"w": Array(np.full(SHAPE, 5.0, np.float32)), "b": Array(np.full(3, -4.0, np.float32))})
        content = RecordDict({"arrays": trained, "metrics": MetricRecord({"num-examples": 10})})
        return Message(content=content, reply_to=msg)

    out = client_clipping_mod(message, context, train)
    sent = out.content["arrays"]
    delta = np.concatenate([sent["w"].numpy().ravel(), sent["b"].numpy().ravel() - 1.0])
    assert float(np.linalg.norm(delta)) <= 0.75 + 1e-4


def test_without_client_dp_the_mod_and_the_strategy_leave_updates_untouched() -> None:
    cfg = config()
    inner = FedAvg(min_available_nodes=1, min_train_nodes=1)
    assert wrap_strategy(ClientDpPlan.from_config(cfg), inner, cfg) is inner
    context = Context(
        run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=RunSpec(cfg, BINARY).to_flower()
    )
    message = Message(content=RecordDict({"arrays": zeros()}), dst_node_id=1, message_type=MessageType.TRAIN)
    big = ArrayRecord({"w": Array(np.full(SHAPE, 9.0, np.float32))})

    def train(msg: Message, ctx: Context) -> Message:
        return Message(content=RecordDict({"arrays": big}), reply_to=msg)

    out = client_clipping_mod(message, context, train)
    np.testing.assert_array_equal(out.content["arrays"]["w"].numpy(), np.full(SHAPE, 9.0, np.float32))


def test_target_epsilon_sets_the_noise_and_the_card_states_the_guarantee() -> None:
    cfg = config(hospitals=5, **{"client-dp": "server-fixed", "target-epsilon": 5.0, "delta": 1e-3})
    plan = ClientDpPlan.from_config(cfg)
    assert plan.noise_multiplier > 0 and plan.rounds == 10
    assert plan.epsilon(10) == pytest.approx(5.0, rel=0.01) and plan.epsilon(10) <= 5.0 + 1e-6
    card = privacy_card(plan, 10)
    (guarantee,) = card["guarantees"]
    assert guarantee["unit"] == "hospital" and guarantee["delta"] == 1e-3
    assert guarantee["noise_multiplier"] == plan.noise_multiplier and guarantee["clipping_norm"] == 1.0
    assert guarantee["rounds"] == 10 and "no amplification" in guarantee["sampling"]
    assert "(5, 0.001)-DP" in card["statement"]


def test_an_unchanged_update_is_rejected_before_server_side_clipping() -> None:
    cfg = config(**{"client-dp": "server-fixed", "noise-multiplier": 0.0, "clipping-norm": 1.0})
    _, inner = wrapped(cfg)
    guard = GuardedStrategy(inner, reject_unchanged=True)
    guard._reference = zeros()
    arrays, _ = guard.aggregate_train(1, updates([0.0, 0.5]))
    assert arrays is not None  # the round still aggregates the other hospital
    assert [x.reason for x in guard.rounds[1].rejected] == ["the update leaves the model unchanged (nothing to clip)"]


def test_max_epsilon_keeps_the_rounds_that_fit() -> None:
    cfg = config(hospitals=3, **{"client-dp": "server-fixed", "noise-multiplier": 1.0, "delta": 1e-3})
    per_round = [ClientDpPlan.from_config(cfg).epsilon(r) for r in (1, 2, 3)]
    budget = (per_round[1] + per_round[2]) / 2
    capped = config(
        hospitals=3, **{"client-dp": "server-fixed", "noise-multiplier": 1.0, "delta": 1e-3, "max-epsilon": budget}
    )
    plan = ClientDpPlan.from_config(capped)
    assert plan.rounds == 2 and plan.stopped_by_budget
    assert "stopped after round 2 of 10" in privacy_card(plan, 2)["statement"]
    with pytest.raises(ConfigError, match="one round already spends"):
        ClientDpPlan.from_config(
            config(hospitals=3, **{"client-dp": "server-fixed", "noise-multiplier": 1.0, "max-epsilon": 0.01})
        )


@pytest.mark.parametrize("mode", ["server-adaptive", "client-adaptive"])
def test_adaptive_clipping_works_with_few_hospitals(mode: str) -> None:
    # Flower's default clipped-count noise (hospitals / 20) cannot carry noise 1.0 with 5 hospitals.
    cfg = config(hospitals=5, **{"client-dp": mode, "noise-multiplier": 1.0, "delta": 1e-3})
    plan = ClientDpPlan.from_config(cfg)
    strategy = wrap_strategy(plan, FedAvg(min_available_nodes=1, min_train_nodes=1), cfg)
    assert strategy.clipped_count_stddev == pytest.approx(1.0)
    assert strategy.noise_multiplier == pytest.approx(1.0 / np.sqrt(1 - 0.25))


def test_the_card_states_the_dpsgd_guarantee() -> None:
    privacy = {"dpsgd": True, "dpsgd-noise-multiplier": 1.2, "dpsgd-clipping-norm": 0.5}
    cfg = RunConfig.from_mapping({"privacy": privacy})
    card = privacy_card(ClientDpPlan.from_config(cfg), 7, DpSgdSummary.of(cfg, 3.25))
    (image,) = card["guarantees"]
    assert image["unit"] == "image" and image["epsilon"] == 3.25 and image["delta"] == 1e-5
    assert image["noise_multiplier"] == 1.2 and image["clipping_norm"] == 0.5 and image["rounds"] == 7
    assert card["differential_privacy"] == "image-level" and "(3.25, 1e-05)-DP for each image" in card["statement"]


def test_clipping_without_noise_claims_no_guarantee() -> None:
    cfg = config(**{"client-dp": "server-fixed", "noise-multiplier": 0.0})
    card = privacy_card(ClientDpPlan.from_config(cfg), 3)
    assert card["guarantees"] == [] or all(g["unit"] != "hospital" for g in card["guarantees"])
    assert "no formal guarantee" in card["statement"]


def test_the_card_says_where_the_private_settings_were_chosen() -> None:
    privacy: dict[str, object] = {"dpsgd": True, "dpsgd-target-epsilon": 8.0}
    fixed = RunConfig.from_mapping({"privacy": privacy})
    card = privacy_card(ClientDpPlan.from_config(fixed), 5, DpSgdSummary.of(fixed, 7.9), Tuning.of(fixed))
    assert card["tuned_on"] == {"source": "fixed", "trials": 0} and "fixed before training" in card["statement"]
    tuned = RunConfig.from_mapping({"privacy": {**privacy, "tuned-on": "validation", "tuning-trials": 12}})
    card = privacy_card(ClientDpPlan.from_config(tuned), 5, DpSgdSummary.of(tuned, 7.9), Tuning.of(tuned))
    assert card["tuned_on"] == {"source": "validation", "trials": 12}
    assert "chosen among 12 configurations" in card["statement"] and "not accounted" in card["statement"]


@pytest.mark.parametrize(
    ("privacy", "key"),
    [
        ({"dpsgd": True, "dpsgd-target-epsilon": 8.0, "tuned-on": "validation"}, "privacy.tuning-trials"),
        ({"dpsgd": True, "dpsgd-target-epsilon": 8.0, "tuning-trials": 3}, "privacy.tuning-trials"),
        ({"tuned-on": "validation", "tuning-trials": 3}, "privacy.tuned-on"),
    ],
)
def test_tuning_settings_that_make_no_sense_are_refused(privacy: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        RunConfig.from_mapping({"privacy": privacy})
