"""A real ``fedward registry serve`` process over TLS on 127.0.0.1, used through ``fedward model``.

Certificates from ``fedward certs init``; the registry serves a runs folder with one good
run and one whose best weights were changed after training. Checked: ``model pull`` over
TLS verifies and writes the files (``run.json`` among them), a tampered file fails
verification and leaves nothing, no CA / no token / a revoked token are clear errors, raw
``..`` paths are 404 as uvicorn passes them, plain HTTP to the TLS port gets no HTTP
response, downloads are logged. The server process (its whole process group) is stopped
in a ``finally``, pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.cli import ENV, fedward, fedward_cli
from fixtures.deadlines import deadline
from fixtures.processes import stop_group
from fixtures.registry import RUN_ID, flip_byte, write_run

from fedward.common.fileio import sha256_of
from fedward.common.flower.processes import free_port
from fedward.server.registry.tokens import TokenStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(deadline(300))]

TAMPERED = "20250101-130000-tampered"
STARTUP_TIMEOUT_S = 30.0


@dataclass
class Registry:
    tmp: Path
    store: Path
    certs: Path
    port: int
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path

    def model(self, *args: str, token: str | None = None, ca: bool = True) -> subprocess.CompletedProcess[str]:
        extra = ["--registry", self.url, "--token", token or self.token]
        if ca:
            extra += ["--ca", str(self.certs / "ca.crt")]
        return fedward("model", *args, *extra, timeout=60)


def _wait_ready(port: int, ca: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"registry exited with {process.returncode}: {log.read_text(errors='replace')}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            if tls.recv(64).startswith(b"HTTP/1.1 200"):
                return
        time.sleep(0.3)
    raise AssertionError(f"registry not ready after {STARTUP_TIMEOUT_S:.0f} s: {log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("registry")
    store, certs = tmp / "runs", tmp / "certs"
    write_run(store)
    write_run(store, TAMPERED)
    flip_byte(store / TAMPERED / "models" / "best.safetensors")
    result = fedward("certs", "init", "--out", str(certs), timeout=60)
    assert result.returncode == 0, result.stderr
    token = TokenStore.for_store(store).create("evaluator")
    port, log = free_port(), tmp / "registry.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [fedward_cli(), "registry", "serve", "--store", str(store), "--certs", str(certs),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=handle, stderr=subprocess.STDOUT, env=ENV, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_ready(port, certs / "ca.crt", process, log)
        yield Registry(tmp, store, certs, port, f"https://127.0.0.1:{port}", token, process, log)
    finally:
        stop_group(process)
    assert process.poll() is not None


def test_pull_over_tls_verifies_and_writes_the_files(registry: Registry) -> None:
    out = registry.tmp / "pulled"
    result = registry.model("pull", RUN_ID, "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    best = registry.store / RUN_ID / "models" / "best.safetensors"
    assert (out / "model.safetensors").read_bytes() == best.read_bytes()
    assert json.loads((out / "pull.json").read_text())["sha256"] == sha256_of(best)
    for name in ("model_card.json", "model_card.md", "config.toml", "run.json"):
        assert (out / name).is_file()
    assert (out / "run.json").read_bytes() == (registry.store / RUN_ID / "run.json").read_bytes()
    assert "verified" in result.stdout

    rows = [json.loads(line) for line in (registry.store / "registry" / "downloads.jsonl").read_text().splitlines()]
    assert any(r["token"] == "evaluator" and r["run"] == RUN_ID and r["client"] == "127.0.0.1" for r in rows)
    assert registry.token not in registry.log.read_text(errors="replace")


def test_list_with_the_token_from_the_environment(registry: Registry) -> None:
    result = subprocess.run(
        [fedward_cli(), "model", "list", "--registry", registry.url, "--ca", str(registry.certs / "ca.crt")],
        capture_output=True, text=True, timeout=60, check=False,
        env={**ENV, "FEDWARD_REGISTRY_TOKEN": registry.token},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert RUN_ID in result.stdout and TAMPERED in result.stdout


def test_a_tampered_file_fails_verification_and_leaves_nothing(registry: Registry) -> None:
    out = registry.tmp / "tampered"
    result = registry.model("pull", TAMPERED, "--out", str(out))
    assert result.returncode == 2
    assert "sha256" in result.stderr and TAMPERED in result.stderr
    assert sorted(p.name for p in out.iterdir()) == []  # no weights, no temporary file, no card


def test_without_the_ca_the_certificate_is_refused(registry: Registry) -> None:
    result = registry.model("list", ca=False)
    assert result.returncode == 2
    assert "--ca" in result.stderr and registry.url in result.stderr


def test_plain_http_to_the_tls_port_gets_no_http_response(registry: Registry) -> None:
    with socket.create_connection(("127.0.0.1", registry.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + registry.token.encode())
        sock.sendall(b"\r\n\r\n")
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    reply = b"".join(chunks)
    assert b"HTTP" not in reply
    assert RUN_ID.encode() not in reply
    insecure = fedward("model", "list", "--registry", f"http://127.0.0.1:{registry.port}", "--insecure",
                       "--token", registry.token, timeout=60)  # fmt: skip
    assert insecure.returncode == 2
    assert "https://" in insecure.stderr


def _tls_get(registry: Registry, raw_path: str, token: str | None = None) -> bytes:
    context = ssl.create_default_context(cafile=str(registry.certs / "ca.crt"))
    request = (
        f"GET {raw_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token or registry.token}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    chunks = []
    with (
        socket.create_connection(("127.0.0.1", registry.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(request)
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "raw_path",
    [
        "/v1/runs/../../etc/passwd",
        f"/v1/runs/{RUN_ID}/models/../config.toml",
        "/v1/runs/%2e%2e/config",
        "/v1/runs/..%2f..%2fetc%2fpasswd",
        "/v1/runs/%252e%252e%252fregistry",
        "/v1/runs/registry/config",
    ],
)
def test_raw_traversal_paths_are_404(registry: Registry, raw_path: str) -> None:
    reply = _tls_get(registry, raw_path)
    assert reply.startswith(b"HTTP/1.1 404"), reply[:200]
    assert b"[federation]" not in reply and b"sha256" not in reply


def test_a_revoked_token_is_refused_at_once(registry: Registry) -> None:
    other = TokenStore.for_store(registry.store).create("short-lived")
    assert registry.model("list", token=other).returncode == 0
    revoked = fedward("registry", "token", "revoke", "short-lived", "--store", str(registry.store), timeout=60)
    assert revoked.returncode == 0, revoked.stderr
    result = registry.model("pull", RUN_ID, "--out", str(registry.tmp / "revoked"), token=other)
    assert result.returncode == 2
    assert "refused the token" in result.stderr
    assert not (registry.tmp / "revoked" / "model.safetensors").exists()
    assert _tls_get(registry, "/v1/runs", token=other).startswith(b"HTTP/1.1 401")


def test_the_server_stops_cleanly_on_sigterm(registry: Registry) -> None:
    registry.process.send_signal(signal.SIGTERM)
    assert registry.process.wait(timeout=15) == 0
