"""Prompt polls in Flower 1.41's SuperNode: a message is picked up within a fraction of a second.

Flower's SuperNode main loop (``flwr.supernode.start_client_internal``) asks the SuperLink
for a message and, when there is none, sleeps a fixed ``time.sleep(3)`` before asking
again; it waits for its ClientApp's reply and for the reply's objects in steps of 0.5 s.
A round sends each hospital two messages (train, then evaluate) and each arrives while the
SuperNode is asleep: 1.5 s on average, 3 s at worst, twice a round, for every hospital.
(On loopback with three hospitals, ``benchmarks/round_overhead.py``, moving each model's
objects cost more; :mod:`fedward.common.flower.packing` took care of that.)

:func:`bound_idle_polls` rebinds the ``time`` name of that module to a proxy of the
standard :mod:`time` module whose ``sleep`` waits at most :data:`POLL_S` between polls of
the SuperLink and at most :data:`LOCAL_WAIT_S` in the waits on the SuperNode's own state
(Flower's 0.5 s steps while its ClientApp computes a reply); every other attribute is the
standard module's. The SuperNode then asks the SuperLink at most
``1 / POLL_S`` times a second while idle — a small HTTPS request — instead of once every
3 s. Used by the hospital's SuperNode launcher (:mod:`fedward.client.hospital.supernode`);
``tests/common/flower/test_idle_polls.py`` fails if Flower's layout changes under it
(``pyproject.toml`` pins ``flwr<1.42``).
"""

from __future__ import annotations

import logging
import time
from types import ModuleType
from typing import Any

from fedward.common.flower.object_pulls import FlowerLayoutError

log = logging.getLogger(__name__)

POLL_S = 0.25
"""Longest sleep between two polls of the SuperLink by the SuperNode's main loop, seconds."""

LOCAL_WAIT_S = 0.05
"""Longest sleep of the SuperNode's waits on its own state (a reply, a reply's objects), seconds."""

LOCAL_BELOW_S = 1.0
"""Flower's sleeps shorter than this (its 0.5 s) wait on local state; longer ones (its 3 s) on the SuperLink."""


class ClampedTime:
    """The standard :mod:`time` module, except that :meth:`sleep` waits at most ``cap_s`` seconds.

    Sleeps shorter than :data:`LOCAL_BELOW_S` (waits on the process's own state) wait at
    most ``min(cap_s, LOCAL_WAIT_S)``.

    Args:
        cap_s: longest sleep, seconds, > 0.

    Raises:
        ValueError: if ``cap_s`` is not positive.
    """

    def __init__(self, cap_s: float) -> None:
        if cap_s <= 0:
            raise ValueError(f"cap_s must be > 0 seconds; got {cap_s}")
        self.cap_s = cap_s

    def sleep(self, seconds: float) -> None:
        """Sleep ``min(seconds, cap)`` seconds, ``cap`` as the class says."""
        cap = min(self.cap_s, LOCAL_WAIT_S) if seconds < LOCAL_BELOW_S else self.cap_s
        time.sleep(min(seconds, cap))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def bound_idle_polls(module: ModuleType, cap_s: float = POLL_S) -> None:
    """Make every ``time.sleep`` of ``module`` wait at most ``cap_s`` seconds.

    Args:
        module: a Flower module that sleeps with ``time.sleep`` through its module-level
            ``time`` name (``import time``).
        cap_s: seconds, > 0.

    Raises:
        ValueError: if ``cap_s`` is not positive.
        FlowerLayoutError: if ``module`` has no module-level ``time`` of the standard library's.
    """
    current = getattr(module, "time", None)
    if current is not time and not isinstance(current, ClampedTime):
        raise FlowerLayoutError(f"{module.__name__} does not sleep through the standard time module")
    module.time = ClampedTime(cap_s)  # type: ignore[attr-defined]
    log.debug("%s: polls sleep at most %.2f s", module.__name__, cap_s)
