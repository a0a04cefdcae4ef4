"""GuardedStrategy: bad updates are rejected and logged; the round goes on; order does not matter."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
from fixtures.flower import error_reply, good_update, reference_arrays, reply
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp.strategy import FedAvg, FedAvgM, FedMedian

from fedward.common.ml.scores import weighted_means
from fedward.server.app.guard import GuardedStrategy


def guarded(inner: object | None = None) -> GuardedStrategy:
    strategy = GuardedStrategy(inner or FedAvg(min_available_nodes=1, min_train_nodes=1))  # type: ignore[arg-type]
    strategy._reference = reference_arrays()  # as configure_train would set it
    return strategy


def test_nan_and_wrong_shape_updates_are_rejected_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    strategy = guarded()
    nan = good_update(100.0)
    nan["w"][0, 0] = np.nan
    wrong = good_update(100.0)
    wrong["b"] = np.zeros(4, np.float32)
    replies = [
        reply(11, good_update(1.0), {"num-examples": 10}, "hospital-a"),
        reply(12, nan, {"num-examples": 10}, "hospital-b"),
        reply(13, wrong, {"num-examples": 10}, "hospital-c"),
        reply(14, good_update(3.0), {"num-examples": 30}, "hospital-d"),
        error_reply(15, "data folder missing"),
    ]
    with caplog.at_level(logging.WARNING, logger="fedward"):
        arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    np.testing.assert_allclose(arrays["w"].numpy(), np.full((2, 3), 2.5), rtol=1e-6)  # (1*10 + 3*30) / 40
    assert arrays["n"].dtype == "int64" and arrays["n"].shape == ()
    entry = strategy.rounds[1]
    assert [r.name for r in entry.train] == ["hospital-a", "hospital-d"]
    assert {(x.name, x.node_id) for x in entry.rejected} == {("hospital-b", 12), ("hospital-c", 13)}
    assert entry.failed[0].node_id == 15 and "data folder missing" in entry.failed[0].reason
    logged = caplog.text
    assert "rejected update from hospital hospital-b (node 12)" in logged
    assert "rejected update from hospital hospital-c (node 13)" in logged


def test_all_rejected_keeps_the_global_model() -> None:
    strategy = guarded()
    bad = good_update(1.0)
    bad["b"][0] = np.inf
    assert strategy.aggregate_train(1, [reply(1, bad, {"num-examples": 5}, "h")]) == (None, None)


@pytest.mark.parametrize("inner_cls", [FedAvg, FedMedian])
def test_aggregation_does_not_depend_on_reply_order(inner_cls: type) -> None:
    rng = np.random.default_rng(0)
    updates = [
        {
            "w": rng.normal(size=(2, 3)).astype(np.float32),
            "b": rng.normal(size=3).astype(np.float32),
            "n": np.array(i, np.int64),
        }
        for i in range(6)
    ]

    def replies() -> list[Message]:  # fresh messages: some strategies consume their content
        return [reply(100 + i, u, {"num-examples": 7 + 13 * i}, f"hospital-{i}") for i, u in enumerate(updates)]

    first, _ = guarded(inner_cls(min_available_nodes=1)).aggregate_train(1, replies())
    shuffled = replies()
    random.Random(3).shuffle(shuffled)
    second, _ = guarded(inner_cls(min_available_nodes=1)).aggregate_train(1, shuffled)
    assert first is not None and second is not None
    for key in first:
        assert np.array_equal(first[key].numpy(), second[key].numpy())


def test_evaluation_metrics_are_averaged_over_hospitals_that_report_them() -> None:
    strategy = guarded()
    replies = [
        reply(1, None, {"num-examples": 10, "val-auc": 0.8, "val-accuracy": 0.5}, "a", MessageType.EVALUATE),
        reply(2, None, {"num-examples": 30, "val-accuracy": 0.9}, "b", MessageType.EVALUATE),  # single-class: no AUC
        reply(3, None, {"num-examples": 0}, "c", MessageType.EVALUATE),
    ]
    metrics = strategy.aggregate_evaluate(1, replies)
    assert metrics is not None
    assert metrics["val-auc"] == pytest.approx(0.8)
    assert metrics["val-accuracy"] == pytest.approx((0.5 * 10 + 0.9 * 30) / 40)
    assert metrics["num-examples"] == 40
    assert len(strategy.rounds[1].evaluate) == 3


def test_weighted_means_ignores_zero_weights() -> None:
    assert weighted_means([{"num-examples": 0, "x": 5.0}, {"num-examples": 2, "x": 1.0}])["x"] == 1.0


def test_configure_train_remembers_the_global_model() -> None:
    class Recorder(FedAvg):
        def configure_train(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
            return []

    strategy = GuardedStrategy(Recorder())
    arrays = reference_arrays()
    strategy.configure_train(1, arrays, ConfigRecord(), grid=None)  # type: ignore[arg-type]
    assert strategy._reference is arrays


def test_a_hospital_asked_to_train_that_never_answers_is_recorded_as_failed() -> None:
    class Sampler(FedAvg):
        def configure_train(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
            return [Message(RecordDict(), dst_node_id=n, message_type=MessageType.TRAIN) for n in (11, 12, 13)]

    strategy = GuardedStrategy(Sampler(min_available_nodes=1, min_train_nodes=1), names=lambda n: f"site-{n}")
    strategy.configure_train(1, reference_arrays(), ConfigRecord(), grid=None)  # type: ignore[arg-type]
    arrays, _ = strategy.aggregate_train(1, [reply(11, good_update(1.0), {"num-examples": 10}, "site-11")])
    assert arrays is not None
    failed = strategy.take_log(1).failed
    assert [(x.name, x.node_id) for x in failed] == [("site-12", 12), ("site-13", 13)]
    assert all("round's timeout" in x.reason for x in failed)


def test_server_momentum_never_extrapolates_batchnorm_statistics() -> None:
    start = ArrayRecord(
        {"w": Array(np.ones(3, np.float32)), "var": Array(np.ones(3, np.float32)), "n": Array(np.array(0, np.int64))}
    )
    inner = FedAvgM(min_available_nodes=1, server_momentum=0.9)
    inner.current_arrays = start
    strategy = GuardedStrategy(inner, averaged_buffers=frozenset({"var", "n"}))
    strategy._reference = start
    for server_round in (1, 2):
        update = {"w": np.full(3, 0.1, np.float32), "var": np.full(3, 0.1, np.float32), "n": np.array(7, np.int64)}
        arrays, _ = strategy.aggregate_train(server_round, [reply(1, update, {"num-examples": 4}, "h")])
        assert arrays is not None
        strategy._reference = arrays
    # Momentum took the weight past the clients' value; the variance stays their mean.
    assert float(arrays["w"].numpy()[0]) < 0
    np.testing.assert_allclose(arrays["var"].numpy(), 0.1, rtol=1e-6)
    assert arrays["n"].dtype == "int64" and arrays["n"].shape == () and int(arrays["n"].numpy()) == 7


def test_a_non_finite_aggregate_keeps_the_global_model() -> None:
    class Exploding(FedAvg):
        def aggregate_train(self, server_round, replies):  # type: ignore[no-untyped-def]
            arrays, metrics = super().aggregate_train(server_round, replies)
            return ArrayRecord({k: Array(np.full_like(v.numpy(), np.inf)) for k, v in arrays.items()}), metrics

    strategy = guarded(Exploding(min_available_nodes=1))
    assert strategy.aggregate_train(1, [reply(1, good_update(1.0), {"num-examples": 3}, "h")]) == (None, None)
