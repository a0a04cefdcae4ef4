"""The hospital's warm worker: the process that owns the device, the decoded images and the model.

``fedward client start`` runs it beside the SuperNode (``python -m
fedward.client.hospital.worker --socket PATH``) and restarts it if it dies. It serves every
message the ClientApp forwarder hands it (:mod:`fedward.client.hospital.worker_channel`)
with :func:`fedward.client.hospital.handlers.handle`, one at a time, so a run's config is
parsed, its images decoded and PyTorch (and on a GPU the CUDA context) initialised once
per run, not once per message (:mod:`fedward.client.hospital.run_cache`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fedward.client.hospital.handlers import handle
from fedward.client.hospital.worker_channel import READY_LINE, serve
from fedward.common.logs import configure_logging

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Serve the socket given by ``--socket`` until the process is stopped.

    Returns:
        Never returns normally; a signal ends the process.
    """
    parser = argparse.ArgumentParser(prog="python -m fedward.client.hospital.worker")
    parser.add_argument("--socket", type=Path, required=True, help="Unix socket path in a private folder")
    args = parser.parse_args(argv)
    configure_logging()

    def ready() -> None:
        log.info("worker listening on %s", args.socket)
        sys.stdout.write(READY_LINE + "\n")  # the agent's start-up handshake, not a log line
        sys.stdout.flush()

    serve(args.socket, handle, ready=ready)
    return 0


if __name__ == "__main__":
    sys.exit(main())
