"""The hospital's warm worker: the process that owns the device, the decoded images and the model.

``fedward client start`` runs it beside the SuperNode (``python -m
fedward.client.hospital.worker --runtime-api 127.0.0.1:PORT --secret-file FILE``) and
restarts it if it dies. It is the SuperNode's ClientApp executor
(:mod:`fedward.client.hospital.executor`): it takes each message's task from the SuperNode
and serves it here, one at a time, so a run's config is parsed, its images decoded and
PyTorch (and on a GPU the CUDA context) initialised once per run, not once per message
(:mod:`fedward.client.hospital.run_cache`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fedward.client.hospital.executor import TaskLoop
from fedward.common.logs import configure_logging

log = logging.getLogger(__name__)

READY_LINE = "fedward worker ready"
"""The worker prints this line on stdout once it is warm (the agent waits for it)."""


def main(argv: list[str] | None = None) -> int:
    """Serve the SuperNode's ClientApp tasks until the process is stopped.

    Returns:
        Never returns normally; a signal ends the process.
    """
    parser = argparse.ArgumentParser(prog="python -m fedward.client.hospital.worker")
    parser.add_argument("--runtime-api", required=True, help="the SuperNode's Runtime API, 127.0.0.1:PORT")
    parser.add_argument("--secret-file", type=Path, required=True, help="the SuperExec secret (mode 600)")
    args = parser.parse_args(argv)
    configure_logging()
    loop = TaskLoop(args.runtime_api, args.secret_file.read_bytes())  # imports torch and MONAI: warm from here on
    log.info("worker serving the SuperNode at %s", args.runtime_api)
    sys.stdout.write(READY_LINE + "\n")  # the agent's start-up handshake, not a log line
    sys.stdout.flush()
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
