"""Update validation: only finite updates that match the global model get through."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.flower import good_update, reference_arrays, reply

from fedward.server.app.validation import update_problem


def test_sound_update_passes() -> None:
    assert update_problem(reply(1, good_update(1.0), {"num-examples": 10}).content, reference_arrays()) is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda u: u.update(w=np.full((2, 3), np.nan, np.float32)), "6 non-finite"),
        (lambda u: u.update(b=np.array([0, np.inf, 0], np.float32)), "array b holds 1 non-finite"),
        (lambda u: u.update(w=np.zeros((3, 2), np.float32)), "array w has shape (3, 2)"),
        (lambda u: u.update(b=np.zeros(3, np.float64)), "array b has dtype float64"),
        (lambda u: u.pop("b"), "missing arrays b"),
        (lambda u: u.update(extra=np.zeros(1, np.float32)), "unexpected arrays extra"),
    ],
)
def test_bad_arrays_are_named(mutate: object, message: str) -> None:
    update = good_update(1.0)
    mutate(update)  # type: ignore[operator]
    problem = update_problem(reply(1, update, {"num-examples": 10}).content, reference_arrays())
    assert problem is not None and message in problem


@pytest.mark.parametrize("weight", [0, -3, float("nan"), float("inf")])
def test_bad_example_counts(weight: float) -> None:
    problem = update_problem(reply(1, good_update(1.0), {"num-examples": weight}).content, reference_arrays())
    assert problem is not None and "num-examples" in problem


def test_missing_records() -> None:
    no_arrays = reply(1, None, {"num-examples": 10}).content
    assert "ArrayRecord" in (update_problem(no_arrays, reference_arrays()) or "")
    no_count = reply(1, good_update(1.0), {"train-loss": 0.3}).content
    assert "num-examples" in (update_problem(no_count, reference_arrays()) or "")
