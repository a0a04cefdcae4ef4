"""The registry client requests exactly the paths the registry app routes, all taken from the shared contract."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fixtures.registry import RUN_ID, copy_store
from starlette.routing import Match

from fedward.client.evaluator.pull import pull
from fedward.client.evaluator.registry_client import RegistryClient, RegistryRequestError
from fedward.common import registry_api as api

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*httpx2.*")

testclient = pytest.importorskip("fastapi.testclient")
URL = "http://registry.test"


def routed(app: object, path: str) -> str | None:
    """The route template of the app that takes ``GET path``, as uvicorn passes it (decoded)."""
    scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
    for route in app.routes:  # type: ignore[attr-defined]
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(route.path)
    return None


def test_the_client_requests_only_routed_paths_and_every_per_run_one(template: Path, tmp_path: Path) -> None:
    from fedward.server.registry.service import create_app
    from fedward.server.registry.tokens import TokenStore

    store = copy_store(template, tmp_path / "runs")
    token = TokenStore.for_store(store).create("evaluator")
    app = create_app(store)
    requested: list[str] = []

    def remember(request: httpx.Request) -> None:
        requested.append(request.url.path)

    with testclient.TestClient(app, base_url=URL) as http:
        http.event_hooks = {"request": [remember], "response": []}
        with RegistryClient(URL, token, insecure=True, http=http) as client:
            client.runs()
        pull(URL, token, RUN_ID, api.BEST, tmp_path / "best", insecure=True, http=http)
        pull(URL, token, RUN_ID, 2, tmp_path / "round-2", insecure=True, http=http)
    templates = {path: routed(app, path) for path in requested}
    assert None not in templates.values(), templates
    expected = {api.RUNS_PATH, api.RUN_ROUTE, api.MODEL_ROUTE, *(api.run_file_route(f) for f in api.RUN_FILES)}
    assert set(templates.values()) == expected
    assert f"/v1/runs/{RUN_ID}/run" in requested
    assert f"/v1/runs/{RUN_ID}/models/best" in requested and f"/v1/runs/{RUN_ID}/models/2" in requested


def test_a_run_id_with_a_slash_stays_one_segment(template: Path, tmp_path: Path) -> None:
    from fedward.server.registry.service import create_app
    from fedward.server.registry.tokens import TokenStore

    store = copy_store(template, tmp_path / "runs")
    token = TokenStore.for_store(store).create("evaluator")
    requested: list[str] = []
    with testclient.TestClient(create_app(store), base_url=URL) as http:
        http.event_hooks = {"request": [lambda r: requested.append(r.url.raw_path.decode())], "response": []}
        with (
            RegistryClient(URL, token, insecure=True, http=http) as client,
            pytest.raises(RegistryRequestError, match="no run"),
        ):
            client.run("../x")
    assert requested == ["/v1/runs/..%2Fx"]
