"""A bounded wait for the objects of a hospital's reply (Flower 1.41's deployment grid waits up to 2 hours).

A reply reaches the ServerApp in two parts: the message, then its objects (the weights).
Flower's deployment grid (``flwr.superlink.grid.http_grid.HttpGrid.pull_messages``) pulls
the objects with :func:`flwr.supercore.inflatable.inflatable_utils.pull_objects` at its
defaults: backoff from 1 s to 10 s, up to 500 tries per object, at most 7,200 s. A reply
whose objects never arrive — its SuperNode was killed while uploading, or the SuperLink's
SQLite store refused an upload under load (``database is locked``, seen here with ten
hospitals) — then holds the whole federation for up to two hours, in the middle of a
round, whatever ``federation.round-timeout`` says.

:func:`bound_reply_object_pulls` makes the grid's pulls give up after
:data:`REPLY_OBJECTS_LIMIT_S` and retry sooner (0.05 s doubling to 0.5 s): Flower's grid
then turns the missing reply into an error reply (``MESSAGE_UNAVAILABLE``, "Reply message
objects are unavailable ..."), and the round records that hospital as failed with that
reason and goes on with the others. It replaces the ``pull_objects`` name in Flower's grid
module only (the ServerApp process's own copy of Flower); the function's behaviour is
Flower's own. ``tests/server/app/test_reply_objects.py`` fails if Flower 1.41's layout
changes under it (``pyproject.toml`` pins ``flwr<1.42``).
"""

from __future__ import annotations

import functools
import logging

from flwr.supercore.inflatable import inflatable_utils
from flwr.superlink.grid import http_grid

log = logging.getLogger(__name__)

REPLY_OBJECTS_LIMIT_S = 60.0
"""Longest wait for the objects of one reply, seconds (they follow their message within
seconds when nothing is wrong)."""

BACKOFF_S = (0.05, 0.5)
"""First and longest wait between two tries for an object that is not there yet, seconds."""


def bound_reply_object_pulls(limit_s: float = REPLY_OBJECTS_LIMIT_S) -> None:
    """Make Flower's deployment grid wait at most ``limit_s`` seconds for a reply's objects.

    Args:
        limit_s: seconds, > 0.

    Raises:
        ValueError: if ``limit_s`` is not positive.
    """
    if limit_s <= 0:
        raise ValueError(f"limit_s must be > 0 seconds; got {limit_s}")
    http_grid.pull_objects = functools.partial(  # type: ignore[attr-defined]
        inflatable_utils.pull_objects,
        max_time=limit_s,
        max_tries_per_object=None,
        initial_backoff=BACKOFF_S[0],
        backoff_cap=BACKOFF_S[1],
    )
    log.debug("reply objects: waiting at most %.0f s", limit_s)
