"""The warm worker's side of Flower's process isolation: take each ClientApp task and serve it here.

Flower 1.41 runs a ClientApp as a *task*: the SuperNode queues every message it receives
on its Runtime API (HTTP on 127.0.0.1) and an executor acquires it. Flower's own executor
(``flower-superexec``, or the one inside ``flower-supernode --isolation subprocess``)
starts a fresh ``flwr-clientapp`` process per task, which imports flwr, loads the app from
the run's FAB, handles one message and exits — every round, for every message. With
``flower-supernode --isolation process`` the SuperNode starts nothing and waits for an
outside executor: the hospital's warm worker is that executor. :class:`TaskLoop` acquires
each ClientApp task and runs fedward's ClientApp (:mod:`fedward.client.hospital.clientapp`)
in this long-lived process, where the model, the decoded images and the device stay warm
(:mod:`fedward.client.hospital.run_cache`).

What each task does is what ``flwr-clientapp`` does (Flower's
``flwr.supernode.runtime.run_clientapp``, whose own functions pull the input and push the
reply here): pull the message and context with the task's token, send task heartbeats
while it runs, call the ClientApp, push the reply and the task's final status. Only the
loading differs: the worker runs the fedward it was installed with, never code from the
FAB, and refuses a run whose FAB is not fedward's (a hospital runs only its audited
fedward). A handler's exception becomes an error reply naming its type only (details
stay in the hospital's log), as in Flower.

Acquiring a task is guarded by Flower's SuperExec HMAC authentication: the agent writes a
random secret to a file only its user can read (:func:`write_secret`) and gives it to both
the SuperNode and the worker (``--superexec-auth-secret-file``), so no other local user
can take the hospital's messages. The task's own calls carry the one-time token the
acquisition returned.

Flower 1.41 specifics: the task protocol (``AcquireTask``, ``PullTaskInput``, ...) is
Flower's, not a public API; ``pyproject.toml`` pins ``flwr<1.42`` and
``tests/client/hospital/test_executor.py`` runs a real SuperNode with this loop.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

from flwr.app import Context, Message
from flwr.app.error import Error
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import context_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node
from flwr.proto.runtime_pb2 import AcquireTaskRequest, PullAppMessagesRequest, PullTaskInputRequest
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.protobuf.client import ProtobufClientInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.run import Run
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

from fedward.client.hospital.failure import HospitalError
from fedward.common.flower.bundle import PUBLISHER

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
"""Seconds between two ``AcquireTask`` calls while no task waits (Flower's SuperExec: 1 s)."""

UNREACHABLE_BACKOFF_S = 1.0
"""Seconds between attempts while the SuperNode's Runtime API does not answer yet."""

OBJECT_BACKOFF_S = (0.05, 0.5)
"""First and longest wait, seconds, when a message's objects are still arriving at the SuperNode
(a task is offered before its objects are all there; Flower's defaults, 1 s to 10 s, suit a
process that took 1-3 s to start, not a warm worker)."""

OBJECT_PULL_LIMIT_S = 120.0
"""Longest wait for a task's objects, seconds. A message of a run that ended (a coordinator
restarted mid-round) is offered but its objects never come: the task then fails and the
worker takes the next one instead of waiting for ever."""

ACQUIRE_METHODS = frozenset({"/flwr.proto.Runtime/AcquireTask"})
"""Runtime API methods the SuperExec secret signs (as Flower's ``run_superexec``)."""

SECRET_BYTES = 32

AppCall = Callable[[Message, Context], Message]


def write_secret(folder: Path) -> Path:
    """Write a fresh SuperExec secret (32 random bytes) into ``folder``, readable by its owner only.

    Args:
        folder: a private folder (mode 0700) of the agent.

    Returns:
        The secret file (mode 0600), for ``--superexec-auth-secret-file``.

    Raises:
        HospitalError: if ``folder`` can be opened by other users.
    """
    mode = folder.stat().st_mode & 0o777
    if mode & 0o077:
        raise HospitalError(f"{folder} is open to other users (mode {mode:o}); the worker's secret must be private")
    path = folder / "superexec.secret"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(secrets.token_bytes(SECRET_BYTES))
    return path


def _client(address: str, interceptor: ProtobufClientInterceptor) -> RuntimeHttpClient:
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,  # 127.0.0.1 only; acquisition is HMAC-signed, tasks carry one-time tokens
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"), interceptor],
        retry_invoker=make_simple_http_retry_invoker(),
    )


class TaskLoop:
    """Acquire the SuperNode's ClientApp tasks one at a time and serve them in this process.

    Args:
        address: the SuperNode's Runtime API, ``127.0.0.1:<port>`` (its ``--port``).
        secret: the SuperExec secret both sides read (:func:`write_secret`).
        app: the ClientApp to call, ``(message, context) -> reply``; fedward's by default.
        poll_s: seconds between acquisition attempts while idle.
    """

    def __init__(
        self, address: str, secret: bytes, app: AppCall | None = None, poll_s: float = POLL_INTERVAL_S
    ) -> None:
        self.address = address
        self.poll_s = poll_s
        self.app = app if app is not None else _fedward_app()
        self.served = 0
        self._stop = threading.Event()
        signer = SuperExecAuthHttpInterceptor(master_secret=secret, protected_methods=ACQUIRE_METHODS)
        self._acquirer = _client(address, signer)

    def stop(self) -> None:
        """Make :meth:`run` return after the task it serves (if any)."""
        self._stop.set()

    def run(self) -> None:
        """Serve tasks until :meth:`stop`; an unreachable SuperNode is waited for, quietly."""
        reachable = True
        while not self._stop.is_set():
            try:
                response = self._acquirer.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
            except Exception as err:  # the SuperNode restarts; keep waiting
                if reachable:
                    log.info("SuperNode at %s not answering (%s); waiting", self.address, type(err).__name__)
                reachable = False
                self._stop.wait(UNREACHABLE_BACKOFF_S)
                continue
            if not reachable:
                log.info("SuperNode runtime API at %s answers", self.address)
                reachable = True
            if response.HasField("task") and response.token:
                self.serve(response.token)
                continue
            self._stop.wait(self.poll_s)
        self._acquirer.close()

    def serve(self, token: str) -> None:
        """Serve the task ``token`` names: pull its input, call the app, push reply and status."""
        client = _client(self.address, RuntimeTokenHttpInterceptor(token))
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        message: Message | None = None
        context: Context | None = None
        reply: Message | None = None
        status, details = SubStatus.FAILED, "ClientApp task failed"
        try:
            message, context, run = pull_task_input(client)
            if run.fab_id.split("/")[0] != PUBLISHER:
                reason = f"this hospital runs fedward's ClientApp only; run {run.run_id} brings {run.fab_id!r}"
                log.warning("%s", reason)
                error = Error(code=ErrorCode.LOAD_CLIENT_APP_EXCEPTION, reason=reason)
                reply, details = Message(error, reply_to=message), reason
            else:
                reply = self.app(message, context)
                status, details = SubStatus.COMPLETED, ""
        except Exception as err:  # one task's failure must not end the worker
            log.error("ClientApp task failed: %s", type(err).__name__, exc_info=err)
            # fedward's own failures name a setting or a file and are meant for the coordinator
            # (same text as Flower's flwr-clientapp sends); anything else is reported by type only.
            details = str(err) if isinstance(err, HospitalError) else f"ClientApp raised {type(err).__name__}"
            if message is not None:
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details), reply_to=message)
        finally:
            self._finish(client, heartbeat, reply, context, status, details)
        self.served += 1

    @staticmethod
    def _finish(
        client: RuntimeHttpClient,
        heartbeat: HeartbeatSender,
        reply: Message | None,
        context: Context | None,
        status: str,
        details: str,
    ) -> None:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        except Exception as err:  # the status still goes out
            log.error("could not hand the reply to the SuperNode: %s", err)
            status, details = SubStatus.FAILED, "reply not delivered"
        finally:
            push_task_output(client=client, context=context, sub_status=status, details=details)
            if heartbeat.is_running:
                heartbeat.stop()
            client.close()


def pull_task_input(client: RuntimeHttpClient) -> tuple[Message, Context, Run]:
    """The task's message, context and run, as Flower's ``run_clientapp.pull_task_input`` (FAB left out).

    Args:
        client: a Runtime API client carrying the task's token.

    Raises:
        HospitalError: if the SuperNode has no message for the task.
    """
    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context = context_from_proto(res.context)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise HospitalError("the SuperNode offered a task without a message")
    node = Node(node_id=context.node_id)
    tree = pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree,
        make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message,
        max_tries_per_object=None,
        max_time=OBJECT_PULL_LIMIT_S,
        initial_backoff=OBJECT_BACKOFF_S[0],
        backoff_cap=OBJECT_BACKOFF_S[1],
    )
    message.metadata.__dict__["_message_id"] = tree.object_id  # as Flower: the deflated message lacks its id
    return message, context, run_from_proto(res.run)


def _fedward_app() -> AppCall:
    """fedward's ClientApp, handling in this process (imports torch and MONAI once, here)."""
    from fedward.client.hospital.clientapp import app

    def call(message: Message, context: Context) -> Message:
        return app(message=message, context=context)

    return call
