"""The model registry: a read-only HTTPS API over a run store, for evaluators.

``fedward registry serve`` runs :func:`create_app` with uvicorn over TLS (the coordinator
certificate of ``fedward certs init``). Every endpoint but ``GET /v1/health`` needs
``Authorization: Bearer <token>`` (:mod:`fedward.server.registry.tokens`)::

    GET /v1/health                     {"status": "ok"} (no token; container health checks)
    GET /v1/runs                       {"runs": [run, ...]}
    GET /v1/runs/{run}                 run + "models" (round, file, sha256, bytes) + "best"
    GET /v1/runs/{run}/card            model_card.json
    GET /v1/runs/{run}/card.md         model_card.md
    GET /v1/runs/{run}/config          config.toml
    GET /v1/runs/{run}/models/{which}  weights (safetensors) of round ``which`` or ``best``;
                                       headers X-Fedward-SHA256, X-Fedward-Round, Content-Length

What reaches the file system is never a path from the request: a run is looked up with
:meth:`fedward.common.rundir.index.RunStore.get` (which refuses unknown and unsafe ids) and a
weight file by its name in ``models/manifest.json``. The SHA-256 sent with a weight file
is the one recorded when the file was written (never recomputed from the file served), so
a file changed afterwards fails the client's verification; a file without a recorded
hash is not served at all. Unknown runs, rounds and paths are 404; a missing, unknown or
revoked token is 401.

The registry writes nothing into the store but its download log,
``<store>/registry/downloads.jsonl`` (time, token name, run, round, bytes, client address).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from fedward.common.errors import ConfigError, FedwardError
from fedward.common.rundir.index import RunEntry, RunNotFoundError, RunStore
from fedward.common.rundir.layout import MANIFEST_FILE
from fedward.common.rundir.manifest import read_manifest
from fedward.common.security.certs import FederationCerts
from fedward.server.registry.tokens import HEX_SHA256, REGISTRY_DIR, TokenError, TokenStore

log = logging.getLogger(__name__)

DEFAULT_PORT = 9095
"""Default port of the registry (Flower's SuperLink uses 9091-9093)."""
DOWNLOADS_FILE = "downloads.jsonl"
BEST_FILE = "best.safetensors"
MODEL_FILE = re.compile(r"^(?:best|round-\d{3,9})\.safetensors$")
ROUND_PARAM = re.compile(r"^[0-9]{1,9}$")
CHUNK_BYTES = 1 << 20
SHA256_HEADER = "X-Fedward-SHA256"
ROUND_HEADER = "X-Fedward-Round"


class RegistryError(FedwardError):
    """The registry cannot start (store, certificates, port)."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    """A weight file as recorded in ``models/manifest.json`` when it was written.

    Attributes:
        name: file name inside ``models/`` (``round-001.safetensors`` or ``best.safetensors``).
        round: the round whose global model it holds (0 = initial model).
        sha256: hex SHA-256 recorded at training time.
        bytes: size recorded at training time, bytes.
    """

    name: str
    round: int
    sha256: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        """``{"round", "file", "sha256", "bytes"}``."""
        return {"round": self.round, "file": self.name, "sha256": self.sha256, "bytes": self.bytes}


def recorded_models(run_dir: Path) -> dict[str, ModelFile]:
    """Weight files of a run with their recorded hashes, by file name.

    Entries with a name that is not ``best.safetensors`` / ``round-NNN.safetensors``, or
    with a malformed hash, round or size, are left out: they are never served.

    Returns:
        File name -> :class:`ModelFile`; ``{}`` when the manifest is missing or unreadable.
    """
    try:
        files = read_manifest(run_dir)
    except (OSError, ValueError) as err:
        where = Path(run_dir) / MANIFEST_FILE
        log.warning("cannot read %s (%s): its weights are not served", where, type(err).__name__)
        return {}
    found: dict[str, ModelFile] = {}
    for name, entry in files.items():
        try:
            record = ModelFile(str(name), int(entry["round"]), str(entry["sha256"]), int(entry["bytes"]))
        except (KeyError, TypeError, ValueError):
            continue
        if MODEL_FILE.fullmatch(record.name) and HEX_SHA256.fullmatch(record.sha256) and record.round >= 0:
            found[record.name] = record
    return found


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _not_found(detail: str) -> HTTPException:
    return HTTPException(status_code=404, detail=detail)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def _short(text: str) -> str:
    """Request text echoed in an error detail: quoted and at most 64 characters."""
    return repr(text if len(text) <= 64 else text[:61] + "...")


def authorize(request: Request) -> str:
    """FastAPI dependency: the name of the request's valid bearer token; 401 otherwise."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    token = value.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("a bearer token is required (Authorization: Bearer <token>)")
    tokens: TokenStore = request.app.state.tokens
    try:
        name = tokens.verify(token)
    except TokenError as err:
        log.error("refusing every request: %s", err)
        raise _unauthorized("the registry cannot check tokens right now") from None
    if name is None:
        client = request.client.host if request.client else "-"
        log.info("refused %s %s from %s: unknown or revoked token", request.method, request.url.path, client)
        raise _unauthorized("unknown or revoked token")
    return name


TokenName = Annotated[str, Depends(authorize)]
"""Endpoint parameter: the caller's token name (the request is refused with 401 without one)."""


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


def create_app(store: Path, tokens: TokenStore | None = None) -> FastAPI:
    """The registry's ASGI application over the runs folder ``store``.

    Args:
        store: a runs folder (a coordinator's ``<state>/runs`` or a simulation's ``runs``).
        tokens: the token store (default ``<store>/registry/tokens.json``).

    Returns:
        A FastAPI app without interactive docs or OpenAPI schema (nothing unauthenticated
        beyond ``/v1/health``).
    """
    root = Path(store).resolve()
    runs = RunStore(root)
    token_store = tokens if tokens is not None else TokenStore.for_store(root)
    downloads = _DownloadLog(root / REGISTRY_DIR / DOWNLOADS_FILE)
    app = FastAPI(
        title="fedward model registry", docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False
    )
    app.state.tokens = token_store

    def entry_of(run: str) -> RunEntry:
        try:
            entry = runs.get(run)
        except RunNotFoundError:
            raise _not_found(f"no run {_short(run)}") from None
        run_dir = Path(entry.path).resolve()
        if run_dir.parent != root or not run_dir.is_dir():
            raise _not_found(f"no run {_short(run)}")
        return entry

    def public(entry: RunEntry) -> dict[str, Any]:
        data = dict(entry.to_json())
        data.pop("path", None)
        return data

    def run_file(entry: RunEntry, name: str, what: str) -> bytes:
        try:
            return (Path(entry.path) / name).read_bytes()
        except FileNotFoundError:
            raise _not_found(f"run {entry.run_id} has no {what} yet") from None
        except OSError as err:
            log.error("cannot read %s of run %s: %s", name, entry.run_id, err.strerror or err)
            raise _not_found(f"run {entry.run_id}: {what} unreadable") from None

    @app.get("/v1/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/runs")
    def list_runs(token: TokenName) -> dict[str, Any]:
        return {"runs": [public(entry) for entry in runs.list()]}

    @app.get("/v1/runs/{run}")
    def run_detail(run: str, token: TokenName) -> dict[str, Any]:
        entry = entry_of(run)
        files = recorded_models(entry.path)
        rounds = sorted((f for f in files.values() if f.name != BEST_FILE), key=lambda f: f.round)
        best = files.get(BEST_FILE)
        data = public(entry)
        data["models"] = [f.to_json() for f in rounds]
        data["best"] = None if best is None else {"round": best.round, "sha256": best.sha256, "bytes": best.bytes}
        return data

    @app.get("/v1/runs/{run}/card")
    def card(run: str, token: TokenName) -> Response:
        entry = entry_of(run)
        return Response(run_file(entry, "model_card.json", "model card"), media_type="application/json")

    @app.get("/v1/runs/{run}/card.md")
    def card_markdown(run: str, token: TokenName) -> Response:
        entry = entry_of(run)
        return Response(run_file(entry, "model_card.md", "model card"), media_type="text/markdown; charset=utf-8")

    @app.get("/v1/runs/{run}/config")
    def config(run: str, token: TokenName) -> Response:
        entry = entry_of(run)
        return PlainTextResponse(run_file(entry, "config.toml", "config.toml").decode("utf-8", errors="replace"))

    @app.get("/v1/runs/{run}/models/{which}")
    def model(run: str, which: str, request: Request, token: TokenName) -> Response:
        entry = entry_of(run)
        files = recorded_models(entry.path)
        if which == "best":
            name = BEST_FILE
        elif ROUND_PARAM.fullmatch(which):
            wanted = int(which)
            by_round = {f.round: f.name for f in files.values() if f.name != BEST_FILE}
            name = by_round.get(wanted, f"round-{wanted:03d}.safetensors")
        else:
            raise _not_found(f"no model {_short(which)}: ask for 'best' or a round number")
        record = files.get(name)
        models_dir = Path(entry.path).resolve() / "models"
        path = (models_dir / name).resolve()
        if record is None:
            if path.parent == models_dir and path.is_file():
                log.warning("not serving %s of run %s: no hash recorded in its manifest", name, entry.run_id)
                return JSONResponse(
                    status_code=409,
                    content={"detail": f"run {entry.run_id}: {name} has no recorded sha256, so it is not served"},
                )
            raise _not_found(f"run {entry.run_id} has no weights {_short(which)}")
        if path.parent != models_dir:
            raise _not_found(f"run {entry.run_id} has no weights {_short(which)}")
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the streaming generator
        except OSError:
            raise _not_found(f"run {entry.run_id}: {name} is missing") from None
        size = os.fstat(handle.fileno()).st_size
        client = request.client.host if request.client else None
        row = {"time": _now(), "token": token, "run": entry.run_id, "round": record.round, "file": name}
        downloads.record({**row, "bytes": size, "client": client})
        log.info(
            "download: token %s, run %s, %s (round %d, %d bytes) to %s",
            *(token, entry.run_id, name, record.round, size, client or "-"),
        )

        def chunks() -> Iterator[bytes]:
            with handle:
                while block := handle.read(CHUNK_BYTES):
                    yield block

        headers = {
            SHA256_HEADER: record.sha256,
            ROUND_HEADER: str(record.round),
            "Content-Length": str(size),
            "Cache-Control": "no-store",
        }
        return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)

    return app


def _check_port_free(host: str, port: int) -> None:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as err:
        raise RegistryError(
            f"cannot listen on {host}:{port} ({err.strerror or err}); pick another --port or stop what uses it"
        ) from None


def serve(
    store: Path,
    certs_dir: Path | None,
    host: str = "0.0.0.0",
    port: int = DEFAULT_PORT,
    *,
    insecure: bool = False,
) -> None:
    """Serve the registry with uvicorn until SIGINT/SIGTERM.

    Args:
        store: the runs folder to serve.
        certs_dir: a ``fedward certs init`` folder; ``server.crt`` and ``server.key`` are used
            (TLS 1.2 or newer, Python's default cipher suites).
        host: address to listen on (``0.0.0.0``: every interface).
        port: TCP port, 1..65535.
        insecure: serve plain HTTP without ``certs_dir`` (tokens and weights travel in clear).

    Raises:
        ConfigError: if neither or both of ``certs_dir`` and ``insecure`` are given, or the port
            is out of range.
        RegistryError: if the store is not a folder, a certificate file is missing or
            unusable, or the port is taken.
    """
    import uvicorn

    if (certs_dir is None) == (not insecure):
        raise ConfigError("pass --certs (a folder made by 'fedward certs init') or, for development only, --insecure")
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be 1..65535; got {port}")
    store = Path(store)
    if not store.is_dir():
        raise RegistryError(f"{store} is not a folder; --store takes a runs folder (or --state a coordinator's state)")
    tls: dict[str, Any] = {}
    if certs_dir is not None:
        certs = FederationCerts.in_folder(certs_dir)
        missing = [p.name for p in (certs.server_cert, certs.server_key) if not p.is_file()]
        if missing:
            raise RegistryError(f"{', '.join(missing)} missing in {certs_dir}; create them with 'fedward certs init'")
        # An empty cipher string keeps Python's default suites (uvicorn's default would widen them).
        tls = {"ssl_certfile": str(certs.server_cert), "ssl_keyfile": str(certs.server_key), "ssl_ciphers": ""}
    _check_port_free(host, port)
    config = uvicorn.Config(
        create_app(store),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        **tls,
    )
    try:
        config.load()
    except (OSError, ssl.SSLError) as err:
        raise RegistryError(f"cannot load the TLS certificate and key from {certs_dir}: {err}") from None
    if config.ssl is not None:
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    scheme = "https" if config.ssl is not None else "http"
    log.info("model registry for %s on %s://%s:%d", store.resolve(), scheme, host, port)
    _run_until_signal(uvicorn.Server(config))


def _run_until_signal(server: Any) -> None:
    """Run a uvicorn server; a SIGINT/SIGTERM it shut down for gracefully ends with a normal return.

    uvicorn re-raises the signal to the handler that was installed before it once it has
    shut down; a recording handler is put there so that an operator's stop exits 0.
    """
    received: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, remember) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        log.info("model registry stopped (%s)", signal.Signals(received[0]).name)
