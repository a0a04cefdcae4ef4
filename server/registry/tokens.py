"""Bearer tokens of the model registry: create, revoke, list, verify.

The tokens live in ``<store>/registry/tokens.json`` (mode 0600), a mapping
``name -> {"sha256": <hex>, "created": <ISO time>, "revoked": null | <ISO time>}``.
Only the SHA-256 of a token is stored; the token itself is printed once, when it is
created, and never again.

A token is ``fwd_`` followed by :func:`secrets.token_urlsafe` of 32 random bytes: 256 bits
of entropy. Nobody can guess such a token or invert its hash, so a plain (unsalted, fast)
SHA-256 is enough here; slow password hashes (bcrypt, scrypt, Argon2) exist to protect
low-entropy human passwords against dictionary attacks, which do not apply. Hashes are
compared with :func:`hmac.compare_digest`.

The file is re-read on every verification, so a revocation takes effect on the next
request of a running registry, without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedward.common.errors import ConfigError, FedwardError
from fedward.common.fileio import atomic_write
from fedward.common.timestamps import now_iso

log = logging.getLogger(__name__)

TOKEN_PREFIX = "fwd_"
TOKEN_BYTES = 32
NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")
REGISTRY_DIR = "registry"
TOKENS_FILE = "tokens.json"


class TokenError(FedwardError):
    """The token file cannot be read or written, or a token name is unknown or taken."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What may be shown about a token (never its hash).

    Attributes:
        name: the token's name (who or what it was given to).
        created: creation time, ISO 8601 UTC.
        revoked: revocation time, ISO 8601 UTC, or ``None`` while the token is valid.
    """

    name: str
    created: str
    revoked: str | None

    @property
    def active(self) -> bool:
        """Whether the token is still accepted."""
        return self.revoked is None

    def to_json(self) -> dict[str, Any]:
        """``{"name", "created", "revoked"}``."""
        return {"name": self.name, "created": self.created, "revoked": self.revoked}


def check_token_name(name: str) -> str:
    """Validate a token name.

    Raises:
        ConfigError: unless it is 1-64 letters, digits, ``.``, ``_`` or ``-``.
    """
    if not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"token name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return name


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token's UTF-8 bytes (see the module docstring for why a plain hash)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """The registry's token file.

    Args:
        path: the ``tokens.json`` file (need not exist yet: no tokens).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_store(cls, store: Path) -> TokenStore:
        """The token file of a run store: ``<store>/registry/tokens.json``."""
        return cls(Path(store) / REGISTRY_DIR / TOKENS_FILE)

    def create(self, name: str, *, force: bool = False) -> str:
        """Create a token named ``name`` and return it (the only time it is visible).

        Args:
            name: 1-64 letters, digits, ``.``, ``_`` or ``-``.
            force: replace an existing, still valid token of that name (it stops working).

        Returns:
            The token, ``fwd_`` + 43 URL-safe characters.

        Raises:
            ConfigError: if the name is malformed.
            TokenError: if a valid token of that name exists and ``force`` is false, or the
                file cannot be read or written.
        """
        check_token_name(name)
        entries = self._read()
        current = entries.get(name)
        if current is not None and current.get("revoked") is None and not force:
            raise TokenError(
                f"a valid token named {name!r} already exists in {self.path}; revoke it first "
                "('fedward registry token revoke') or pass --force to replace it"
            )
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        entries[name] = {"sha256": hash_token(token), "created": now_iso(), "revoked": None}
        self._write(entries)
        log.info("registry token %r created", name)
        return token

    def revoke(self, name: str) -> TokenInfo:
        """Revoke the token named ``name``; it is refused from the next request on.

        Revoking a revoked token keeps its first revocation time.

        Raises:
            TokenError: if no token has that name, or the file cannot be read or written.
        """
        entries = self._read()
        entry = entries.get(name)
        if entry is None:
            known = ", ".join(sorted(entries)) or "none"
            raise TokenError(f"no registry token named {name!r} in {self.path} (tokens: {known})")
        if entry.get("revoked") is None:
            entry["revoked"] = now_iso()
            self._write(entries)
            log.info("registry token %r revoked", name)
        return TokenInfo(name, str(entry.get("created", "")), str(entry["revoked"]))

    def list(self) -> list[TokenInfo]:
        """Every token's name, creation and revocation time, sorted by name (no hashes).

        Raises:
            TokenError: if the file cannot be read.
        """
        return [
            TokenInfo(name, str(entry.get("created", "")), _optional_str(entry.get("revoked")))
            for name, entry in sorted(self._read().items())
        ]

    def verify(self, token: str) -> str | None:
        """The name of the valid token equal to ``token``, or ``None``.

        Every stored hash is compared (in constant time each), whatever matches first.

        Raises:
            TokenError: if the file cannot be read.
        """
        return self.verify_hash(hash_token(token))

    def verify_hash(self, presented: str) -> str | None:
        """The name of the valid token whose SHA-256 is ``presented``, or ``None``.

        A dashboard session keeps its token's hash (never the token) and is checked with
        this on every request, so revoking or replacing the token ends the session.

        Raises:
            TokenError: if the file cannot be read.
        """
        found: str | None = None
        for name, entry in self._read().items():
            stored = str(entry.get("sha256", ""))
            if hmac.compare_digest(presented, stored) and entry.get("revoked") is None:
                found = name
        return found

    # ------------------------------------------------------------------ file
    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise TokenError(f"cannot read {self.path}: {err.strerror or type(err).__name__}") from None
        try:
            data = json.loads(text)
        except ValueError:
            raise TokenError(f"{self.path} is not valid JSON; restore it from a backup or delete it") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) and HEX_SHA256.fullmatch(str(v.get("sha256", "")))
            for k, v in data.items()
        ):
            raise TokenError(f"{self.path} is not a fedward token file (name -> {{sha256, created, revoked}})")
        return {str(k): dict(v) for k, v in data.items()}

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        """Replace the file atomically (and durably), readable by its owner only (0600, folder 0700)."""
        payload = json.dumps(dict(sorted(entries.items())), indent=2)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(self.path, payload, mode=0o600, durable=True)
        except OSError as err:
            raise TokenError(f"cannot write {self.path}: {err.strerror or type(err).__name__}") from None


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)
