"""The model registry's HTTP API, in-process (FastAPI TestClient): tokens, 404s, downloads, logging."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from fixtures.registry import BEST_ROUND, RUN_ID, copy_store, flip_byte

from fedward.common.rundir.manifest import read_manifest
from fedward.server.registry.model_files import recorded_models
from fedward.server.registry.service import create_app
from fedward.server.registry.tokens import TokenStore

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*httpx2.*")

testclient = pytest.importorskip("fastapi.testclient")


@dataclass
class Registry:
    store: Path
    run_dir: Path
    tokens: TokenStore
    token: str
    client: testclient.TestClient

    def get(self, path: str, token: str | None = "default") -> object:
        token = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return self.client.get(path, headers=headers)


@pytest.fixture
def registry(template: Path, tmp_path: Path) -> Iterator[Registry]:
    store = copy_store(template, tmp_path / "runs")
    tokens = TokenStore.for_store(store)
    token = tokens.create("alice")
    with testclient.TestClient(create_app(store)) as client:
        yield Registry(store, store / RUN_ID, tokens, token, client)


def test_health_needs_no_token_and_says_nothing_else(registry: Registry) -> None:
    response = registry.get("/v1/health", token=None)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/runs",
        f"/v1/runs/{RUN_ID}",
        f"/v1/runs/{RUN_ID}/card",
        f"/v1/runs/{RUN_ID}/run",
        f"/v1/runs/{RUN_ID}/models/best",
        "/v1/runs/nope",
    ],
)
def test_no_token_is_401_with_bearer_challenge(registry: Registry, path: str) -> None:
    for headers in ({}, {"Authorization": "Basic YWxpY2U6c2VjcmV0"}, {"Authorization": "Bearer "}):
        response = registry.client.get(path, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert RUN_ID not in response.text


def test_unknown_and_revoked_tokens_are_401(registry: Registry) -> None:
    assert registry.get("/v1/runs", token="fwd_" + "A" * 43).status_code == 401
    assert registry.get("/v1/runs", token=registry.token + "x").status_code == 401
    assert registry.get("/v1/runs").status_code == 200
    registry.tokens.revoke("alice")
    response = registry.get(f"/v1/runs/{RUN_ID}/models/best")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert not (registry.store / "registry" / "downloads.jsonl").exists()


def test_a_corrupt_token_file_refuses_everyone(registry: Registry) -> None:
    registry.tokens.path.write_text("{not json", encoding="utf-8")
    assert registry.get("/v1/runs").status_code == 401


def test_run_list_never_shows_absolute_paths(registry: Registry) -> None:
    response = registry.get("/v1/runs")
    assert response.status_code == 200
    runs = response.json()["runs"]
    assert [r["run-id"] for r in runs] == [RUN_ID]
    assert runs[0]["status"] == "completed"
    assert runs[0]["best-round"] == BEST_ROUND
    assert "path" not in runs[0]
    assert str(registry.store) not in response.text


def test_run_detail_lists_models_with_recorded_hashes(registry: Registry) -> None:
    response = registry.get(f"/v1/runs/{RUN_ID}")
    assert response.status_code == 200
    data = response.json()
    manifest = read_manifest(registry.run_dir)
    assert [m["round"] for m in data["models"]] == [0, 1, 2]
    for model in data["models"]:
        assert model["file"] == f"round-{model['round']:03d}.safetensors"
        assert model["sha256"] == manifest[model["file"]]["sha256"]
        assert model["bytes"] == manifest[model["file"]]["bytes"]
    best = manifest["best.safetensors"]
    assert data["best"] == {"round": BEST_ROUND, "sha256": best["sha256"], "bytes": best["bytes"]}
    assert "path" not in data
    assert str(registry.store) not in response.text


def test_card_markdown_and_config(registry: Registry) -> None:
    card = registry.get(f"/v1/runs/{RUN_ID}/card")
    assert card.status_code == 200
    assert card.json() == json.loads((registry.run_dir / "model_card.json").read_text(encoding="utf-8"))
    markdown = registry.get(f"/v1/runs/{RUN_ID}/card.md")
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text == (registry.run_dir / "model_card.md").read_text(encoding="utf-8")
    config = registry.get(f"/v1/runs/{RUN_ID}/config")
    assert config.status_code == 200
    assert config.text == (registry.run_dir / "config.toml").read_text(encoding="utf-8")


def test_run_json_is_served_as_json(registry: Registry) -> None:
    response = registry.get(f"/v1/runs/{RUN_ID}/run")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == (registry.run_dir / "run.json").read_bytes()
    schema = response.json()["schema"]
    assert {k: schema[k] for k in ("task", "classes", "channels")} == {
        "task": "binary",
        "classes": ["normal", "pneumonia"],
        "channels": 1,
    }
    assert registry.get(f"/v1/runs/{RUN_ID}/run", token=None).status_code == 401
    assert registry.get("/v1/runs/nope/run").status_code == 404


def test_a_run_without_run_json_is_404_for_it(registry: Registry) -> None:
    (registry.run_dir / "run.json").unlink()
    response = registry.get(f"/v1/runs/{RUN_ID}/run")
    assert response.status_code == 404
    assert response.json()["detail"] == f"run {RUN_ID} has no run.json yet"
    assert registry.get(f"/v1/runs/{RUN_ID}/card").status_code == 200


def test_a_run_without_card_is_404_for_the_card(registry: Registry) -> None:
    (registry.run_dir / "model_card.json").unlink()
    response = registry.get(f"/v1/runs/{RUN_ID}/card")
    assert response.status_code == 404
    assert "model card" in response.json()["detail"]


@pytest.mark.parametrize(("which", "file"), [("best", "best.safetensors"), ("1", "round-001.safetensors")])
def test_download_streams_the_file_with_its_recorded_hash_and_is_logged(
    registry: Registry, which: str, file: str
) -> None:
    response = registry.get(f"/v1/runs/{RUN_ID}/models/{which}")
    assert response.status_code == 200
    data = (registry.run_dir / "models" / file).read_bytes()
    assert response.content == data
    assert response.headers["X-Fedward-SHA256"] == hashlib.sha256(data).hexdigest()
    assert response.headers["X-Fedward-Round"] == str(BEST_ROUND if which == "best" else 1)
    assert response.headers["Content-Length"] == str(len(data))
    lines = (registry.store / "registry" / "downloads.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert row["token"] == "alice"
    assert row["run"] == RUN_ID
    assert row["round"] == (BEST_ROUND if which == "best" else 1)
    assert row["bytes"] == len(data)
    assert row["time"] and "client" in row
    assert registry.token not in lines[0]


def test_the_header_hash_is_the_recorded_one_not_the_served_files(registry: Registry) -> None:
    recorded = read_manifest(registry.run_dir)["best.safetensors"]["sha256"]
    flip_byte(registry.run_dir / "models" / "best.safetensors")
    response = registry.get(f"/v1/runs/{RUN_ID}/models/best")
    assert response.status_code == 200
    assert response.headers["X-Fedward-SHA256"] == recorded
    assert hashlib.sha256(response.content).hexdigest() != recorded


def test_a_file_without_recorded_hash_is_not_served(registry: Registry) -> None:
    manifest_path = registry.run_dir / "models" / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    del manifest["files"]["round-002.safetensors"]
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    response = registry.get(f"/v1/runs/{RUN_ID}/models/2")
    assert response.status_code == 409
    assert "no recorded sha256" in response.json()["detail"]
    assert not response.content.startswith((registry.run_dir / "models" / "round-002.safetensors").read_bytes()[:8])


def test_manifest_entries_with_unsafe_names_are_ignored(registry: Registry) -> None:
    manifest_path = registry.run_dir / "models" / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    entry = {"round": 7, "sha256": "0" * 64, "bytes": 10}
    manifest["files"].update({"../../registry/tokens.json": entry, "/etc/passwd": entry, "round-7.json": entry})
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    assert set(recorded_models(registry.run_dir)) == {
        "best.safetensors",
        "round-000.safetensors",
        "round-001.safetensors",
        "round-002.safetensors",
    }
    assert registry.get(f"/v1/runs/{RUN_ID}/models/7").status_code == 404


TRAVERSALS = [
    "/v1/runs/nope",
    "/v1/runs/nope/models/best",
    "/v1/runs/%2e%2e",
    "/v1/runs/%2e%2e/card",
    "/v1/runs/%2E%2E/config",
    "/v1/runs/..%2f..%2fetc%2fpasswd",
    "/v1/runs/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/v1/runs/%252e%252e%252fregistry/config",
    "/v1/runs/%252e%252e",
    "/v1/runs/%2fetc%2fpasswd",
    "/v1/runs/%2Fetc/config",
    "/v1/runs/registry",
    "/v1/runs/registry/config",
    f"/v1/runs/{RUN_ID}%00",
    f"/v1/runs/{RUN_ID}%2f..%2f{RUN_ID}/card",
    f"/v1/runs/{RUN_ID}/models/..%2fconfig.toml",
    f"/v1/runs/{RUN_ID}/models/%2e%2e%2fmodel_card.json",
    f"/v1/runs/{RUN_ID}/models/%252e%252e%252fconfig.toml",
    f"/v1/runs/{RUN_ID}/models/best.safetensors",
    f"/v1/runs/{RUN_ID}/models/round-001.safetensors",
    f"/v1/runs/{RUN_ID}/models/manifest.json",
    f"/v1/runs/{RUN_ID}/models/best.json",
    f"/v1/runs/{RUN_ID}/models/-1",
    f"/v1/runs/{RUN_ID}/models/1.5",
    f"/v1/runs/{RUN_ID}/models/0x1",
    f"/v1/runs/{RUN_ID}/models/%201",
    f"/v1/runs/{RUN_ID}/models/99",
    f"/v1/runs/{RUN_ID}/models/99999999999999999999",
    f"/v1/runs/{RUN_ID}/models/",
    f"/v1/runs/{RUN_ID}/status.json",
    f"/v1/runs/{RUN_ID}/models",
    "/v1/runs//etc/passwd",
    "/etc/passwd",
    "/docs",
    "/openapi.json",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_unknown_ids_and_path_tricks_are_404(registry: Registry, path: str) -> None:
    response = registry.get(path)
    assert response.status_code == 404, (path, response.status_code, response.text[:200])
    assert len(response.content) < 300
    assert "detail" in response.json()
    for secret in ("sha256", "[federation]", "pneumonia", registry.token):
        assert secret not in response.text


def raw_get(app: Any, raw_path: str, token: str) -> tuple[int, bytes]:
    """Send a GET with a raw path that no HTTP client library would normalise, as uvicorn
    passes it (``path`` percent-decoded once, dot segments kept)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("ascii"),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"registry"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9095),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


RAW_TRAVERSALS = [
    "/v1/runs/..",
    "/v1/runs/.",
    "/v1/runs/../../etc/passwd",
    "/v1/runs/../runs/registry/config",
    f"/v1/runs/{RUN_ID}/../{RUN_ID}/card",
    f"/v1/runs/{RUN_ID}/models/../config.toml",
    f"/v1/runs/{RUN_ID}/models/..",
    "/v1/runs/./config",
    "/v1/../v1/runs",
    "/v1/runs/%2e%2e/card",
    "/v1/runs/%252e%252e/card",
]


@pytest.mark.parametrize("raw_path", RAW_TRAVERSALS)
def test_raw_dot_segments_are_404(registry: Registry, raw_path: str) -> None:
    status, body = raw_get(registry.client.app, raw_path, registry.token)
    assert status == 404, (raw_path, status, body[:200])
    assert b"sha256" not in body and b"[federation]" not in body


def test_the_registry_writes_nothing_into_run_directories(registry: Registry) -> None:
    def snapshot() -> dict[str, bytes]:
        files = [p for p in registry.run_dir.rglob("*") if p.is_file()]
        return {str(p.relative_to(registry.run_dir)): p.read_bytes() for p in files}

    before = snapshot()
    paths = ("/v1/runs", f"/v1/runs/{RUN_ID}", f"/v1/runs/{RUN_ID}/card", f"/v1/runs/{RUN_ID}/run")
    for path in (*paths, f"/v1/runs/{RUN_ID}/models/best"):
        assert registry.get(path).status_code == 200
    assert snapshot() == before
    written = {p.name for p in registry.store.iterdir()} - {RUN_ID}
    assert written <= {"registry", "runs.sqlite", "runs.sqlite-wal", "runs.sqlite-shm"}
