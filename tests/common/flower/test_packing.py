"""A model travels as one array, bit for bit, and a damaged one is refused, not trained on."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fedward.client.hospital import handlers
from fedward.client.hospital.failure import HospitalError
from fedward.common.flower.packing import (
    PACKED_KEY,
    PackingError,
    has_packed,
    pack_arrays,
    pack_content,
    unpack_arrays,
    unpack_content,
)
from fedward.common.ml.networks import SmallCNN
from fedward.server.app.sites import OrderedGrid


def model_record() -> ArrayRecord:
    return ArrayRecord({name: Array(t.numpy()) for name, t in SmallCNN(1, 1).state_dict().items()})


def test_a_model_round_trips_bit_for_bit_in_its_order() -> None:
    record = model_record()
    packed = pack_arrays(record)
    assert list(packed.keys()) == [PACKED_KEY] and pack_arrays(packed) is packed
    back = unpack_arrays(packed)
    assert list(back.keys()) == list(record.keys())
    for name in record:
        assert back[name].data == record[name].data, name  # dtype, shape (0-d included) and bytes
    assert unpack_arrays(record) is record, "an unpacked record passes as it is"


def test_a_packed_message_has_a_handful_of_objects_not_one_per_tensor() -> None:
    content = RecordDict({"arrays": model_record(), "config": ConfigRecord({"server-round": 1})})
    packed = pack_content(content)
    few, many = len(get_all_nested_objects(packed)), len(get_all_nested_objects(content))
    assert few <= 6 and many >= 4 * few  # (a fresh model's identical tensors already share objects)
    assert has_packed(packed) and not has_packed(content)
    assert unpack_content(packed)["config"]["server-round"] == 1


def pickled_objects() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, w=np.array([{"a": 1}], dtype=object))
    return buffer.getvalue()


@pytest.mark.parametrize("blob", [b"not an archive", pickled_objects()], ids=["garbage", "pickle"])
def test_damaged_or_pickled_bytes_are_refused(blob: bytes) -> None:
    record = ArrayRecord({PACKED_KEY: Array(np.frombuffer(blob, dtype=np.uint8))})
    with pytest.raises(PackingError, match="array record 'arrays': a packed array record is unreadable"):
        unpack_content(RecordDict({"arrays": record}))


def test_the_hospital_unpacks_a_packed_request_and_packs_its_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def echo(msg: Message, context: Context) -> Message:
        seen.append(list(msg.content.array_records["arrays"].keys()))
        return Message(RecordDict({"arrays": msg.content.array_records["arrays"]}), reply_to=msg)

    monkeypatch.setitem(handlers.HANDLERS, "train", echo)
    record = model_record()
    request = Message(pack_content(RecordDict({"arrays": record})), dst_node_id=7, message_type="train")
    reply = handlers.handle("train", request, Context(1, 7, {}, RecordDict(), {}))
    assert seen == [list(record.keys())], "the handler saw the model's own names"
    assert has_packed(reply.content)
    damaged = Message(
        RecordDict({"arrays": ArrayRecord({PACKED_KEY: Array(np.zeros(3, np.uint8))})}),
        dst_node_id=7,
        message_type="train",
    )
    with pytest.raises(HospitalError, match="could not be read"):
        handlers.handle("train", damaged, Context(1, 7, {}, RecordDict(), {}))


def test_a_damaged_reply_reaches_the_guard_as_it_came(caplog: pytest.LogCaptureFixture) -> None:
    class Replies:
        def pull_messages(self, ids: Iterable[str]) -> list[Message]:
            request = Message(RecordDict(), dst_node_id=3, message_type="train")
            good = Message(pack_content(RecordDict({"arrays": model_record()})), reply_to=request)
            bad = RecordDict({"arrays": ArrayRecord({PACKED_KEY: Array(np.zeros(3, np.uint8))})})
            metrics = RecordDict({"metrics": MetricRecord({"num-examples": 1})})
            return [good, Message(bad, reply_to=request), Message(metrics, reply_to=request)]

    grid = OrderedGrid(Replies(), directory=None)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        good, bad, plain = grid.pull_messages(["m1"])
    assert list(good.content.array_records["arrays"].keys()) == list(model_record().keys())
    assert list(bad.content.array_records["arrays"].keys()) == [PACKED_KEY]
    assert "unreadable" in caplog.text and not plain.content.array_records
