"""The round loop's wait for ``federation.min-hospitals``: bounded, then a clean stop before the round."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest
from flwr.app import ArrayRecord

from fedward.server.app.rounds import RoundLoop, RoundPlan, TooFewHospitalsError, wait_for_hospitals


class FakeGrid:
    """Connected node ids that grow by one each time they are counted, up to ``most``."""

    def __init__(self, start: int, most: int) -> None:
        self.count, self.most, self.calls = start, most, 0

    def get_node_ids(self) -> list[int]:
        self.calls += 1
        ids = list(range(self.count))
        self.count = min(self.count + 1, self.most)
        return ids


class FakeClock:
    """A clock that advances only when slept on."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_enough_hospitals_start_the_round_at_once() -> None:
    clock = FakeClock()
    assert wait_for_hospitals(FakeGrid(3, 3), 3, 60, 1, clock=clock, sleep=clock.sleep) == 3  # type: ignore[arg-type]
    assert clock.now == 0


def test_the_round_waits_for_hospitals_that_connect_late() -> None:
    clock = FakeClock()
    assert wait_for_hospitals(FakeGrid(0, 5), 3, 60, 2, clock=clock, sleep=clock.sleep) == 3  # type: ignore[arg-type]
    assert 0 < clock.now < 60


def test_too_few_hospitals_after_the_wait_stop_with_the_reason() -> None:
    clock = FakeClock()
    with pytest.raises(TooFewHospitalsError) as err:
        wait_for_hospitals(FakeGrid(1, 2), 3, 30, 4, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    assert "2 of federation.min-hospitals 3 connected after 30 s" in str(err.value)
    assert "before round 4" in str(err.value)
    assert clock.now == pytest.approx(30)


def test_the_loop_stops_before_training_when_the_wait_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fedward.server.app.rounds.POLL_S", 0.01)
    strategy, ended = MagicMock(), []
    with pytest.raises(TooFewHospitalsError):
        RoundLoop(strategy, FakeGrid(1, 1), lambda r, a, entry: ended.append(r)).run(  # type: ignore[arg-type]
            ArrayRecord(), RoundPlan(1, 3, 10, min_hospitals=(2, 0.05))
        )
    assert ended == [0]  # the initial model is recorded; no round started
    strategy.configure_train.assert_not_called()


class LeavingGrid:
    """Two hospitals connected for round 1, one from then on; every exchange answers nothing."""

    def __init__(self) -> None:
        self.counts = [2, 1]

    def get_node_ids(self) -> list[int]:
        return list(range(self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]))

    def send_and_receive(self, messages: object, *, timeout: float | None = None) -> list[object]:
        return []


def test_a_round_whose_evaluation_was_owed_is_recorded_before_the_run_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fedward.server.app.rounds.POLL_S", 0.01)
    strategy, ended = MagicMock(), []
    strategy.aggregate_train.return_value = (None, None)
    loop = RoundLoop(strategy, LeavingGrid(), lambda r, a, entry: ended.append(r), on_trained=lambda r, a: None)  # type: ignore[arg-type]
    with pytest.raises(TooFewHospitalsError):
        loop.run(ArrayRecord(), RoundPlan(1, 3, 10, carry_evaluation=True, min_hospitals=(2, 0.05)))
    assert ended == [0, 1], "round 1, trained and owed its evaluation, is evaluated and recorded first"
    strategy.configure_evaluate.assert_called_once()
    assert strategy.configure_train.call_count == 1
