"""The model registry's web application: read-only FastAPI endpoints over a runs folder, behind bearer tokens.

:func:`create_app` routes the paths of :mod:`fedward.common.registry_api` (the contract the
clients share); :mod:`fedward.server.registry.serve` runs it with uvicorn over TLS. Every
endpoint but ``GET /v1/health`` needs ``Authorization: Bearer <token>``
(:mod:`fedward.server.registry.tokens`) or a dashboard session cookie
(:mod:`fedward.server.registry.auth`; the dashboard itself lives under ``/ui``,
:mod:`fedward.server.registry.dashboard.routes`)::

    GET /v1/health                     {"status": "ok"} (no token; container health checks)
    GET /v1/runs                       {"runs": [run, ...]}
    GET /v1/runs/{run}                 run + "models" (round, file, sha256, bytes) + "best"
    GET /v1/runs/{run}/card            model_card.json
    GET /v1/runs/{run}/card.md         model_card.md
    GET /v1/runs/{run}/config          config.toml
    GET /v1/runs/{run}/run             run.json (the dataset schema)
    GET /v1/runs/{run}/models/{which}  weights (safetensors) of round ``which`` or ``best``;
                                       headers X-Fedward-SHA256, X-Fedward-Round, Content-Length

What reaches the file system is never a path from the request: a run is looked up with
:meth:`fedward.common.rundir.index.RunStore.get` (which refuses unknown and unsafe ids), a
run file by its name in :data:`fedward.common.registry_api.RUN_FILES` and a weight file by
its name in ``models/manifest.json`` (:mod:`fedward.server.registry.model_files`). The
SHA-256 sent with a weight file is the one recorded when the file was written (never
recomputed from the file served), so a file changed afterwards fails the client's
verification; a file without a recorded hash is not served at all (409). Unknown runs,
rounds, files and paths are 404; a missing, unknown or revoked token is 401.

The registry writes nothing into the store but its download log,
``<store>/registry/downloads.jsonl`` (time, token name, run, round, bytes, client address).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from fedward.common.registry_api import (
    BEST,
    BEST_KEY,
    DOWNLOAD_CHUNK_BYTES,
    HEALTH_PATH,
    MODEL_ROUTE,
    MODELS_KEY,
    ROUND_HEADER,
    RUN_FILES,
    RUN_ROUTE,
    RUNS_KEY,
    RUNS_PATH,
    SHA256_HEADER,
    RunFile,
    health_body,
    run_file_route,
)
from fedward.common.rundir.index import RunEntry, RunNotFoundError, RunStore
from fedward.common.timestamps import now_iso
from fedward.server.registry.auth import TokenName, authorize
from fedward.server.registry.dashboard.routes import add_dashboard
from fedward.server.registry.dashboard.sessions import DEFAULT_SESSION_SECONDS
from fedward.server.registry.model_files import (
    ModelFile,
    file_name_for,
    recorded_models,
    rounds_and_best,
    weights_path,
)
from fedward.server.registry.tokens import REGISTRY_DIR, TokenStore

__all__ = ["DOWNLOADS_FILE", "TokenName", "authorize", "create_app"]

log = logging.getLogger(__name__)

DOWNLOADS_FILE = "downloads.jsonl"


def _not_found(detail: str) -> HTTPException:
    return HTTPException(status_code=404, detail=detail)


def _short(text: str) -> str:
    """Request text echoed in an error detail: quoted and at most 64 characters."""
    return repr(text if len(text) <= 64 else text[:61] + "...")


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


class _DownloadLog:
    """Appends one JSON line per download to ``<store>/registry/downloads.jsonl`` (0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, row: dict[str, Any]) -> None:
        line = json.dumps(row) + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "a", encoding="utf-8") as handle:
                    handle.write(line)
            except OSError as err:
                log.error("cannot append to the download log %s: %s", self.path, err.strerror or err)


class _Runs:
    """The served runs folder: runs found by id (never by a request path), their files read.

    Args:
        root: the runs folder, resolved.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = RunStore(root)

    def entry(self, run: str) -> RunEntry:
        """The run ``run`` directly inside the folder; 404 otherwise."""
        try:
            entry = self.store.get(run)
        except RunNotFoundError:
            raise _not_found(f"no run {_short(run)}") from None
        run_dir = Path(entry.path).resolve()
        if run_dir.parent != self.root or not run_dir.is_dir():
            raise _not_found(f"no run {_short(run)}")
        return entry

    @staticmethod
    def public(entry: RunEntry) -> dict[str, Any]:
        """The run's index entry without its absolute path."""
        data = dict(entry.to_json())
        data.pop("path", None)
        return data

    @staticmethod
    def read(entry: RunEntry, run_file: RunFile) -> bytes:
        """A run file's bytes; 404 when the run has none (yet) or it cannot be read."""
        try:
            return (Path(entry.path) / run_file.file).read_bytes()
        except FileNotFoundError:
            raise _not_found(f"run {entry.run_id} has no {run_file.title} yet") from None
        except OSError as err:
            log.error("cannot read %s of run %s: %s", run_file.file, entry.run_id, err.strerror or err)
            raise _not_found(f"run {entry.run_id}: {run_file.title} unreadable") from None


def create_app(
    store: Path, tokens: TokenStore | None = None, *, session_seconds: float = DEFAULT_SESSION_SECONDS
) -> FastAPI:
    """The registry's ASGI application over the runs folder ``store``, with its dashboard under ``/ui``.

    Args:
        store: a runs folder (a coordinator's ``<state>/runs`` or a simulation's ``runs``).
        tokens: the token store (default ``<store>/registry/tokens.json``).
        session_seconds: how long a dashboard sign-in lasts.

    Returns:
        A FastAPI app without interactive docs or OpenAPI schema (nothing unauthenticated
        beyond ``/v1/health``).
    """
    root = Path(store).resolve()
    runs = _Runs(root)
    app = FastAPI(
        title="fedward model registry", docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False
    )
    app.state.tokens = tokens if tokens is not None else TokenStore.for_store(root)
    add_dashboard(app, root, app.state.tokens, session_seconds)
    _add_run_routes(app, runs)
    for run_file in RUN_FILES:
        _add_run_file_route(app, runs, run_file)
    _add_model_route(app, runs, _DownloadLog(root / REGISTRY_DIR / DOWNLOADS_FILE))
    return app


def _add_run_routes(app: FastAPI, runs: _Runs) -> None:
    """``GET /v1/health``, ``/v1/runs`` and ``/v1/runs/{run}``."""

    @app.get(HEALTH_PATH)
    def health() -> dict[str, str]:
        return health_body()

    @app.get(RUNS_PATH)
    def list_runs(token: TokenName) -> dict[str, Any]:
        return {RUNS_KEY: [runs.public(entry) for entry in runs.store.list()]}

    @app.get(RUN_ROUTE)
    def run_detail(run: str, token: TokenName) -> dict[str, Any]:
        entry = runs.entry(run)
        rounds, best = rounds_and_best(recorded_models(entry.path))
        data = runs.public(entry)
        data[MODELS_KEY] = [f.to_json() for f in rounds]
        data[BEST_KEY] = None if best is None else best.best_json()
        return data


def _add_run_file_route(app: FastAPI, runs: _Runs, run_file: RunFile) -> None:
    """``GET /v1/runs/{run}/<endpoint>``: one run file, served as it is."""

    def serve_run_file(run: str, token: TokenName) -> Response:
        data = runs.read(runs.entry(run), run_file)
        if run_file.media_type.startswith("text/"):  # the declared charset holds
            return Response(data.decode("utf-8", errors="replace"), media_type=run_file.media_type)
        return Response(data, media_type=run_file.media_type)

    app.add_api_route(run_file_route(run_file), serve_run_file, methods=["GET"], name=f"run file {run_file.endpoint}")


def _add_model_route(app: FastAPI, runs: _Runs, downloads: _DownloadLog) -> None:
    """``GET /v1/runs/{run}/models/{which}``: recorded weights, streamed with their recorded hash."""

    @app.get(MODEL_ROUTE)
    def model(run: str, which: str, request: Request, token: TokenName) -> Response:
        entry = runs.entry(run)
        record, path = _served_weights(entry, which)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the streaming generator
        except OSError:
            raise _not_found(f"run {entry.run_id}: {record.name} is missing") from None
        size = os.fstat(handle.fileno()).st_size
        client = _client(request)
        row = {"time": now_iso(), "token": token, "run": entry.run_id, "round": record.round, "file": record.name}
        downloads.record({**row, "bytes": size, "client": client})
        log.info(
            "download: token %s, run %s, %s (round %d, %d bytes) to %s",
            *(token, entry.run_id, record.name, record.round, size, client or "-"),
        )
        headers = {
            SHA256_HEADER: record.sha256,
            ROUND_HEADER: str(record.round),
            "Content-Length": str(size),
            "Cache-Control": "no-store",
        }
        return StreamingResponse(_chunks(handle), media_type="application/octet-stream", headers=headers)


def _served_weights(entry: RunEntry, which: str) -> tuple[ModelFile, Path]:
    """The recorded weight file ``which`` asks for and its path; 404 (or 409: no recorded hash) otherwise."""
    files = recorded_models(entry.path)
    name = file_name_for(which, files)
    if name is None:
        raise _not_found(f"no model {_short(which)}: ask for {BEST!r} or a round number")
    record = files.get(name)
    path = weights_path(entry.path, name)
    if record is None and path is not None and path.is_file():
        log.warning("not serving %s of run %s: no hash recorded in its manifest", name, entry.run_id)
        raise HTTPException(
            status_code=409, detail=f"run {entry.run_id}: {name} has no recorded sha256, so it is not served"
        )
    if record is None or path is None:
        raise _not_found(f"run {entry.run_id} has no weights {_short(which)}")
    return record, path


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while block := handle.read(DOWNLOAD_CHUNK_BYTES):
            yield block
