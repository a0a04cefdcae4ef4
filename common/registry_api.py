"""The model registry's HTTP contract: paths, per-run files, headers, token variable, port, chunk size.

The registry service (:mod:`fedward.server.registry.service`) routes what is named here and
its clients (:mod:`fedward.client.evaluator.registry_client`, ``fedward registry health``,
the CLI's defaults) request it. ``server`` and ``client`` never import each other, so both
sides take every path, header and name from this module and none spells one itself::

    GET /v1/health                     {"status": "ok"}; the only path without a token
    GET /v1/runs                       {"runs": [run, ...]}
    GET /v1/runs/{run}                 the run + "models" [{round, file, sha256, bytes}] + "best"
    GET /v1/runs/{run}/card            model_card.json
    GET /v1/runs/{run}/card.md         model_card.md
    GET /v1/runs/{run}/config          config.toml
    GET /v1/runs/{run}/run             run.json (the dataset schema)
    GET /v1/runs/{run}/models/{which}  weights of round ``which`` or ``best``, with the headers
                                       X-Fedward-SHA256 (hash recorded at training time) and
                                       X-Fedward-Round

The four run files are :data:`RUN_FILES`; a run that has no such file (yet) answers 404.
Every request but the health check carries ``Authorization: Bearer <token>``; the CLI
reads the token from :data:`TOKEN_ENV` when ``--token`` is not given. A run id in a path is
percent-encoded whole (``quote(run, safe="")``), so a ``/`` or ``..`` in it never becomes a
path segment of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fedward.common.fileio import CHUNK_BYTES
from fedward.common.rundir.layout import CARD_JSON, CARD_MD, CONFIG_FILE, RUN_FILE

API_ROOT = "/v1"
HEALTH_PATH = f"{API_ROOT}/health"
RUNS_PATH = f"{API_ROOT}/runs"
MODELS_SEGMENT = "models"
BEST = "best"
"""``which`` of the best model's weights (else a round number)."""

RUNS_KEY = "runs"
"""Key of the run list in ``GET /v1/runs``."""
MODELS_KEY = "models"
"""Key of the per-round weights in ``GET /v1/runs/{run}``."""
BEST_KEY = "best"
"""Key of the best model's round, sha256 and bytes in ``GET /v1/runs/{run}`` (``null``: none yet)."""

SHA256_HEADER = "X-Fedward-SHA256"
"""Response header of a weights download: the hex SHA-256 recorded when the file was written."""
ROUND_HEADER = "X-Fedward-Round"
"""Response header of a weights download: the round the weights belong to."""
TOKEN_ENV = "FEDWARD_REGISTRY_TOKEN"
"""Environment variable clients read the bearer token from."""
DEFAULT_PORT = 9095
"""Default TCP port of the registry (Flower's SuperLink uses 9091-9093)."""
DOWNLOAD_CHUNK_BYTES = CHUNK_BYTES
"""Block size in which weights are streamed, by the registry and by its clients, bytes."""

_HEALTH_KEY = "status"
_HEALTH_OK = "ok"


@dataclass(frozen=True, slots=True)
class RunFile:
    """A run-directory file the registry serves as it is.

    Attributes:
        endpoint: the last path segment, ``GET /v1/runs/{run}/<endpoint>``.
        file: the file's name in the run directory (and in a pulled model's folder).
        media_type: the response's ``Content-Type``.
        title: what the file is, in messages ("run X has no <title> yet").
    """

    endpoint: str
    file: str
    media_type: str
    title: str


RUN_FILES = (
    RunFile("card", CARD_JSON, "application/json", "model card"),
    RunFile("card.md", CARD_MD, "text/markdown; charset=utf-8", "model card"),
    RunFile("config", CONFIG_FILE, "text/plain; charset=utf-8", CONFIG_FILE),
    RunFile("run", RUN_FILE, "application/json", RUN_FILE),
)
"""Every per-run file endpoint; ``fedward model pull`` writes each file the run has."""


def _below_runs(*segments: str) -> str:
    return "/".join((RUNS_PATH, *segments))


def _segment(text: str) -> str:
    """One path segment: everything percent-encoded but unreserved characters (``/`` too)."""
    return quote(text, safe="")


RUN_ROUTE = _below_runs("{run}")
"""Route template of a run (the service's endpoint parameter is ``run``)."""
MODEL_ROUTE = _below_runs("{run}", MODELS_SEGMENT, "{which}")
"""Route template of a weights download (endpoint parameters ``run`` and ``which``)."""


def run_file_route(run_file: RunFile) -> str:
    """Route template of a per-run file, e.g. ``/v1/runs/{run}/card``."""
    return _below_runs("{run}", run_file.endpoint)


def run_path(run: str) -> str:
    """``/v1/runs/<run>`` with the run id percent-encoded as one segment."""
    return _below_runs(_segment(run))


def run_file_path(run: str, run_file: RunFile) -> str:
    """``/v1/runs/<run>/<endpoint>`` of one of :data:`RUN_FILES`."""
    return _below_runs(_segment(run), run_file.endpoint)


def model_path(run: str, which: str | int) -> str:
    """``/v1/runs/<run>/models/<which>``; ``which`` is :data:`BEST` or a round number."""
    return _below_runs(_segment(run), MODELS_SEGMENT, _segment(str(which)))


def health_body() -> dict[str, str]:
    """The body of a healthy ``GET /v1/health``: ``{"status": "ok"}``."""
    return {_HEALTH_KEY: _HEALTH_OK}


def is_healthy(answer: Any) -> bool:
    """Whether a decoded ``GET /v1/health`` body is the healthy one."""
    return isinstance(answer, dict) and answer.get(_HEALTH_KEY) == _HEALTH_OK
