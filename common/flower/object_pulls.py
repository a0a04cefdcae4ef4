"""Bounded, prompt waits for a message's objects in Flower 1.41's deployment processes.

A Flower message travels in two parts: the message, then its objects (the weights). Both
ends wait for objects with :func:`flwr.supercore.inflatable.inflatable_utils.pull_objects`
at its defaults: backoff from 1 s doubling to 10 s, up to 500 tries per object, at most
7,200 s. Two consequences, measured here on loopback:

* latency: a SuperNode sees a message before the ServerApp has finished uploading its
  objects (ten hospitals' messages are uploaded one after the other), misses them once
  and sleeps 1 s, then 2 s, then 4 s — seconds of every round;
* stalls: objects that never arrive — a SuperNode killed while uploading its reply, or
  the SuperLink's SQLite store refusing an upload under load (``database is locked``,
  seen with ten hospitals) — hold the ServerApp (and so every hospital) or the SuperNode
  (and so its hospital) for up to two hours, whatever ``federation.round-timeout`` says.

:func:`bound_object_pulls` rebinds the ``pull_objects`` name of one Flower module to
Flower's own function with a short backoff (:data:`BACKOFF_S`) and a time limit. Flower
then handles a pull that gives up as it does any failed pull: the ServerApp's grid
(``flwr.superlink.grid.http_grid``) turns the reply into an error reply
(``MESSAGE_UNAVAILABLE``), so the round records that hospital as failed and goes on; the
SuperNode (``flwr.supernode.start_client_internal``) fails that message's task and polls
for the next. Used by the ServerApp (:mod:`fedward.server.app.serverapp`) and by the
hospital's SuperNode launcher (:mod:`fedward.client.hospital.supernode`).
``tests/common/flower/test_object_pulls.py`` fails if Flower's layout changes under it
(``pyproject.toml`` pins ``flwr<1.42``).
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType

from flwr.supercore.inflatable import inflatable_utils

from fedward.common.errors import FedwardError

log = logging.getLogger(__name__)

OBJECTS_LIMIT_S = 60.0
"""Longest wait for the objects of one message, seconds (they follow their message within
seconds when nothing is wrong)."""

BACKOFF_S = (0.05, 0.5)
"""First and longest wait between two tries for an object that is not there yet, seconds."""


class FlowerLayoutError(FedwardError):
    """The installed Flower does not pull objects where fedward expects (a Flower upgrade)."""


def bound_object_pulls(module: ModuleType, limit_s: float = OBJECTS_LIMIT_S) -> None:
    """Make ``module``'s object pulls retry within :data:`BACKOFF_S` and give up after ``limit_s``.

    Args:
        module: a Flower module that calls ``pull_objects`` by its module-level name.
        limit_s: seconds, > 0.

    Raises:
        ValueError: if ``limit_s`` is not positive.
        FlowerLayoutError: if ``module`` has no ``pull_objects`` of Flower's.
    """
    if limit_s <= 0:
        raise ValueError(f"limit_s must be > 0 seconds; got {limit_s}")
    current = getattr(module, "pull_objects", None)
    original = current.func if isinstance(current, functools.partial) else current
    if original is not inflatable_utils.pull_objects:
        raise FlowerLayoutError(f"{module.__name__} does not pull objects with Flower's pull_objects")
    module.pull_objects = functools.partial(  # type: ignore[attr-defined]
        inflatable_utils.pull_objects,
        max_time=limit_s,
        max_tries_per_object=None,
        initial_backoff=BACKOFF_S[0],
        backoff_cap=BACKOFF_S[1],
    )
    log.debug("%s: object pulls wait at most %.0f s", module.__name__, limit_s)
