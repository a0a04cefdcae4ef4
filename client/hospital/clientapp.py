"""The fedward ClientApp: what Flower runs at a hospital for each message.

* ``query``: enrolment — the hospital's name, fedward version, device and image counts;
* ``train``: start from the global model, train ``local-epochs`` on local images, reply
  with the new weights and counts/losses;
* ``evaluate``: score the global model on the local validation split.

The work is :func:`fedward.client.hospital.handlers.handle`. Where this ClientApp runs:
in deployment, in the hospital's warm worker (:mod:`fedward.client.hospital.worker`), which
takes each message's task from the SuperNode (``--isolation process``) so the model and
the decoded images stay warm between messages; with ``fedward client start
--no-warm-worker``, in the ``flwr-clientapp`` process Flower starts for every message; in
simulation, in Ray's long-lived actors.

Replies carry weights and numbers only. Failures reply with an error whose text is
fedward's own message (names a setting or a file, never patient data); unexpected
exceptions are reported by type only, with details in the hospital's own log.

Loading this module imports neither PyTorch nor MONAI; the handlers are loaded with the
first message (:func:`_handle`).

Component string for Flower: ``fedward.client.hospital.clientapp:app``.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedward.client.hospital.failure import HospitalError

__all__ = ["HospitalError", "app"]

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Enrolment: who this hospital is and how much data it holds (counts only)."""
    return _handle("query", msg, context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on local data; reply with weights and counts."""
    return _handle("train", msg, context)


@app.evaluate()
def evaluate_global(msg: Message, context: Context) -> Message:
    """Score the received global model on the local validation split."""
    return _handle("evaluate", msg, context)


def _handle(kind: str, msg: Message, context: Context) -> Message:
    """:func:`fedward.client.hospital.handlers.handle`, imported on the first message.

    Loading this module stays light (no PyTorch, no MONAI): Flower's simulation runtime
    loads it once to check it, in the process whose other thread runs the ServerApp, and
    two threads importing MONAI at once can deadlock on its circular imports.
    """
    from fedward.client.hospital.handlers import handle  # loaded here: see above

    return handle(kind, msg, context)
