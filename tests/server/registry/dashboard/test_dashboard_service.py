"""The dashboard in-process (FastAPI TestClient over https://testserver): sign-in, sessions, pages, API, headers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures.registry import RUN_ID, copy_store

from fedward.server.registry.dashboard.run_views import SERVER_KEYS
from fedward.server.registry.dashboard.sessions import COOKIE_NAME
from fedward.server.registry.service import create_app
from fedward.server.registry.tokens import TokenStore

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*httpx2.*")

testclient = pytest.importorskip("fastapi.testclient")

ORIGIN = {"Origin": "https://testserver"}
API_PATHS = ["/ui/api/runs", f"/ui/api/runs/{RUN_ID}", f"/ui/api/runs/{RUN_ID}/card", "/ui/api/runs/nope"]
PAGE_PATHS = ["/ui/runs", f"/ui/runs/{RUN_ID}", "/ui/runs/nope"]


@dataclass
class Dashboard:
    store: Path
    tokens: TokenStore
    token: str
    client: Any

    def sign_in(self, token: str | None = None, headers: dict[str, str] | None = None) -> Any:
        return self.client.post(
            "/ui/signin",
            content=f"token={token or self.token}",
            headers={"Content-Type": "application/x-www-form-urlencoded", **(ORIGIN if headers is None else headers)},
            follow_redirects=False,
        )


@pytest.fixture
def dashboard(template: Path, tmp_path: Path) -> Iterator[Dashboard]:
    store = copy_store(template, tmp_path / "runs")
    tokens = TokenStore.for_store(store)
    token = tokens.create("alice")
    app = create_app(store, session_seconds=3600)
    with testclient.TestClient(app, base_url="https://testserver") as client:
        yield Dashboard(store, tokens, token, client)


def _no_run_data(text: str) -> None:
    assert RUN_ID not in text
    assert "val-auc" not in text and "pneumonia" not in text.lower()


def test_sign_in_sets_a_strict_session_cookie(dashboard: Dashboard) -> None:
    response = dashboard.sign_in()
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/runs"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite", "max-age", "path"} <= attributes.keys()
    assert attributes["samesite"].lower() == "samesite=strict"
    assert attributes["max-age"] == "Max-Age=3600"
    assert attributes["path"] == "Path=/"
    assert dashboard.token not in cookie
    page = dashboard.client.get("/ui/runs")
    assert page.status_code == 200 and 'data-page="runs"' in page.text


def test_a_wrong_token_or_a_cross_site_post_gets_no_session(dashboard: Dashboard) -> None:
    response = dashboard.sign_in("fwd_" + "A" * 43)
    assert response.status_code == 401 and "set-cookie" not in response.headers
    assert "Unknown or revoked token" in response.text
    response = dashboard.sign_in(headers={"Origin": "https://evil.example"})
    assert response.status_code == 403 and "set-cookie" not in response.headers
    assert dashboard.client.get("/ui/api/runs").status_code == 401


@pytest.mark.parametrize("path", API_PATHS)
def test_every_api_answer_is_401_without_a_session(dashboard: Dashboard, path: str) -> None:
    response = dashboard.client.get(path)
    assert response.status_code == 401
    _no_run_data(response.text)
    dashboard.client.cookies.set(COOKIE_NAME, "made-up", domain="testserver")
    assert dashboard.client.get(path).status_code == 401


@pytest.mark.parametrize("path", PAGE_PATHS)
def test_pages_without_a_session_redirect_to_sign_in_and_show_no_run_data(dashboard: Dashboard, path: str) -> None:
    response = dashboard.client.get(path, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/signin"
    _no_run_data(response.text)
    signin = dashboard.client.get(path)
    assert signin.status_code == 200 and 'data-page="signin"' in signin.text
    _no_run_data(signin.text)


HOSPITAL_ROWS = [
    {"round": 1, "hospital": "st-olav", "phase": "train", "num-examples": 120.0, "train-seconds": 3.25},
    {"round": 1, "hospital": "st-olav", "phase": "evaluate", "num-examples": 30.0, "val-auc": 0.75},
    {"round": 2, "hospital": "st-olav", "phase": "train", "num-examples": 120.0, "train-seconds": 2.5},
    {"round": 2, "hospital": "haukeland", "phase": "rejected", "reason": "update has NaN values"},
]


def test_the_api_answers_with_a_session(dashboard: Dashboard) -> None:
    rows = dashboard.store / RUN_ID / "metrics" / "hospitals.jsonl"
    rows.write_text("".join(json.dumps(row) + "\n" for row in HOSPITAL_ROWS))
    dashboard.sign_in()
    runs = dashboard.client.get("/ui/api/runs").json()["runs"]
    assert [r["run-id"] for r in runs] == [RUN_ID]
    assert "path" not in runs[0]
    run = dashboard.client.get(f"/ui/api/runs/{RUN_ID}").json()
    assert run["run"]["rounds-done"] == run["run"]["rounds"] == 2
    assert [row["round"] for row in run["server"]][-2:] == [1, 2]
    assert set(run["server"][-1]) <= set(SERVER_KEYS)
    hospitals = {h["name"]: h for h in run["hospitals"]}
    assert hospitals["haukeland"]["rejected"] == 1 and hospitals["haukeland"]["last-round"] is None
    assert hospitals["haukeland"]["reasons"] == [{"round": 2, "phase": "rejected", "reason": "update has NaN values"}]
    olav = hospitals["st-olav"]
    assert (olav["train-images"], olav["val-images"], olav["last-round"]) == (120, 30, 2)
    assert olav["train-seconds"] == [[1, 3.25], [2, 2.5]] and olav["val-auc"] == [[1, 0.75]]
    assert olav["online"] is False  # the run is completed
    assert olav["last-seen"] == run["server"][-1]["time"]
    assert olav["fedward"] is None  # not recorded by the run
    assert run["downloads"] == {"best-model": True, "card-md": True, "card-json": True}
    card = dashboard.client.get(f"/ui/api/runs/{RUN_ID}/card").json()
    assert card == json.loads((dashboard.store / RUN_ID / "model_card.json").read_text())
    assert dashboard.client.get("/ui/api/runs/nope").status_code == 404
    assert dashboard.client.get("/ui/api/runs/..").status_code == 404
    page = dashboard.client.get(f"/ui/runs/{RUN_ID}")
    assert page.status_code == 200 and f'data-run="{RUN_ID}"' in page.text


def test_the_session_downloads_the_best_model_and_card_from_the_registry_routes(dashboard: Dashboard) -> None:
    assert dashboard.client.get(f"/v1/runs/{RUN_ID}/models/best").status_code == 401
    dashboard.sign_in()
    weights = dashboard.client.get(f"/v1/runs/{RUN_ID}/models/best")
    assert weights.status_code == 200
    assert weights.content == (dashboard.store / RUN_ID / "models" / "best.safetensors").read_bytes()
    assert dashboard.client.get(f"/v1/runs/{RUN_ID}/card.md").status_code == 200
    rows = (dashboard.store / "registry" / "downloads.jsonl").read_text().splitlines()
    assert json.loads(rows[-1])["token"] == "alice"


def test_revoking_the_token_ends_its_sessions(dashboard: Dashboard) -> None:
    dashboard.sign_in()
    assert dashboard.client.get("/ui/api/runs").status_code == 200
    dashboard.tokens.revoke("alice")
    assert dashboard.client.get("/ui/api/runs").status_code == 401
    assert dashboard.client.get("/ui/runs", follow_redirects=False).status_code == 303
    assert dashboard.client.get(f"/v1/runs/{RUN_ID}/models/best").status_code == 401
    dashboard.tokens.create("alice")  # a new token of the same name does not revive the old session
    assert dashboard.client.get("/ui/api/runs").status_code == 401


def test_an_expired_session_is_refused(dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from fedward.server.registry.dashboard import sessions

    dashboard.sign_in()
    assert dashboard.client.get("/ui/api/runs").status_code == 200
    later = time.monotonic() + 3601
    monkeypatch.setattr(sessions.time, "monotonic", lambda: later)
    assert dashboard.client.get("/ui/api/runs").status_code == 401
    assert dashboard.client.get("/ui/runs", follow_redirects=False).headers["location"] == "/ui/signin"


def test_sign_out_ends_the_session(dashboard: Dashboard) -> None:
    dashboard.sign_in()
    cookie = dashboard.client.cookies.get(COOKIE_NAME)
    response = dashboard.client.post("/ui/signout", headers=ORIGIN, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/signin"
    dashboard.client.cookies.set(COOKIE_NAME, cookie, domain="testserver")  # a copied cookie is dead too
    assert dashboard.client.get("/ui/api/runs").status_code == 401


def test_security_headers_and_local_assets(dashboard: Dashboard) -> None:
    for path in ("/ui/signin", "/ui/api/runs", "/v1/health", "/ui/static/dashboard.js"):
        response = dashboard.client.get(path)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
    signin = dashboard.client.get("/ui/signin")
    assert signin.headers["cache-control"] == "no-store"
    assert "<script>" not in signin.text and "http://" not in signin.text and "https://" not in signin.text
    script = dashboard.client.get("/ui/static/dashboard.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    style = dashboard.client.get("/ui/static/dashboard.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    for asset in (script.text, style.text):
        assert "//cdn" not in asset and "https://" not in asset and "@import" not in asset
    assert dashboard.client.get("/ui/static/..%2Fsessions.py").status_code == 404
    assert dashboard.client.get("/ui/static/sessions.py").status_code == 404


def test_polling_an_unchanged_run_parses_nothing_again(dashboard: Dashboard) -> None:
    dashboard.sign_in()
    views = dashboard.client.app.state.run_views
    first = dashboard.client.get(f"/ui/api/runs/{RUN_ID}").json()
    parses = views.cache.parses
    for _ in range(5):
        assert dashboard.client.get(f"/ui/api/runs/{RUN_ID}").json() == first
    assert views.cache.parses == parses
    with open(dashboard.store / RUN_ID / "metrics" / "server.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"round": 3, "val-auc": 0.5}) + "\n")
    assert dashboard.client.get(f"/ui/api/runs/{RUN_ID}").json()["server"][-1] == {"round": 3, "val-auc": 0.5}
    assert views.cache.parses > parses


def test_the_hospitals_table_shows_the_versions_the_run_enrolled(dashboard: Dashboard) -> None:
    rows = dashboard.store / RUN_ID / "metrics" / "hospitals.jsonl"
    rows.write_text("".join(json.dumps(row) + "\n" for row in HOSPITAL_ROWS))
    enrolled = {"name": "st-olav", "train_images": 120, "val_images": 30, "fedward": "0.2.0", "device": "cuda"}
    (dashboard.store / RUN_ID / "hospitals.json").write_text(json.dumps({"hospitals": [enrolled]}))
    dashboard.sign_in()
    hospitals = {h["name"]: h for h in dashboard.client.get(f"/ui/api/runs/{RUN_ID}").json()["hospitals"]}
    assert hospitals["st-olav"]["fedward"] == "0.2.0" and hospitals["haukeland"]["fedward"] is None
