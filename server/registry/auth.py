"""Who is asking: the one check every registry endpoint and dashboard answer goes through.

A request is let in with either ``Authorization: Bearer <token>`` (the evaluators'
clients) or the dashboard's session cookie (a browser that signed in with a token,
:mod:`fedward.server.registry.dashboard.sessions`). Both end at the token file, read on
every request, so a revoked token is refused at once, with its sessions.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from fedward.server.registry.dashboard.sessions import COOKIE_NAME, session_name
from fedward.server.registry.tokens import TokenError, TokenStore

log = logging.getLogger(__name__)


def unauthorized(detail: str) -> HTTPException:
    """A 401 asking for a bearer token."""
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


def authorize(request: Request) -> str:
    """FastAPI dependency: the token name of the request's bearer token or session; 401 otherwise.

    A request with an ``Authorization`` header is judged by it alone; one without, by its
    session cookie.
    """
    header = request.headers.get("authorization")
    if header is None and COOKIE_NAME in request.cookies:
        return _session(request)
    scheme, _, value = (header or "").partition(" ")
    token = value.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("a bearer token (Authorization: Bearer <token>) or a dashboard sign-in is required")
    tokens: TokenStore = request.app.state.tokens
    try:
        name = tokens.verify(token)
    except TokenError as err:
        log.error("refusing every request: %s", err)
        raise unauthorized("the registry cannot check tokens right now") from None
    if name is None:
        log.info("refused %s %s from %s: unknown or revoked token", request.method, request.url.path, _client(request))
        raise unauthorized("unknown or revoked token")
    return name


def _session(request: Request) -> str:
    """The token name of the request's dashboard session; 401 if it is unknown, expired or revoked."""
    try:
        name = session_name(request)
    except TokenError as err:
        log.error("refusing every request: %s", err)
        raise unauthorized("the registry cannot check tokens right now") from None
    if name is None:
        raise unauthorized("the session has expired or its token was revoked; sign in again")
    return name


TokenName = Annotated[str, Depends(authorize)]
"""Endpoint parameter: the caller's token name (the request is refused with 401 without one)."""
