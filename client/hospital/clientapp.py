"""The fedward ClientApp: what Flower runs at a hospital for each message.

* ``query``: enrolment — the hospital's name, fedward version, device and image counts;
* ``train``: start from the global model, train ``local-epochs`` on local images, reply
  with the new weights and counts/losses;
* ``evaluate``: score the global model on the local validation split.

The handlers (:mod:`fedward.client.hospital.handlers`) run where the hospital's model and
decoded images stay warm. In deployment that is the worker ``fedward client start`` runs
beside the SuperNode: Flower 1.41 starts a fresh ``flwr-clientapp`` process for every
message, so this module is a thin forwarder there (it imports neither torch nor MONAI) and
hands each message to the worker over a local Unix socket
(:mod:`fedward.client.hospital.worker_channel`), named by the node config key
``worker-socket``. Without that key (simulation, where Ray's actors are long-lived, and
tests) the handlers run in this process.

Replies carry weights and numbers only. Failures reply with an error whose text is
fedward's own message (names a setting or a file, never patient data); unexpected
exceptions are reported by type only, with details in the hospital's own log.

Component string for Flower: ``fedward.client.hospital.clientapp:app``.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedward.client.hospital.failure import HospitalError
from fedward.client.hospital.worker_channel import WORKER_SOCKET_KEY, forward

__all__ = ["HospitalError", "app"]

app = ClientApp()


def _dispatch(kind: str, msg: Message, context: Context) -> Message:
    socket_path = context.node_config.get(WORKER_SOCKET_KEY)
    if socket_path:
        return forward(Path(str(socket_path)), kind, msg, context)
    from fedward.client.hospital.handlers import handle  # torch and MONAI: only where the work runs

    return handle(kind, msg, context)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Enrolment: who this hospital is and how much data it holds (counts only)."""
    return _dispatch("query", msg, context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on local data; reply with weights and counts."""
    return _dispatch("train", msg, context)


@app.evaluate()
def evaluate_global(msg: Message, context: Context) -> Message:
    """Score the received global model on the local validation split."""
    return _dispatch("evaluate", msg, context)
