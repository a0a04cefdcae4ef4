"""The local channel between the ClientApp forwarder and the hospital's warm worker.

A Unix stream socket in a folder only the agent's user can open (mode 0700, the socket
0600): one connection per Flower message. The request is three frames — the message type
(UTF-8), the :class:`~flwr.app.Message` and the :class:`~flwr.app.Context` in Flower's own
protobuf serialisation (:mod:`flwr.common.serde`) — and the reply two: ``ok`` and the
reply message, or ``error`` and a :class:`~fedward.client.hospital.failure.HospitalError`
text. A frame is an 8-byte big-endian length and its bytes.

This module imports neither torch nor MONAI: the forwarder side
(:func:`forward`) runs in the short-lived ``flwr-clientapp`` process, the serving side
(:func:`serve`) in the worker, which passes its handler in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

from flwr.app import Context, Message
from flwr.common.serde import context_from_proto, context_to_proto, message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Context as ProtoContext
from flwr.proto.message_pb2 import Message as ProtoMessage

from fedward.client.hospital.failure import HospitalError

log = logging.getLogger(__name__)

WORKER_SOCKET_KEY = "worker-socket"
"""Node config key: the worker's socket path (set by ``fedward client start``)."""

READY_LINE = "fedward worker ready"
"""The worker prints this line on stdout once its socket listens (the agent waits for it)."""

MAX_FRAME_BYTES = 4 * 1024**3
"""Largest frame accepted (4 GiB): a model of a billion float32 weights fits."""

DEFAULT_TIMEOUT_S = 3600.0
"""How long the forwarder waits for a reply when the run sets no ``federation.round-timeout``."""

REQUEST_TIMEOUT_S = 120.0
"""How long the worker waits for a connected client's request, or for it to take the reply, seconds."""

Handle = Callable[[str, Message, Context], Message]
"""``(message type, message, context) -> reply``; raises HospitalError on failure."""


def _send(sock: socket.socket, *frames: bytes) -> None:
    for frame in frames:
        sock.sendall(len(frame).to_bytes(8, "big") + frame)


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the other side closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(sock: socket.socket) -> bytes:
    size = int.from_bytes(_receive_exactly(sock, 8), "big")
    if size > MAX_FRAME_BYTES:
        raise ConnectionError(f"a frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    return _receive_exactly(sock, size)


def reply_timeout(context: Context) -> float:
    """Seconds to wait for the worker: the run's ``federation.round-timeout`` (the coordinator
    stops waiting then too), else :data:`DEFAULT_TIMEOUT_S`."""
    try:
        value = float(context.run_config.get("federation.round-timeout", DEFAULT_TIMEOUT_S))
    except (TypeError, ValueError):
        return DEFAULT_TIMEOUT_S
    return value if value > 0 else DEFAULT_TIMEOUT_S


def forward(path: Path, kind: str, msg: Message, context: Context) -> Message:
    """Hand one message to the worker listening on ``path`` and return its reply.

    Raises:
        HospitalError: the worker is not running (the agent is restarting it), stopped
            while serving, took longer than the round timeout, or replied with an error.
    """
    timeout = reply_timeout(context)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError:
            raise HospitalError(
                f"{kind} failed: the hospital's worker is not running (its agent restarts it)"
            ) from None
        try:
            _send(sock, kind.encode(), message_to_proto(msg).SerializeToString(), _context_bytes(context))
            status = _receive(sock)
            payload = _receive(sock)
        except TimeoutError:
            raise HospitalError(f"{kind} failed: the hospital's worker did not reply within {timeout:.0f} s") from None
        except (ConnectionError, OSError):
            raise HospitalError(
                f"{kind} failed: the hospital's worker stopped while serving it (its agent restarts it)"
            ) from None
    if status == b"error":
        raise HospitalError(payload.decode("utf-8", "replace"))
    reply = ProtoMessage()
    reply.ParseFromString(payload)
    return message_from_proto(reply)


def _context_bytes(context: Context) -> bytes:
    return bytes(context_to_proto(context).SerializeToString())


def private_socket_path(folder: Path) -> Path:
    """``folder/worker.sock``, creating ``folder`` with mode 0700 (only this user can open it).

    Raises:
        HospitalError: if ``folder`` exists with group or other access, or is not a folder.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077 or not folder.is_dir():
        raise HospitalError(f"{folder} must be a folder only its owner can open (mode 700); it is {mode:o}")
    return folder / "worker.sock"


def serve(path: Path, handle: Handle, *, ready: Callable[[], None] | None = None) -> None:
    """Serve requests on the Unix socket ``path`` one at a time, forever.

    Each request is answered with ``handle``'s reply; a HospitalError becomes an error
    reply with its text, any other exception one naming only its type (details go to this
    process's log). A client that disconnects mid-request does not stop the worker.

    Args:
        path: the socket, in a folder of :func:`private_socket_path`; a stale socket file is replaced.
        handle: serves one message.
        ready: called once the socket listens.
    """
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    previous = os.umask(0o177)  # the socket file: owner read/write only
    try:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
    finally:
        os.umask(previous)
    server.listen(4)
    if ready is not None:
        ready()
    with server:
        while True:
            connection, _ = server.accept()
            with connection:
                _serve_one(connection, handle)


def _serve_one(connection: socket.socket, handle: Handle) -> None:
    connection.settimeout(REQUEST_TIMEOUT_S)  # a client that connects and stalls must not block the worker
    try:
        kind = _receive(connection).decode()
        msg = ProtoMessage()
        msg.ParseFromString(_receive(connection))
        context = ProtoContext()
        context.ParseFromString(_receive(connection))
    except (ConnectionError, OSError, ValueError) as err:
        log.warning("dropped a malformed request on the worker channel: %s", type(err).__name__)
        return
    try:
        reply = handle(kind, message_from_proto(msg), context_from_proto(context))
        frames = (b"ok", message_to_proto(reply).SerializeToString())
    except HospitalError as err:
        frames = (b"error", str(err).encode())
    except Exception as err:
        log.exception("%s failed unexpectedly in the worker", kind)
        text = f"{kind} failed with {type(err).__name__}; details are in the hospital's agent log"
        frames = (b"error", text.encode())
    try:
        _send(connection, *frames)
    except OSError:
        log.warning("the ClientApp left before the %s reply was sent", kind)
