"""The hospital's SuperNode polls for its next message within a fraction of a second, not every 3 s."""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Iterator
from types import ModuleType

import pytest

from fedward.common.flower.idle_polls import LOCAL_WAIT_S, POLL_S, ClampedTime, bound_idle_polls
from fedward.common.flower.object_pulls import FlowerLayoutError

RECEIVER = "flwr.supernode.start_client_internal"


@pytest.fixture
def receiver() -> Iterator[ModuleType]:
    module = importlib.import_module(RECEIVER)
    original = module.time
    yield module
    module.time = original


def test_flower_sleeps_through_the_name_we_bound(receiver: ModuleType) -> None:
    assert receiver.time is time
    source = inspect.getsource(receiver)
    assert "time.sleep(3)" in source, "the idle poll this module shortens"
    assert "time.sleep(0.5)" in source, "the local waits this module shortens"
    assert "from time import" not in source and "sleep(" not in source.replace("time.sleep(", "")


def test_sleeps_are_clamped_and_everything_else_is_the_time_module(
    receiver: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound_idle_polls(receiver)
    bound_idle_polls(receiver)  # idempotent
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    receiver.time.sleep(3)
    receiver.time.sleep(0.5)
    receiver.time.sleep(0.01)
    assert slept == [POLL_S, LOCAL_WAIT_S, 0.01]
    assert receiver.time.monotonic is time.monotonic and receiver.time.time is time.time


def test_a_bad_cap_or_an_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="cap_s"):
        ClampedTime(0)
    with pytest.raises(FlowerLayoutError):
        bound_idle_polls(inspect)
