"""The hospital's SuperNode: Flower's ``flower-supernode``, with bounded, prompt waits for messages and objects.

``fedward client start`` runs ``python -m fedward.client.hospital.supernode <flower-supernode
arguments>``: Flower's own SuperNode (its command line, TLS, node authentication, Runtime
API) after two changes to its message receiver:
:func:`~fedward.common.flower.object_pulls.bound_object_pulls`, so that a message whose
weights are still being uploaded is picked up within half a second, and one whose upload
never completes fails its task after a minute instead of holding the hospital for up to
two hours; and :func:`~fedward.common.flower.idle_polls.bound_idle_polls`, so that an idle
SuperNode asks for its next message every quarter second instead of every 3 s.
"""

from __future__ import annotations

import importlib
import sys

from flwr.supernode.cli import flower_supernode

from fedward.common.flower.idle_polls import bound_idle_polls
from fedward.common.flower.object_pulls import bound_object_pulls

RECEIVER_MODULE = "flwr.supernode.start_client_internal"


def main() -> int:
    """Run Flower's SuperNode on ``sys.argv[1:]``.

    Returns:
        The SuperNode's exit code (Flower exits the process itself on errors and signals).
    """
    receiver = importlib.import_module(RECEIVER_MODULE)
    bound_object_pulls(receiver)
    bound_idle_polls(receiver)
    sys.argv[0] = "flower-supernode"
    flower_supernode()
    return 0


if __name__ == "__main__":
    sys.exit(main())
