"""UTC timestamps as fedward writes them into records: ISO 8601 to the second, and run-directory stamps.

Run records (``status.json``, metrics rows, ``run.json``, model cards), the hospital roster,
registry tokens, download logs and pulled models all say when something happened in the
same form, ``2026-12-02T00:18:49+00:00``; run directories start with the compact stamp
``20261202-001849``. Both are UTC, so records from machines in different time zones sort
and compare as they are.
"""

from __future__ import annotations

from datetime import UTC, datetime

RUN_STAMP = "%Y%m%d-%H%M%S"
"""``strftime`` format of the UTC time at the start of a run directory's name."""


def now_iso() -> str:
    """The current UTC time, ISO 8601, seconds precision (``2026-12-02T00:18:49+00:00``)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def run_stamp() -> str:
    """The current UTC time as a run directory's name starts (``20261202-001849``)."""
    return datetime.now(UTC).strftime(RUN_STAMP)
