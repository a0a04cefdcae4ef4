"""Mount the dashboard on the registry's app: pages, JSON API, its own script and style, security headers.

Every response of the app (registry endpoints too) gets a strict Content-Security-Policy
(``default-src 'self'``: no script, style, image or connection from anywhere else, no
inline script, no framing) and ``X-Content-Type-Options: nosniff``; pages and API answers
are ``Cache-Control: no-store``. The script and the style sheet are files of this package
(hospitals' networks are closed: nothing comes from a CDN), served without a session:
they hold no run data.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fedward.server.registry.dashboard.api import add_api_routes
from fedward.server.registry.dashboard.file_cache import FileCache
from fedward.server.registry.dashboard.pages import STATIC_PREFIX, add_page_routes
from fedward.server.registry.dashboard.run_views import RunViews
from fedward.server.registry.dashboard.sessions import DEFAULT_SESSION_SECONDS, SessionStore
from fedward.server.registry.tokens import TokenStore

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make browsers send "Origin: null" on POSTs
    "X-Frame-Options": "DENY",
}
STATIC_FILES = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
"""The only files served from ``static/``, by name, with their media types."""


def add_dashboard(
    app: FastAPI, root: Path, tokens: TokenStore, session_seconds: float = DEFAULT_SESSION_SECONDS
) -> None:
    """Add the dashboard's routes, session store and security headers to the registry's app.

    Args:
        app: the registry's app (its ``state.tokens`` is the token store).
        root: the runs folder, resolved.
        tokens: the token store sessions are checked against.
        session_seconds: how long a sign-in lasts, > 0.
    """
    sessions = SessionStore(tokens, session_seconds)
    views = RunViews(root, FileCache())
    app.state.sessions = sessions
    app.state.run_views = views
    add_page_routes(app, views, sessions)
    add_api_routes(app, views)
    _add_static_route(app)
    app.add_middleware(SecurityHeaders)


def _add_static_route(app: FastAPI) -> None:
    files = {name: resources.files(__package__).joinpath("static", name).read_bytes() for name in STATIC_FILES}

    @app.get(STATIC_PREFIX + "/{name}")
    def static(name: str) -> Response:
        if name not in files:
            raise HTTPException(status_code=404, detail="no such file")
        return Response(files[name], media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})


class SecurityHeaders:
    """ASGI middleware: the headers of the module docstring on every HTTP response.

    Args:
        app: the wrapped ASGI application.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
