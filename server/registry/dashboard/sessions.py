"""Dashboard sign-in sessions: a registry token exchanged for an expiring, server-side session cookie.

A session id is :func:`secrets.token_urlsafe` of 32 random bytes (256 bits); the server
keeps only its SHA-256, in memory, with the token's name, the token's own SHA-256 and an
expiry time. Every request re-checks that token hash against the token file
(:meth:`fedward.server.registry.tokens.TokenStore.verify_hash`), so ``fedward registry
token revoke`` (or replacing the token with ``--force``) ends its sessions at their next
request. Sessions do not survive a restart of the registry (sign in again).

The cookie is ``HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=<expiry>``: scripts
cannot read it, it travels only over HTTPS (browsers treat ``http://localhost`` as secure
too) and never with a request another site starts. Sign-in and sign-out are POSTs whose
``Origin`` must be the registry's own.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from fedward.server.registry.tokens import TokenError, TokenStore, hash_token

COOKIE_NAME = "fedward_session"
DEFAULT_SESSION_SECONDS = 8 * 3600
"""How long a session lasts after sign-in (``fedward registry serve --session-hours``)."""
MAX_SESSIONS = 10_000
"""Sessions kept at most; the oldest are dropped beyond it (each sign-in makes one)."""
SESSION_BYTES = 32


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser.

    Attributes:
        token_name: the name of the token it signed in with.
        token_sha256: that token's SHA-256 (checked against the token file on every request).
        expires: :func:`time.monotonic` time after which the session is refused.
    """

    token_name: str
    token_sha256: str
    expires: float


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


class SessionStore:
    """The registry's sessions, in memory, keyed by the SHA-256 of their ids.

    Args:
        tokens: the token file sessions are checked against.
        lifetime_s: seconds a session lasts (and the cookie's ``Max-Age``), > 0.
    """

    def __init__(self, tokens: TokenStore, lifetime_s: float = DEFAULT_SESSION_SECONDS) -> None:
        if lifetime_s <= 0:
            raise ValueError(f"a session lifetime must be > 0 seconds; got {lifetime_s}")
        self.tokens = tokens
        self.lifetime_s = float(lifetime_s)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def sign_in(self, token: str) -> tuple[str, str] | None:
        """Exchange a valid token for a new session.

        Returns:
            ``(session id, token name)``, or ``None`` when the token is unknown or revoked.

        Raises:
            TokenError: if the token file cannot be read.
        """
        token_sha256 = hash_token(token)
        name = self.tokens.verify_hash(token_sha256)
        if name is None:
            return None
        session_id = secrets.token_urlsafe(SESSION_BYTES)
        now = time.monotonic()
        with self._lock:
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
            while len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
            self._sessions[_key(session_id)] = Session(name, token_sha256, now + self.lifetime_s)
        return session_id, name

    def token_name(self, session_id: str) -> str | None:
        """The token name of a live session whose token is still valid; ``None`` otherwise.

        An expired session, or one whose token was revoked or replaced, is forgotten.

        Raises:
            TokenError: if the token file cannot be read.
        """
        key = _key(session_id)
        with self._lock:
            session = self._sessions.get(key)
        if session is None:
            return None
        if session.expires <= time.monotonic() or self.tokens.verify_hash(session.token_sha256) != session.token_name:
            self.end(session_id)
            return None
        return session.token_name

    def end(self, session_id: str) -> None:
        """Forget a session (sign-out); an unknown id is ignored."""
        with self._lock:
            self._sessions.pop(_key(session_id), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


def session_name(request: Request) -> str | None:
    """The token name of the request's session cookie, if it names a live session; else ``None``.

    Raises:
        TokenError: if the token file cannot be read.
    """
    sessions: SessionStore | None = getattr(request.app.state, "sessions", None)
    session_id = request.cookies.get(COOKIE_NAME)
    if sessions is None or not session_id:
        return None
    return sessions.token_name(session_id)


def session_name_or_none(request: Request) -> str | None:
    """:func:`session_name`, with an unreadable token file counting as no session."""
    try:
        return session_name(request)
    except TokenError:
        return None


def set_session_cookie(response: Response, session_id: str, lifetime_s: float) -> None:
    """Attach the session cookie: HttpOnly, Secure, SameSite=Strict, Path=/, Max-Age=lifetime."""
    response.set_cookie(
        COOKIE_NAME,
        session_id,
        max_age=int(lifetime_s),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response) -> None:
    """Tell the browser to drop the session cookie."""
    response.delete_cookie(COOKIE_NAME, path="/", secure=True, httponly=True, samesite="strict")


def same_origin(request: Request) -> bool:
    """Whether a POST comes from the registry's own pages: its ``Origin`` (if sent) is this host.

    SameSite=Strict already keeps the cookie off requests other sites start; the Origin
    check also refuses a sign-in form another site posts (login CSRF).
    """
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"https://{host}", f"http://{host}")
