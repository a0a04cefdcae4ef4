"""Object pulls in Flower's ServerApp grid and SuperNode give up within a bound instead of stalling for hours."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from types import ModuleType

import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.inflatable.inflatable_utils import ObjectPullError, ObjectUnavailableError

from fedward.common.flower.object_pulls import FlowerLayoutError, bound_object_pulls

MODULES = ("flwr.superlink.grid.http_grid", "flwr.supernode.start_client_internal")


@pytest.fixture(params=MODULES)
def module(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    target = importlib.import_module(request.param)
    original = target.pull_objects
    yield target
    target.pull_objects = original


def test_flower_pulls_objects_through_the_name_we_bound(module: ModuleType) -> None:
    assert module.pull_objects is inflatable_utils.pull_objects
    assert "pull_objects(" in inspect.getsource(module)
    assert {"max_time", "max_tries_per_object", "initial_backoff", "backoff_cap"} <= set(
        inspect.signature(inflatable_utils.pull_objects).parameters
    )


def test_an_object_that_never_arrives_fails_the_pull_within_the_limit(module: ModuleType) -> None:
    bound_object_pulls(module, 0.3)
    bound_object_pulls(module, 0.3)  # idempotent
    tries: list[str] = []

    def never(object_id: str) -> bytes:
        tries.append(object_id)
        raise ObjectUnavailableError(object_id)

    with pytest.raises(ObjectPullError):
        module.pull_objects(["a"], never)
    assert len(tries) >= 2  # retried, then gave up


def test_a_bad_limit_or_an_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="limit_s"):
        bound_object_pulls(inspect, 0)
    with pytest.raises(FlowerLayoutError):
        bound_object_pulls(inspect, 1)
