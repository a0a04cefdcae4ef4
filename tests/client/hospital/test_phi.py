"""No patient identifier leaves the hospital: not in any reply, not in any log line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fixtures.dicom_folders import PHI, write_dicom_folder
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.serde import recorddict_to_proto

from fedward.client.hospital.clientapp import app as client_app
from fedward.common.choices import ModelName, Task
from fedward.common.config import RunConfig, RunSpec
from fedward.common.ml.networks import build_network
from fedward.common.schema import DatasetSchema
from fedward.common.version import fedward_version
from fedward.common.wire import model_to_arrays


@pytest.fixture
def hospital(tmp_path: Path) -> Context:
    folder = write_dicom_folder(tmp_path / "st-phi", n=30, phi=True)
    broken = folder / "dicom" / "case-003.dcm"
    broken.write_bytes(broken.read_bytes()[:-100])  # one unusable file: its error must stay clean too
    base = RunConfig.from_mapping(
        {"federation": {"rounds": 1}, "train": {"local-epochs": 1}, "data": {"cache-dir": str(tmp_path / "cache")}}
    )
    spec = RunSpec(base, DatasetSchema(Task.BINARY, ("normal", "pneumonia"), 1))
    return Context(
        run_id=1, node_id=3, node_config={"data-dir": str(folder)}, state=RecordDict(), run_config=spec.to_flower()
    )


def instruction(message_type: str) -> Message:
    content = RecordDict(
        {
            "arrays": model_to_arrays(build_network(ModelName.SMALL_CNN, 1, 2)),
            "config": ConfigRecord({"server-round": 1, "fedward-version": fedward_version()}),
        }
    )
    return Message(content=content, dst_node_id=3, message_type=message_type)


def test_no_identifier_in_any_reply_or_log(hospital: Context, caplog: pytest.LogCaptureFixture) -> None:
    replies = []
    with caplog.at_level(logging.DEBUG):
        for message_type in (MessageType.QUERY, MessageType.TRAIN, MessageType.EVALUATE):
            replies.append(client_app(instruction(message_type), hospital))
    assert not any(r.has_error() for r in replies)
    assert replies[0].content["metrics"]["files-skipped"] == 1
    wire = b"".join(recorddict_to_proto(r.content).SerializeToString() for r in replies)
    logs = caplog.text
    for value in PHI.values():
        assert value.encode() not in wire, value
        assert value not in logs, value
    assert b"case-003" not in wire and "case-003" not in logs, "file names stay at the hospital"
