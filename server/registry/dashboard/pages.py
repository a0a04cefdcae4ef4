"""The dashboard's HTML pages: sign-in, sign-out, the runs list and a run's page (server-rendered shells).

The pages hold no figures: the script (``static/dashboard.js``) fetches them from
``/ui/api`` and draws them. A page request without a live session is redirected (303)
to the sign-in page, which shows nothing about the runs. Sign-in takes the token from a
POSTed form body (never from a URL, never logged); sign-in and sign-out refuse a POST
whose ``Origin`` is another site. Everything interpolated into HTML is escaped.
"""

from __future__ import annotations

import html
import logging
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fedward.server.registry.dashboard.run_views import RunViews
from fedward.server.registry.dashboard.sessions import (
    COOKIE_NAME,
    SessionStore,
    clear_session_cookie,
    same_origin,
    session_name_or_none,
    set_session_cookie,
)
from fedward.server.registry.tokens import TokenError

log = logging.getLogger(__name__)

SIGNIN_PATH = "/ui/signin"
SIGNOUT_PATH = "/ui/signout"
RUNS_PAGE = "/ui/runs"
STATIC_PREFIX = "/ui/static"
POLL_MS = 3000
"""How often the pages poll ``/ui/api``, milliseconds."""
MAX_FORM_BYTES = 4096


def _page(title: str, page: str, body: str, *, signed_in: str | None = None, data: str = "") -> HTMLResponse:
    """A whole HTML document: head (local CSS, local script), header, ``body`` (already escaped)."""
    signout = (
        f'<form method="post" action="{SIGNOUT_PATH}" class="signout">'
        f'<span class="who">{html.escape(signed_in)}</span> <button type="submit">Sign out</button></form>'
        if signed_in
        else ""
    )
    document = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · fedward</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{STATIC_PREFIX}/dashboard.css">
<script src="{STATIC_PREFIX}/dashboard.js" defer></script>
</head>
<body data-page="{page}" data-poll-ms="{POLL_MS}"{data}>
<header><a class="brand" href="{RUNS_PAGE}">fedward</a>{signout}</header>
<main>
{body}
</main>
</body>
</html>
"""
    return HTMLResponse(document)


def _signin_page(message: str = "", status_code: int = 200) -> HTMLResponse:
    note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    body = f"""<h1>Sign in</h1>
<p>Sign in with a registry token (<code>fedward registry token create NAME</code> on the coordinator).</p>
{note}
<form method="post" action="{SIGNIN_PATH}" class="signin" autocomplete="off">
<label for="token">Token</label>
<input id="token" name="token" type="password" required autofocus spellcheck="false">
<button type="submit" id="signin">Sign in</button>
</form>"""
    response = _page("Sign in", "signin", body)
    response.status_code = status_code
    return response


def _to_signin() -> RedirectResponse:
    return RedirectResponse(SIGNIN_PATH, status_code=303)


def _runs_page(name: str) -> HTMLResponse:
    body = """<h1>Runs</h1>
<table id="runs" class="data">
<thead><tr><th>Run</th><th>Status</th><th>Round</th><th>Best val AUC</th><th>Test AUC</th><th>Epsilon</th>
<th>Dataset</th><th>Model</th><th>Started</th></tr></thead>
<tbody></tbody>
</table>
<p id="empty" hidden>No runs in this folder yet.</p>"""
    return _page("Runs", "runs", body, signed_in=name)


def _run_page(name: str, run: str) -> HTMLResponse:
    body = f"""<p><a href="{RUNS_PAGE}">All runs</a></p>
<h1>Run <code>{html.escape(run)}</code></h1>
<dl id="summary" class="summary"></dl>
<section><h2>Learning curves</h2>
<div class="charts">
<figure><figcaption>Server: validation and test AUC</figcaption><svg id="curve-server" class="chart"></svg>
<div class="legend" id="legend-server"></div></figure>
<figure><figcaption>Server: training loss</figcaption><svg id="curve-loss" class="chart"></svg>
<div class="legend" id="legend-loss"></div></figure>
<figure><figcaption>Hospitals: validation AUC</figcaption><svg id="curve-hospitals" class="chart"></svg>
<div class="legend" id="legend-hospitals"></div></figure>
</div></section>
<section><h2>Privacy budget</h2><div id="privacy"></div></section>
<section><h2>Hospitals</h2>
<table id="hospitals" class="data">
<thead><tr><th>Hospital</th><th>Online</th><th>Last seen</th><th>fedward</th><th>Training images</th>
<th>Validation images</th><th>Train s (last round)</th><th>Train s (per round)</th><th>Rejected</th><th>Failed</th>
<th>Reasons</th></tr></thead>
<tbody></tbody>
</table></section>
<section><h2>Downloads</h2><ul id="downloads"></ul></section>
<section><h2>Model card</h2><div id="card"><p class="muted">Written when the run ends.</p></div></section>"""
    return _page(f"Run {run}", "run", body, signed_in=name, data=f' data-run="{html.escape(run)}"')


def add_page_routes(app: FastAPI, views: RunViews, sessions: SessionStore) -> None:
    """Add sign-in/out and the two pages to ``app``."""

    @app.get("/")
    @app.get("/ui")
    def home() -> RedirectResponse:
        return RedirectResponse(RUNS_PAGE, status_code=303)

    @app.get(SIGNIN_PATH)
    def signin_form() -> HTMLResponse:
        return _signin_page()

    @app.post(SIGNIN_PATH)
    async def signin(request: Request) -> Response:
        return await _sign_in(request, sessions)

    @app.post(SIGNOUT_PATH)
    def signout(request: Request) -> Response:
        if not same_origin(request):
            return Response("cross-site request refused", status_code=403)
        session_id = request.cookies.get(COOKIE_NAME)
        if session_id:
            sessions.end(session_id)
        response = _to_signin()
        clear_session_cookie(response)
        return response

    @app.get(RUNS_PAGE)
    def runs_page(request: Request) -> Response:
        name = session_name_or_none(request)
        return _to_signin() if name is None else _runs_page(name)

    @app.get(RUNS_PAGE + "/{run}")
    def run_page(run: str, request: Request) -> Response:
        name = session_name_or_none(request)
        if name is None:
            return _to_signin()
        if views.run_dir(run) is None:
            return _page("No such run", "missing", "<h1>No such run</h1>", signed_in=name)
        return _run_page(name, run)


async def _sign_in(request: Request, sessions: SessionStore) -> Response:
    """Check the POSTed token; on success set the session cookie and go to the runs list."""
    if not same_origin(request):
        return Response("cross-site sign-in refused", status_code=403)
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return _signin_page("That is not a registry token.", 400)
    token = (parse_qs(body.decode("utf-8", errors="replace")).get("token") or [""])[0].strip()
    try:
        signed = sessions.sign_in(token) if token else None
    except TokenError as err:
        log.error("dashboard sign-in impossible: %s", err)
        return _signin_page("The registry cannot check tokens right now.", 503)
    client = request.client.host if request.client else "-"
    if signed is None:
        log.info("dashboard sign-in refused from %s: unknown or revoked token", client)
        return _signin_page("Unknown or revoked token.", 401)
    session_id, name = signed
    log.info("dashboard sign-in: token %s from %s", name, client)
    response = RedirectResponse(RUNS_PAGE, status_code=303)
    set_session_cookie(response, session_id, sessions.lifetime_s)
    return response
