"""Know the hospitals: enrol each SuperNode once, and show strategies a stable list.

When a node appears, the ServerApp sends it a Flower ``query`` message carrying the
coordinator's fedward version; the hospital answers with its name, fedward version,
device and how many training and validation images it holds (counts only). The
directory then:

* names hospitals in logs and run records (Flower node ids are random per connection);
* skips a hospital whose fedward major.minor differs from the coordinator's, saying so
  on both sides (hospitals install an audited fedward; mixed versions may disagree on
  models or preprocessing);
* lists nodes ordered by hospital name, so that Flower's (seeded) sampling picks the
  same hospitals for the same seed, whatever node ids the run got.

:class:`OrderedGrid` is the Flower ``Grid`` the strategy sees: the real one, with
``get_node_ids`` filtered and ordered by the directory, replies gathered every
:data:`REPLY_POLL_S`, and every model packed into one array on the way out and unpacked
on the way in (:mod:`fedward.common.flower.packing`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedward.common.flower.packing import PackingError, has_packed, pack_content, unpack_content
from fedward.common.version import compatible, fedward_version
from fedward.common.wire import (
    CONFIG,
    FILES_SKIPPED,
    SITE,
    SITE_DEVICE,
    SITE_NAME,
    SITE_VERSION,
    TRAIN_EXAMPLES,
    VAL_EXAMPLES,
)

log = logging.getLogger(__name__)

RETRY_AFTER_S = 60.0
"""Seconds before a node that failed to enrol is asked again."""

REPLY_POLL_S = 0.1
"""Seconds between two pulls for replies (Flower 1.41's deployment grid sleeps 3 s)."""


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """An enrolled hospital.

    Attributes:
        node_id: Flower node id of its SuperNode.
        name: hospital name (its ``hospital-name`` node config, or ``hospital-<k>`` in simulation).
        version: fedward version it runs.
        device: ``cpu`` or ``cuda`` and the training precision, e.g. ``cpu (bfloat16)``.
        train_examples: training images it holds.
        val_examples: local validation images it holds.
        compatible: whether its major.minor version matches the coordinator's.
        files_skipped: image files it could not use (image folders), by count only.
    """

    node_id: int
    name: str
    version: str
    device: str
    train_examples: int
    val_examples: int
    compatible: bool
    files_skipped: int = 0


class SiteDirectory:
    """Enrolled hospitals by node id.

    Args:
        timeout: seconds to wait for enrolment replies.
        registered: node id -> name from the coordinator's hospital roster. A registered
            node is known by that name, whatever name its agent reports.
    """

    def __init__(self, timeout: float, registered: Mapping[int, str] | None = None) -> None:
        self.timeout = timeout
        self.registered = dict(registered or {})
        self.sites: dict[int, SiteInfo] = {}
        self._failed_at: dict[int, float] = {}
        self._pending: dict[str, int] = {}
        """Enrolment queries announced and not yet read: message id -> node id."""

    def name(self, node_id: int) -> str:
        """Hospital name of ``node_id`` (``node-<id>`` if it never enrolled)."""
        site = self.sites.get(node_id)
        return site.name if site else f"node-{node_id}"

    def announce(self, grid: Grid) -> None:
        """Send the enrolment query to every node connected now, without waiting for the answers.

        The ServerApp announces itself first thing, so that the hospitals load fedward,
        their images and their model while the coordinator loads PyTorch and builds its
        run; the answers are read when the strategy first asks for nodes (:meth:`usable`).
        """
        messages = self._queries([n for n in grid.get_node_ids() if n not in self.sites])
        self._pending.update(_pushed(grid, messages))

    def usable(self, grid: Grid, node_ids: Iterable[int]) -> list[int]:
        """Enrol new nodes among ``node_ids``; return the compatible ones ordered by name."""
        ids = list(node_ids)
        now = time.monotonic()
        new = [n for n in ids if n not in self.sites and now - self._failed_at.get(n, -RETRY_AFTER_S) >= RETRY_AFTER_S]
        if new:
            self._enrol(grid, new)
        usable = [self.sites[n] for n in ids if n in self.sites and self.sites[n].compatible]
        return [s.node_id for s in sorted(usable, key=lambda s: (s.name, s.node_id))]

    def _queries(self, node_ids: Iterable[int]) -> list[Message]:
        content = ConfigRecord({SITE_VERSION: fedward_version()})
        return [
            Message(content=RecordDict({CONFIG: content.copy()}), message_type=MessageType.QUERY, dst_node_id=node_id)
            for node_id in node_ids
        ]

    def _enrol(self, grid: Grid, node_ids: list[int]) -> None:
        """Ask ``node_ids`` who they are (reusing queries already announced) and record the answers."""
        announced = {m: n for m, n in self._pending.items() if n in node_ids}
        for message_id in announced:
            del self._pending[message_id]
        unasked = set(node_ids) - set(announced.values())
        sent = {**announced, **_pushed(grid, self._queries(sorted(unasked)))}
        answered: set[int] = set()
        for reply in collect_replies(grid, sent, self.timeout):
            site = self._admit(reply)
            if site is not None:
                answered.add(site.node_id)
        for node_id in set(node_ids) - answered:
            self._failed_at[node_id] = time.monotonic()

    def _admit(self, reply: Message) -> SiteInfo | None:
        """Record the hospital an enrolment reply describes (renamed as registered); ``None`` if it cannot be read."""
        ours, node_id = fedward_version(), reply.metadata.src_node_id
        site = _parse(reply, ours)
        if site is None:
            reason = reply.error.reason if reply.has_error() else "malformed reply"
            log.warning("node %d did not enrol: %s", node_id, reason)
            return None
        registered = self.registered.get(node_id)
        if registered is not None and registered != site.name:
            log.warning("node %d reports the name %s; registered as %s", node_id, site.name, registered)
            site = dataclasses.replace(site, name=registered)
        self.sites[node_id] = site
        if site.compatible:
            log.info(
                "hospital %s enrolled (node %d, fedward %s, %s, %d training / %d validation images, %d files skipped)",
                *(site.name, node_id, site.version, site.device, site.train_examples, site.val_examples),
                site.files_skipped,
            )
        else:
            log.warning(
                "hospital %s (node %d) runs fedward %s but the coordinator runs %s: skipped until it installs "
                "fedward %s.x",
                *(site.name, node_id, site.version, ours, ".".join(ours.split(".")[:2])),
            )
        return site


def _pushed(grid: Grid, messages: list[Message]) -> dict[str, int]:
    """Push ``messages``; message id -> destination node of each one pushed (a failed push has no id)."""
    if not messages:
        return {}
    ids = {i for i in grid.push_messages(messages) if i}
    return {m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id in ids}


def collect_replies(grid: Grid, sent: Mapping[str, int], timeout: float | None) -> list[Message]:
    """Pull the replies to ``sent`` (message id -> node) every :data:`REPLY_POLL_S` until all came or ``timeout``.

    Error replies the SuperLink writes for a node it lost are attributed to that node
    (:func:`_attribute`).

    Returns:
        The replies received, error replies included.
    """
    pending = set(sent)
    deadline = None if timeout is None else time.monotonic() + timeout
    replies: list[Message] = []
    while pending:
        received = list(grid.pull_messages(pending))
        for reply in received:
            _attribute(reply, sent)
        replies.extend(received)
        pending.difference_update(reply.metadata.reply_to_message_id for reply in received)
        if not pending or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(REPLY_POLL_S)
    return replies


def _parse(reply: Message, ours: str) -> SiteInfo | None:
    if reply.has_error():
        return None
    site = reply.content.config_records.get(SITE)
    metrics = next(iter(reply.content.metric_records.values()), MetricRecord())
    if not isinstance(site, ConfigRecord) or not isinstance(site.get(SITE_NAME), str):
        return None
    version = str(site.get(SITE_VERSION, "unknown"))
    return SiteInfo(
        node_id=reply.metadata.src_node_id,
        name=str(site[SITE_NAME]),
        version=version,
        device=str(site.get(SITE_DEVICE, "unknown")),
        train_examples=int(metrics.get(TRAIN_EXAMPLES, 0)),  # type: ignore[arg-type]
        val_examples=int(metrics.get(VAL_EXAMPLES, 0)),  # type: ignore[arg-type]
        compatible=compatible(version, ours),
        files_skipped=int(metrics.get(FILES_SKIPPED, 0)),  # type: ignore[arg-type]
    )


def _attribute(reply: Message, destination: Mapping[str, int]) -> None:
    """Name the hospital an error reply stands for.

    Flower's SuperLink answers for a node that stopped sending heartbeats itself ("Node
    Unavailable"), with its own node id as the sender; the reply is attributed to the
    hospital the message was sent to, so that the round records that hospital as failed.
    """
    sent_to = destination.get(reply.metadata.reply_to_message_id)
    if sent_to is not None and reply.has_error() and reply.metadata.src_node_id != sent_to:
        reply.metadata.__dict__["_src_node_id"] = sent_to  # Metadata has no setter; Flower sets ids so too


class OrderedGrid(Grid):
    """A Flower Grid whose node list is the directory's: enrolled, compatible, by name.

    Everything else is delegated to the wrapped grid.
    """

    def __init__(self, grid: Grid, directory: SiteDirectory) -> None:
        self._grid = grid
        self.directory = directory

    def set_run(self, run: Run) -> None:
        """Delegate to the wrapped grid."""
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        """The wrapped grid's run."""
        return self._grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Delegate to the wrapped grid."""
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        """Enrolled, compatible node ids ordered by hospital name."""
        return self.directory.usable(self, self._grid.get_node_ids())

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Push ``messages`` through the wrapped grid, each model packed into one array."""
        messages = list(messages)
        for message in messages:
            if message.has_content():
                message.content = pack_content(message.content)
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Pull replies through the wrapped grid, packed models unpacked.

        A reply whose packed model cannot be read is handed on as it came, so the update
        guard rejects it for that hospital (one bad reply never stops a round).
        """
        replies = list(self._grid.pull_messages(message_ids))
        for reply in replies:
            if reply.has_content() and has_packed(reply.content):
                try:
                    reply.content = unpack_content(reply.content)
                except PackingError as err:
                    log.warning("reply from node %d: %s", reply.metadata.src_node_id, err)
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages`` and pull replies every :data:`REPLY_POLL_S` until all came or ``timeout``.

        Flower's own contract (``Grid.send_and_receive``); its deployment grid checks for
        replies every 3 s, which a round of hospitals waits for twice (train, evaluate).

        Args:
            messages: one message per destination node.
            timeout: seconds to wait for replies; ``None``: until every reply came.

        Returns:
            The replies received, error replies included.
        """
        return collect_replies(self, _pushed(self, list(messages)), timeout)
