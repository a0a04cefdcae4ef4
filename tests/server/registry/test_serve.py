"""``fedward registry serve``'s start-up checks: TLS or an explicit --insecure, certificate files, a free port."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_serve_refuses_to_start_without_tls_or_with_missing_files(tmp_path: Path) -> None:
    from fedward.common.errors import ConfigError
    from fedward.server.registry.serve import RegistryError, serve

    store = tmp_path / "runs"
    store.mkdir()
    with pytest.raises(ConfigError, match=r"--certs.*--insecure"):
        serve(store, None)
    with pytest.raises(ConfigError, match=r"--certs.*--insecure"):
        serve(store, tmp_path / "certs", insecure=True)
    with pytest.raises(RegistryError, match=r"server\.crt, server\.key missing"):
        serve(store, tmp_path / "certs")
    with pytest.raises(RegistryError, match="not a folder"):
        serve(tmp_path / "nope", tmp_path / "certs")


def test_serve_names_a_taken_port(tmp_path: Path) -> None:
    import socket

    from fedward.common.security.certs import init_federation
    from fedward.server.registry.serve import RegistryError, serve

    init_federation(tmp_path / "certs")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RegistryError, match=f"127.0.0.1:{port}.*--port"):
            serve(tmp_path, tmp_path / "certs", "127.0.0.1", port)


def test_cli_serve_without_certs_exits_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedward.cli.main import app

    result = CliRunner().invoke(app, ["registry", "serve", "--store", str(tmp_path)])
    assert result.exit_code == 2
    assert "--certs" in result.output
