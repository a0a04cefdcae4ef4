"""Download a global model from a fedward model registry, and verify it before keeping it.

:func:`pull` fetches a run's description, model card (JSON and Markdown) and config, then
streams the weights into a temporary file in the output folder while hashing them. The
SHA-256 must equal both the ``X-Fedward-SHA256`` header (the hash the registry recorded
at training time) and an independent record: the model card's ``weights.best.sha256``
for the best model (the run's model list when the run has no card yet), the run's model
list entry for a given round. Only then is the file renamed to ``model.safetensors``; on
any mismatch the temporary file is deleted and :class:`~fedward.common.errors.IntegrityError`
is raised, so no partial or unverified file is ever left behind.

TLS is verified against the federation's CA (``--ca ca.crt``) or the system's trust
store; plain ``http://`` needs an explicit ``insecure=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from fedward.common.errors import ConfigError, FedwardError, IntegrityError
from fedward.common.security.tls import client_context, https_url

log = logging.getLogger(__name__)

TOKEN_ENV = "FEDWARD_REGISTRY_TOKEN"
SHA256_HEADER = "X-Fedward-SHA256"
ROUND_HEADER = "X-Fedward-Round"
MODEL_FILE = "model.safetensors"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30.0


class RegistryError(FedwardError):
    """The registry refused a request, has no such run or model, or cannot be reached."""


@dataclass(frozen=True, slots=True)
class PulledModel:
    """A verified download.

    Attributes:
        run: the run id.
        round: the round whose global model was pulled.
        sha256: hex SHA-256 of the weights (verified).
        bytes: size of the weights, bytes.
        path: ``<out_dir>/model.safetensors``.
        files: every file written into the output folder.
    """

    run: str
    round: int
    sha256: str
    bytes: int
    path: Path
    files: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class _Download:
    tmp: Path
    sha256: str
    bytes: int
    header_sha256: str | None
    header_round: str | None


def parse_which(text: str | int) -> str | int:
    """``best`` or a round number (>= 0) from ``--round``.

    Raises:
        ConfigError: for anything else.
    """
    if isinstance(text, int) or str(text).strip().isdigit():
        value = int(text)
        if value >= 0:
            return value
    elif str(text).strip().lower() == "best":
        return "best"
    raise ConfigError(f"--round must be 'best' or a round number (0, 1, ...); got {text!r}")


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
            RegistryError: if the registry refuses the token or cannot be reached.
        """
        data = self._json("/v1/runs", "the run list")
        runs = data.get("runs") if isinstance(data, dict) else None
        if not isinstance(runs, list):
            raise RegistryError(f"{self.url} did not answer like a fedward model registry (no run list)")
        return [r for r in runs if isinstance(r, dict)]

    def run(self, run: str) -> dict[str, Any]:
        """A run's description with its ``models`` and ``best`` (``GET /v1/runs/{run}``).

        Raises:
            RegistryError: if there is no such run, or the registry refuses or cannot be reached.
        """
        data = self._json(self._run_path(run), f"run {run}", missing=f"no run {run!r} on the registry at {self.url}")
        if not isinstance(data, dict):
            raise RegistryError(f"{self.url} did not answer like a fedward model registry (run {run})")
        return data

    def optional(self, run: str, name: str) -> bytes | None:
        """``card``, ``card.md`` or ``config`` of a run, or ``None`` if the run has none."""
        response = self._send(f"{self._run_path(run)}/{name}")
        if response.status_code == 404:
            return None
        self._raise_for(response, f"the {name} of run {run}")
        return response.content

    def download(self, run: str, which: str | int, out_dir: Path) -> _Download:
        """Stream weights into a temporary file in ``out_dir``, hashing them on the way.

        The caller renames or deletes the file; it is deleted here if the download fails.

        Raises:
            RegistryError: if the registry has no such weights, refuses, or the connection fails.
        """
        try:
            fd, name = tempfile.mkstemp(prefix=".model-", suffix=".part", dir=out_dir)
        except OSError as err:
            raise ConfigError(f"--out {out_dir}: cannot write there ({err.strerror or err})") from None
        tmp = Path(name)
        digest, size, done = hashlib.sha256(), 0, False
        what = f"the weights of run {run} ({which})"
        try:
            with os.fdopen(fd, "wb") as handle, self._stream(f"{self._run_path(run)}/models/{which}") as response:
                if response.status_code != 200:
                    response.read()
                    self._raise_for(response, what, missing=f"run {run!r} has no weights for round {which!r}")
                for block in response.iter_bytes(CHUNK_BYTES):
                    handle.write(block)
                    digest.update(block)
                    size += len(block)
                header_sha, header_round = response.headers.get(SHA256_HEADER), response.headers.get(ROUND_HEADER)
            done = True
        except httpx.HTTPError as err:
            raise self._transport_error(err) from None
        except OSError as err:
            raise ConfigError(f"--out {out_dir}: writing the weights failed ({err.strerror or err})") from None
        finally:
            if not done:
                tmp.unlink(missing_ok=True)
        return _Download(tmp, digest.hexdigest(), size, header_sha, header_round)

    # ------------------------------------------------------------------ plumbing
    def _run_path(self, run: str) -> str:
        if not run or not run.strip():
            raise ConfigError("give the run id (see 'fedward model list')")
        return f"/v1/runs/{quote(run, safe='')}"

    def _send(self, path: str) -> httpx.Response:
        try:
            return self._http.get(self.url + path, headers=self._headers)
        except httpx.HTTPError as err:
            raise self._transport_error(err) from None

    def _stream(self, path: str) -> Any:
        return self._http.stream("GET", self.url + path, headers=self._headers)

    def _json(self, path: str, what: str, missing: str | None = None) -> Any:
        response = self._send(path)
        self._raise_for(response, what, missing)
        try:
            return response.json()
        except ValueError:
            raise RegistryError(
                f"{self.url} did not answer {what} with JSON; is it a fedward model registry?"
            ) from None

    def _raise_for(self, response: httpx.Response, what: str, missing: str | None = None) -> None:
        code = response.status_code
        if code == 200:
            return
        detail = _detail(response)
        if code == 401:
            raise RegistryError(
                f"the registry at {self.url} refused the token ({detail}); ask its operator for a valid one "
                f"('fedward registry token create') and pass it with --token or {TOKEN_ENV}"
            )
        if code == 404:
            raise RegistryError(f"{missing or f'{what}: not found on the registry at {self.url}'} ({detail})")
        raise RegistryError(f"the registry at {self.url} answered HTTP {code} for {what}: {detail}")

    def _transport_error(self, err: httpx.HTTPError) -> RegistryError:
        reason = str(err) or type(err).__name__
        trust = f"--ca {self.ca}" if self.ca else "the system's trust store (no --ca given)"
        if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate verify failed" in reason:
            return RegistryError(
                f"the registry at {self.url} presented a certificate that {trust} does not vouch for ({reason}); "
                "pass --ca with the federation's ca.crt and dial a name the certificate holds"
            )
        if isinstance(err, httpx.TimeoutException):
            return RegistryError(f"no answer from the registry at {self.url} in time ({type(err).__name__})")
        if isinstance(err, httpx.ConnectError) and "SSL" not in reason:
            return RegistryError(
                f"cannot connect to the registry at {self.url} ({reason}); is 'fedward registry serve' running "
                "there and the port open? (a TLS registry needs https:// and --ca ca.crt)"
            )
        return RegistryError(
            f"the connection to the registry at {self.url} failed ({type(err).__name__}: {reason}); "
            "a TLS registry needs https:// and --ca ca.crt, a registry started with --insecure needs http://"
        )


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = str(detail) if detail else response.text.strip() or response.reason_phrase
    return f"HTTP {response.status_code}: {text[:300]}"


def _expected(run: str, which: str | int, detail: dict[str, Any], card: dict[str, Any] | None) -> tuple[str, int, str]:
    """(sha256, round, where it is recorded) of the weights asked for, besides the header.

    Raises:
        RegistryError: if the run has no such weights or their record is malformed.
    """
    try:
        return _recorded(run, which, detail, card)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise RegistryError(f"run {run}: the registry's record of the weights ({which}) is malformed") from None


def _recorded(run: str, which: str | int, detail: dict[str, Any], card: dict[str, Any] | None) -> tuple[str, int, str]:
    if which == "best":
        weights = card.get("weights") if card is not None else None
        best = weights.get("best") if isinstance(weights, dict) else None
        if isinstance(best, dict) and best.get("sha256") is not None:
            return str(best["sha256"]), int(best["round"]), "the model card"
        listed = detail.get("best")
        if not isinstance(listed, dict):
            raise RegistryError(f"run {run} has no best model yet")
        log.warning("run %s has no model card (still running?): verifying against its model list", run)
        return str(listed["sha256"]), int(listed["round"]), "the run's model list"
    for entry in detail.get("models") or []:
        if isinstance(entry, dict) and entry.get("round") == which:
            return str(entry["sha256"]), int(which), "the run's model list"
    rounds = [str(e.get("round")) for e in detail.get("models") or [] if isinstance(e, dict)]
    raise RegistryError(f"run {run} has no weights for round {which} (rounds: {', '.join(rounds) or 'none'})")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"--out {path.parent}: cannot write {path.name} ({err.strerror or err})") from None


def _verify(run: str, download: _Download, expected: tuple[str, int, str]) -> None:
    """Raise IntegrityError unless the bytes match the header and the independent record."""
    want, want_round, source = expected
    where = f"run {run} round {want_round}"
    if download.header_sha256 is None:
        raise IntegrityError(f"{where}: the registry sent no {SHA256_HEADER} header; the weights cannot be verified")
    checks = ((download.header_sha256.lower(), f"the registry's {SHA256_HEADER} header"), (want.lower(), source))
    for recorded, label in checks:
        if download.sha256 != recorded:
            raise IntegrityError(
                f"{where}: the downloaded weights have sha256 {download.sha256} but {label} records {recorded}; "
                "the file on the registry was changed after training (if the run is still training, its best "
                "model may have just changed: pull again). The download was deleted."
            )
    if download.header_round is not None and download.header_round != str(want_round):
        raise IntegrityError(
            f"{where}: the registry sent round {download.header_round} but {source} records round {want_round}"
        )


def pull(
    registry_url: str,
    token: str | None,
    run: str,
    which: str | int = "best",
    out_dir: Path = Path("."),
    ca: Path | None = None,
    *,
    insecure: bool = False,
    http: httpx.Client | None = None,
) -> PulledModel:
    """Download a run's weights, model card and config, verified, into ``out_dir``.

    Writes ``model.safetensors``, ``model_card.json``, ``model_card.md``, ``config.toml`` (the
    ones the run has) and ``pull.json`` (``registry``, ``run``, ``round``, ``sha256``,
    ``bytes``, ``pulled``, ``verified-against``).

    Args:
        registry_url: ``https://HOST:PORT`` of the registry.
        token: bearer token.
        run: run id (see :meth:`RegistryClient.runs`).
        which: ``"best"`` or a round number.
        out_dir: folder to write into (created).
        ca: the federation's CA certificate; ``None``: the system's trust store.
        insecure: allow a plain ``http://`` URL.
        http: an ``httpx.Client`` to use (tests).

    Returns:
        What was pulled.

    Raises:
        ConfigError: for a bad URL, token, CA file or ``which``.
        RegistryError: if the registry refuses, has no such run/round, or cannot be reached.
        IntegrityError: if the weights' SHA-256 differs from the recorded ones; nothing of
            the weights is left in ``out_dir``.
    """
    which = parse_which(which)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {out_dir}: cannot create it ({err.strerror or err})") from None
    with RegistryClient(registry_url, token, ca=ca, insecure=insecure, http=http) as client:
        detail = client.run(run)
        extras = {name: client.optional(run, endpoint) for endpoint, name in _EXTRAS}
        card = _card(run, extras["model_card.json"])
        expected = _expected(run, which, detail, card)
        download = client.download(run, which, out_dir)
    try:
        _verify(run, download, expected)
        written = []
        for name, data in extras.items():
            if data is not None:
                _atomic_write(out_dir / name, data)
                written.append(out_dir / name)
        target = out_dir / MODEL_FILE
        os.replace(download.tmp, target)
    finally:
        download.tmp.unlink(missing_ok=True)
    record = {
        "registry": client.url,
        "run": run,
        "round": expected[1],
        "sha256": download.sha256,
        "bytes": download.bytes,
        "pulled": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "verified-against": [f"{SHA256_HEADER} header", expected[2]],
    }
    _atomic_write(out_dir / "pull.json", (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    log.info(
        "pulled run %s round %d (%d bytes, sha256 %s) into %s",
        *(run, expected[1], download.bytes, download.sha256, out_dir),
    )
    files = (target, *written, out_dir / "pull.json")
    return PulledModel(run, expected[1], download.sha256, download.bytes, target, files)


_EXTRAS = (("card", "model_card.json"), ("card.md", "model_card.md"), ("config", "config.toml"))


def _card(run: str, data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        card = json.loads(data)
    except ValueError:
        raise RegistryError(f"the model card of run {run} is not valid JSON") from None
    return card if isinstance(card, dict) else None


def list_runs(
    registry_url: str, token: str | None, ca: Path | None = None, *, insecure: bool = False
) -> list[dict[str, Any]]:
    """The runs a registry serves (see :meth:`RegistryClient.runs`).

    Raises:
        ConfigError: for a bad URL, token or CA file.
        RegistryError: if the registry refuses the token or cannot be reached.
    """
    with RegistryClient(registry_url, token, ca=ca, insecure=insecure) as client:
        return client.runs()
