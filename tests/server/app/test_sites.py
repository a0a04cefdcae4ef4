"""Enrolment: hospitals are named, ordered by name, and skipped on a version mismatch."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.error import Error

from fedward.common.version import fedward_version
from fedward.server.app.sites import OrderedGrid, SiteDirectory


class FakeGrid:
    """Answers enrolment queries like hospitals would."""

    def __init__(self, sites: dict[int, tuple[str, str]]) -> None:
        self.sites = sites
        self.queries = 0
        self.waiting: list[Message] = []
        self.silent: set[int] = set()
        self.unavailable: set[int] = set()

    def get_node_ids(self) -> Iterable[int]:
        return list(self.sites)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            self.queries += 1
            message.metadata.__dict__["_message_id"] = f"m{self.queries}"  # as a real push assigns
            ids.append(message.metadata.message_id)
            if message.metadata.dst_node_id in self.silent:
                continue
            if message.metadata.dst_node_id in self.unavailable:  # the SuperLink answers for it
                error = Message(Error(code=0, reason="Node Unavailable"), reply_to=message)
                error.metadata.__dict__["_src_node_id"] = 1
                self.waiting.append(error)
                continue
            name, version = self.sites[message.metadata.dst_node_id]
            content = RecordDict(
                {
                    "site": ConfigRecord({"name": name, "fedward-version": version, "device": "cpu"}),
                    "metrics": MetricRecord({"train-examples": 100, "val-examples": 10}),
                }
            )
            self.waiting.append(Message(content=content, reply_to=message))
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies, self.waiting = self.waiting[:1], self.waiting[1:]  # one reply per pull
        return replies


def test_nodes_are_enrolled_once_ordered_by_name_and_mismatched_versions_skipped() -> None:
    ours = fedward_version()
    grid = FakeGrid({7: ("hospital-b", ours), 3: ("hospital-c", ours), 9: ("hospital-a", ours), 5: ("old", "0.0.1")})
    directory = SiteDirectory(timeout=5)
    ordered = OrderedGrid(grid, directory)  # type: ignore[arg-type]
    assert list(ordered.get_node_ids()) == [9, 7, 3]
    assert list(ordered.get_node_ids()) == [9, 7, 3]
    assert grid.queries == 4
    assert directory.name(5) == "old" and not directory.sites[5].compatible
    assert directory.sites[9].train_examples == 100
    assert directory.name(12345) == "node-12345"


def test_replies_are_gathered_over_several_pulls_until_the_timeout() -> None:
    ours = fedward_version()
    grid = FakeGrid({1: ("a", ours), 2: ("b", ours), 3: ("c", ours)})
    grid.silent = {3}  # a hospital that never answers
    ordered = OrderedGrid(grid, SiteDirectory(timeout=5))  # type: ignore[arg-type]
    messages = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in (1, 2, 3)]
    replies = list(ordered.send_and_receive(messages, timeout=0.5))
    assert sorted(r.metadata.src_node_id for r in replies) == [1, 2]


def test_the_superlinks_error_reply_for_an_unavailable_node_is_attributed_to_that_hospital() -> None:
    ours = fedward_version()
    grid = FakeGrid({5: ("a", ours), 6: ("b", ours)})
    grid.unavailable = {6}
    ordered = OrderedGrid(grid, SiteDirectory(timeout=5))  # type: ignore[arg-type]
    messages = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in (5, 6)]
    replies = {r.metadata.src_node_id: r for r in ordered.send_and_receive(messages, timeout=5)}
    assert set(replies) == {5, 6} and replies[6].has_error() and not replies[5].has_error()


def test_announced_nodes_are_enrolled_from_their_early_answers_and_new_nodes_asked_then() -> None:
    ours = fedward_version()
    grid = FakeGrid({1: ("a", ours), 2: ("b", ours)})
    directory = SiteDirectory(timeout=5)
    directory.announce(grid)  # type: ignore[arg-type]
    assert grid.queries == 2 and not directory.sites, "announcing does not wait for answers"
    grid.sites[3] = ("c", ours)  # connects after the announcement
    assert list(OrderedGrid(grid, directory).get_node_ids()) == [1, 2, 3]  # type: ignore[arg-type]
    assert grid.queries == 3, "the announced nodes are not asked twice"
    assert not grid.waiting


def test_an_announced_node_that_never_answers_is_left_out_after_the_timeout() -> None:
    ours = fedward_version()
    grid = FakeGrid({1: ("a", ours), 2: ("b", ours)})
    grid.silent = {2}
    directory = SiteDirectory(timeout=0.3)
    directory.announce(grid)  # type: ignore[arg-type]
    assert list(OrderedGrid(grid, directory).get_node_ids()) == [1]  # type: ignore[arg-type]
    assert directory.name(2) == "node-2"
