"""A reply whose objects never arrive costs a bounded wait and becomes an error reply, not a two-hour stall."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.inflatable.inflatable_utils import ObjectPullError, ObjectUnavailableError
from flwr.superlink.grid import http_grid

from fedward.server.app.reply_objects import bound_reply_object_pulls


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    original = http_grid.pull_objects
    yield
    http_grid.pull_objects = original


def test_flowers_grid_pulls_reply_objects_through_the_name_we_bound() -> None:
    assert http_grid.pull_objects is inflatable_utils.pull_objects
    assert "pull_objects(" in inspect.getsource(http_grid.HttpGrid.pull_messages)
    assert {"max_time", "max_tries_per_object", "initial_backoff", "backoff_cap"} <= set(
        inspect.signature(inflatable_utils.pull_objects).parameters
    )


def test_an_object_that_never_arrives_fails_the_pull_within_the_limit() -> None:
    bound_reply_object_pulls(0.3)
    tries: list[str] = []

    def never(object_id: str) -> bytes:
        tries.append(object_id)
        raise ObjectUnavailableError(object_id)

    with pytest.raises(ObjectPullError):
        http_grid.pull_objects(["a"], never)
    assert len(tries) >= 2  # retried, then gave up


def test_a_non_positive_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit_s"):
        bound_reply_object_pulls(0)
