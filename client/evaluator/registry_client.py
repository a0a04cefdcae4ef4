"""The model registry's HTTP client: the shared contract's requests, refusals turned into errors a user can act on.

:class:`RegistryClient` requests the paths of :mod:`fedward.common.registry_api` with a
bearer token, streams weights into a temporary file while hashing them, and turns every
refusal (401, 404, other statuses) and transport failure (certificate, timeout, nothing
listening) into a :class:`RegistryRequestError` that says what to do. TLS is verified
against the federation's CA (``--ca ca.crt``) or the system's trust store; plain
``http://`` needs an explicit ``insecure=True``.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from fedward.common.errors import ConfigError, FedwardError
from fedward.common.registry_api import (
    DOWNLOAD_CHUNK_BYTES,
    ROUND_HEADER,
    RUNS_KEY,
    RUNS_PATH,
    SHA256_HEADER,
    TOKEN_ENV,
    RunFile,
    model_path,
    run_file_path,
    run_path,
)
from fedward.common.security.tls import client_context, https_url

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0


class RegistryRequestError(FedwardError):
    """The registry refused a request, has no such run or model, or cannot be reached."""


@dataclass(frozen=True, slots=True)
class Download:
    """Weights streamed into a file, not verified yet.

    Attributes:
        sha256: hex SHA-256 of the bytes received.
        bytes: bytes received.
        header_sha256: the registry's ``X-Fedward-SHA256`` header, if sent.
        header_round: the registry's ``X-Fedward-Round`` header, if sent.
    """

    sha256: str
    bytes: int
    header_sha256: str | None
    header_round: str | None


def _check_token(token: str | None) -> str:
    token = (token or "").strip()
    if not token:
        raise ConfigError(f"no registry token: pass --token or set {TOKEN_ENV}")
    if not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigError("the registry token has characters a token never has; copy it again")
    return token


class RegistryClient:
    """A model registry's HTTP API, with errors a user can act on.

    Args:
        url: the registry, ``https://HOST:PORT`` (``http://`` only with ``insecure``).
        token: a bearer token from ``fedward registry token create``.
        ca: PEM CA certificate the registry's certificate must chain to (the federation's
            ``ca.crt``); ``None``: the system's trust store.
        insecure: allow a plain ``http://`` URL.
        timeout_s: connect/read timeout, seconds.
        http: an existing ``httpx.Client`` to send requests with (tests); not closed here.

    Raises:
        ConfigError: if the URL, token or CA file is unusable.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        ca: Path | None = None,
        insecure: bool = False,
        timeout_s: float = TIMEOUT_S,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = https_url(url, insecure=insecure)
        self.ca = ca
        self._headers = {"Authorization": f"Bearer {_check_token(token)}", "Accept": "application/json"}
        self._own = http is None
        verify: ssl.SSLContext | bool = client_context(ca) if ca is not None else True
        self._http = http if http is not None else httpx.Client(verify=verify, timeout=timeout_s)

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (unless the ``httpx.Client`` was given)."""
        if self._own:
            self._http.close()

    # ------------------------------------------------------------------ endpoints
    def runs(self) -> list[dict[str, Any]]:
        """Every run the registry serves (``GET /v1/runs``).

        Raises:
            RegistryRequestError: if the registry refuses the token or cannot be reached.
        """
        data = self._json(RUNS_PATH, "the run list")
        runs = data.get(RUNS_KEY) if isinstance(data, dict) else None
        if not isinstance(runs, list):
            raise RegistryRequestError(f"{self.url} did not answer like a fedward model registry (no run list)")
        return [r for r in runs if isinstance(r, dict)]

    def run(self, run: str) -> dict[str, Any]:
        """A run's description with its ``models`` and ``best`` (``GET /v1/runs/{run}``).

        Raises:
            ConfigError: if ``run`` is empty.
            RegistryRequestError: if there is no such run, or the registry refuses or cannot be reached.
        """
        missing = f"no run {run!r} on the registry at {self.url}"
        data = self._json(run_path(_check_run(run)), f"run {run}", missing=missing)
        if not isinstance(data, dict):
            raise RegistryRequestError(f"{self.url} did not answer like a fedward model registry (run {run})")
        return data

    def run_file(self, run: str, run_file: RunFile) -> bytes | None:
        """One of a run's files (``GET /v1/runs/{run}/<endpoint>``), or ``None`` if the run has none.

        Raises:
            ConfigError: if ``run`` is empty.
            RegistryRequestError: if the registry refuses or cannot be reached.
        """
        response = self._send(run_file_path(_check_run(run), run_file))
        if response.status_code == 404:
            return None
        self._raise_for(response, f"the {run_file.endpoint} of run {run}")
        return response.content

    def download(self, run: str, which: str | int, path: Path) -> Download:
        """Stream weights into ``path`` (a file the caller replaces atomically), hashing them on the way.

        Raises:
            ConfigError: if ``path`` cannot be written.
            RegistryRequestError: if the registry has no such weights, refuses, or the connection fails.
        """
        route = model_path(_check_run(run), which)
        digest, size = hashlib.sha256(), 0
        try:
            with open(path, "wb") as handle, self._http.stream("GET", self.url + route, headers=self._headers) as got:
                if got.status_code != 200:
                    got.read()
                    missing = f"run {run!r} has no weights for round {which!r}"
                    self._raise_for(got, f"the weights of run {run} ({which})", missing=missing)
                for block in got.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                    handle.write(block)
                    digest.update(block)
                    size += len(block)
                header_sha, header_round = got.headers.get(SHA256_HEADER), got.headers.get(ROUND_HEADER)
        except httpx.HTTPError as err:
            raise self._transport_error(err) from None
        except OSError as err:
            raise ConfigError(f"--out {path.parent}: writing the weights failed ({err.strerror or err})") from None
        return Download(digest.hexdigest(), size, header_sha, header_round)

    # ------------------------------------------------------------------ plumbing
    def _send(self, path: str) -> httpx.Response:
        try:
            return self._http.get(self.url + path, headers=self._headers)
        except httpx.HTTPError as err:
            raise self._transport_error(err) from None

    def _json(self, path: str, what: str, missing: str | None = None) -> Any:
        response = self._send(path)
        self._raise_for(response, what, missing)
        try:
            return response.json()
        except ValueError:
            raise RegistryRequestError(
                f"{self.url} did not answer {what} with JSON; is it a fedward model registry?"
            ) from None

    def _raise_for(self, response: httpx.Response, what: str, missing: str | None = None) -> None:
        code = response.status_code
        if code == 200:
            return
        detail = _detail(response)
        if code == 401:
            raise RegistryRequestError(
                f"the registry at {self.url} refused the token ({detail}); ask its operator for a valid one "
                f"('fedward registry token create') and pass it with --token or {TOKEN_ENV}"
            )
        if code == 404:
            raise RegistryRequestError(f"{missing or f'{what}: not found on the registry at {self.url}'} ({detail})")
        raise RegistryRequestError(f"the registry at {self.url} answered HTTP {code} for {what}: {detail}")

    def _transport_error(self, err: httpx.HTTPError) -> RegistryRequestError:
        reason = str(err) or type(err).__name__
        trust = f"--ca {self.ca}" if self.ca else "the system's trust store (no --ca given)"
        if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate verify failed" in reason:
            return RegistryRequestError(
                f"the registry at {self.url} presented a certificate that {trust} does not vouch for ({reason}); "
                "pass --ca with the federation's ca.crt and dial a name the certificate holds"
            )
        if isinstance(err, httpx.TimeoutException):
            return RegistryRequestError(f"no answer from the registry at {self.url} in time ({type(err).__name__})")
        if isinstance(err, httpx.ConnectError) and "SSL" not in reason:
            return RegistryRequestError(
                f"cannot connect to the registry at {self.url} ({reason}); is 'fedward registry serve' running "
                "there and the port open? (a TLS registry needs https:// and --ca ca.crt)"
            )
        return RegistryRequestError(
            f"the connection to the registry at {self.url} failed ({type(err).__name__}: {reason}); "
            "a TLS registry needs https:// and --ca ca.crt, a registry started with --insecure needs http://"
        )


def _check_run(run: str) -> str:
    if not run or not run.strip():
        raise ConfigError("give the run id (see 'fedward model list')")
    return run


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = str(detail) if detail else response.text.strip() or response.reason_phrase
    return f"HTTP {response.status_code}: {text[:300]}"
