"""Enrolment: hospitals are named, ordered by name, and skipped on a version mismatch."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedward.common.version import fedward_version
from fedward.server.app.sites import OrderedGrid, SiteDirectory


class FakeGrid:
    """Answers enrolment queries like hospitals would."""

    def __init__(self, sites: dict[int, tuple[str, str]]) -> None:
        self.sites = sites
        self.queries = 0

    def get_node_ids(self) -> Iterable[int]:
        return list(self.sites)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        out = []
        for message in messages:
            self.queries += 1
            name, version = self.sites[message.metadata.dst_node_id]
            content = RecordDict(
                {
                    "site": ConfigRecord({"name": name, "fedward-version": version, "device": "cpu"}),
                    "metrics": MetricRecord({"train-examples": 100, "val-examples": 10}),
                }
            )
            out.append(Message(content=content, reply_to=message))
        return out


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
