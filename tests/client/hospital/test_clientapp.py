"""The ClientApp at a hospital: what it sends back, and that nothing else leaves."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.privacy import HISTOGRAM_KEYS, SITE_KEYS, check_statistic, is_hospital_metric_key
from fixtures.synthetic import write_npz
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from fedward.client.hospital.clientapp import HospitalError
from fedward.client.hospital.clientapp import app as client_app
from fedward.common.choices import ModelName, Task
from fedward.common.config import RunConfig, RunSpec
from fedward.common.ml.accounting import RecordLevelGaussian
from fedward.common.ml.networks import build_network
from fedward.common.schema import DatasetSchema
from fedward.common.version import fedward_version
from fedward.common.wire import model_to_arrays

SCHEMA = DatasetSchema(Task.BINARY, ("a", "b"), 1)


@pytest.fixture
def hospital(tmp_path: Path) -> tuple[RunConfig, Context]:
    write_npz(tmp_path / "st-olav" / "tinymnist.npz", sizes=(64, 16, 0))
    base = RunConfig.from_mapping(
        {"data": {"dataset": "tinymnist"}, "federation": {"rounds": 2}, "train": {"local-epochs": 1}}
    )
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"data-dir": str(tmp_path / "st-olav")},
        state=RecordDict(),
        run_config=RunSpec(base, SCHEMA).to_flower(),
    )
    return base, context


def global_model_message(message_type: str, server_round: int = 1, **config: bool) -> Message:
    torch.manual_seed(0)
    model = build_network(ModelName.SMALL_CNN, 1, 2)
    settings = ConfigRecord({"server-round": server_round, **config})
    content = RecordDict({"arrays": model_to_arrays(model), "config": settings})
    return Message(content=content, dst_node_id=7, message_type=message_type)


def assert_only_weights_and_numbers(reply: Message) -> None:
    content = reply.content
    for record in content.metric_records.values():
        assert all(is_hospital_metric_key(k) for k in record), [k for k in record if not is_hospital_metric_key(k)]
        for key, value in record.items():
            if isinstance(value, list):
                check_statistic(key, value, int(record["num-examples"]))
        histograms = [record[k] for k in HISTOGRAM_KEYS if k in record]
        if histograms:  # binary: every validation image counted once, in one bin of one truth
            assert sum(map(sum, histograms)) == record["num-examples"]
    for record in content.config_records.values():
        assert set(record) <= SITE_KEYS
        assert all(isinstance(v, str) and "/" not in v for v in record.values()), "no paths leave the hospital"
    model_keys = set(build_network(ModelName.SMALL_CNN, 1, 2).state_dict())
    for record in content.array_records.values():
        assert set(record) == model_keys, "only model weights leave the hospital"


def test_train_returns_weights_and_counts(hospital: tuple[RunConfig, Context]) -> None:
    _, context = hospital
    reply = client_app(global_model_message(MessageType.TRAIN), context)
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] == 64
    assert np.isfinite(metrics["train-loss"])
    assert reply.content["site"]["name"] == "st-olav"
    assert_only_weights_and_numbers(reply)


def test_evaluate_reports_validation_metrics(hospital: tuple[RunConfig, Context]) -> None:
    _, context = hospital
    reply = client_app(global_model_message(MessageType.EVALUATE), context)
    assert not reply.has_error()
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] == 16
    assert 0.0 <= metrics["val-auc"] <= 1.0
    assert_only_weights_and_numbers(reply)


def test_train_scores_the_received_model_first_when_asked(hospital: tuple[RunConfig, Context]) -> None:
    _, context = hospital
    evaluated = client_app(global_model_message(MessageType.EVALUATE, 2), context)
    plain = client_app(global_model_message(MessageType.TRAIN, 2), context)
    both = client_app(global_model_message(MessageType.TRAIN, 2, **{"evaluate-first": True}), context)
    assert not both.has_error(), both.error.reason if both.has_error() else ""
    assert "validation" not in plain.content
    volatile = {"eval-seconds"}
    scores = {k: v for k, v in both.content["validation"].items() if k not in volatile}
    assert scores == {k: v for k, v in evaluated.content["metrics"].items() if k not in volatile}
    assert scores["num-examples"] == 16 and 0.0 <= scores["val-auc"] <= 1.0
    for key, value in plain.content["arrays"].items():  # scoring first leaves training as it was
        np.testing.assert_array_equal(both.content["arrays"][key].numpy(), value.numpy())
    assert both.content["metrics"]["train-loss"] == plain.content["metrics"]["train-loss"]
    assert_only_weights_and_numbers(both)


def test_query_enrols_with_counts_only(hospital: tuple[RunConfig, Context]) -> None:
    _, context = hospital
    query = Message(
        content=RecordDict({"config": ConfigRecord({"fedward-version": fedward_version()})}),
        dst_node_id=7,
        message_type=MessageType.QUERY,
    )
    reply = client_app(query, context)
    assert reply.content["metrics"]["train-examples"] == 64
    assert reply.content["metrics"]["val-examples"] == 16
    assert_only_weights_and_numbers(reply)


def test_a_coordinator_on_another_version_is_reported_at_the_hospital(
    hospital: tuple[RunConfig, Context], caplog: pytest.LogCaptureFixture
) -> None:
    _, context = hospital
    query = Message(
        content=RecordDict({"config": ConfigRecord({"fedward-version": "99.7.0"})}),
        dst_node_id=7,
        message_type=MessageType.QUERY,
    )
    logger = logging.getLogger("fedward")  # does not propagate to the root logger caplog listens on
    logger.addHandler(caplog.handler)
    try:
        client_app(query, context)
    finally:
        logger.removeHandler(caplog.handler)
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "99.7.0" in warning and "same major.minor version" in warning


def private_context(context: Context, cfg: RunConfig, **privacy: object) -> Context:
    mapping = cfg.to_mapping()
    mapping["privacy"] = dict(privacy)
    private = RunSpec(RunConfig.from_mapping(mapping), SCHEMA).to_flower()
    return Context(run_id=2, node_id=7, node_config=context.node_config, state=RecordDict(), run_config=private)


def test_dpsgd_reports_the_hospitals_epsilon(hospital: tuple[RunConfig, Context]) -> None:
    cfg, context = hospital
    context = private_context(context, cfg, **{"dpsgd": True, "dpsgd-noise-multiplier": 1.0, "dpsgd-delta": 1e-3})
    model = build_network(ModelName.SMALL_CNN, 1, 2, private=True)
    content = RecordDict({"arrays": model_to_arrays(model), "config": ConfigRecord({"server-round": 2})})
    reply = client_app(Message(content=content, dst_node_id=7, message_type=MessageType.TRAIN), context)
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    metrics = reply.content["metrics"]
    expected = RecordLevelGaussian(1.0, min(1.0, cfg.train.batch_size / 64), 1).epsilon(2, 1e-3)
    assert metrics["dpsgd-epsilon"] == pytest.approx(expected)
    assert np.isfinite(metrics["train-loss"])
    assert set(reply.content["arrays"]) == set(model.state_dict())  # GroupNorm, no BatchNorm buffers


def test_dpsgd_refuses_a_delta_that_could_release_an_image(hospital: tuple[RunConfig, Context]) -> None:
    cfg, context = hospital
    context = private_context(context, cfg, **{"dpsgd": True, "dpsgd-noise-multiplier": 1.0, "dpsgd-delta": 0.1})
    model = build_network(ModelName.SMALL_CNN, 1, 2, private=True)
    content = RecordDict({"arrays": model_to_arrays(model), "config": ConfigRecord({"server-round": 1})})
    with pytest.raises(HospitalError, match="dpsgd-delta"):
        client_app(Message(content=content, dst_node_id=7, message_type=MessageType.TRAIN), context)


def test_missing_data_fails_with_fedwards_message(hospital: tuple[RunConfig, Context], tmp_path: Path) -> None:
    # Flower's runtime turns the exception into the error reply the server sees.
    _, context = hospital
    context.node_config["data-dir"] = str(tmp_path / "nowhere")
    with pytest.raises(HospitalError, match="does not exist"):
        client_app(global_model_message(MessageType.TRAIN), context)


def test_unexpected_failures_send_only_the_exception_type(
    hospital: tuple[RunConfig, Context], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, context = hospital

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("pixel mean 0.4312 of DOE^JOHN")

    monkeypatch.setattr("fedward.client.hospital.handlers.train_epochs", explode)
    with pytest.raises(HospitalError) as err:
        client_app(global_model_message(MessageType.TRAIN), context)
    assert "RuntimeError" in str(err.value)
    assert "DOE" not in str(err.value) and "0.4312" not in str(err.value)


def test_no_pixel_values_in_logs(hospital: tuple[RunConfig, Context], caplog: pytest.LogCaptureFixture) -> None:
    _, context = hospital
    with caplog.at_level(logging.DEBUG):
        client_app(global_model_message(MessageType.TRAIN), context)
        client_app(global_model_message(MessageType.EVALUATE), context)
    text = caplog.text
    assert "tensor(" not in text and "array(" not in text
    assert "st-olav" not in text or "hospital st-olav" in text
