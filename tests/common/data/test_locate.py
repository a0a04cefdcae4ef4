"""Finding dataset files: explicit folder, env var, native size first, offline download."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.deadlines import deadline
from fixtures.synthetic import write_npz

from fedward.common.data import locate
from fedward.common.data.catalog import CatalogEntry, catalog, lookup
from fedward.common.errors import ConfigError, DataError, DownloadError


def test_catalog_has_the_twelve_2d_datasets() -> None:
    assert len(catalog()) == 12
    entry = lookup("PneumoniaMNIST")
    assert entry is not None and entry.samples == {"train": 4708, "val": 524, "test": 624}
    assert entry.url(64).endswith("pneumoniamnist_64.npz?download=1")
    assert set(entry.md5) == {28, 64, 128, 224}


def test_explicit_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        locate.locate_dataset("pneumoniamnist", 28, tmp_path / "nope")


def test_finds_file_in_given_folder_and_env_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_npz(tmp_path / "pneumoniamnist.npz")
    assert locate.locate_dataset("pneumoniamnist", 28, tmp_path) == path
    monkeypatch.setenv(locate.DATA_DIR_ENV, str(tmp_path))
    assert locate.locate_dataset("pneumoniamnist", 28) == path


def test_native_size_first_then_28px(tmp_path: Path) -> None:
    small = write_npz(tmp_path / "pneumoniamnist.npz")
    assert locate.locate_dataset("pneumoniamnist", 64, tmp_path) == small
    native = write_npz(tmp_path / "pneumoniamnist_64.npz", size=64)
    assert locate.locate_dataset("pneumoniamnist", 64, tmp_path) == native


def test_unknown_dataset_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'nosuchmnist'"):
        locate.locate_dataset("nosuchmnist", 28, tmp_path)


def test_user_file_with_any_name_is_found(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "myhospital.npz")
    assert locate.locate_dataset("myhospital", 28, tmp_path) == path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(deadline(120))  # a hang guard: the refused connection must fail, not wait
def test_offline_download_fails_in_one_line_saying_where_to_put_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/pneumoniamnist.npz"
    monkeypatch.setattr(CatalogEntry, "url", lambda self, size: url)
    with pytest.raises(DownloadError) as err:
        locate.locate_dataset("pneumoniamnist", 28, tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert f"put pneumoniamnist.npz in {tmp_path}" in message
    assert not list(tmp_path.iterdir()), "a failed download leaves no file behind"


def test_no_download_when_disabled(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"pneumoniamnist\.npz not found"):
        locate.locate_dataset("pneumoniamnist", 28, tmp_path, download=False)


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()


def test_download_verifies_the_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file_server: tuple[str, Path]
) -> None:
    base, served = file_server
    source = write_npz(served / "pneumoniamnist.npz")
    good = hashlib.md5(source.read_bytes()).hexdigest()
    target = tmp_path / "data"
    target.mkdir()
    monkeypatch.setattr(CatalogEntry, "url", lambda self, size: f"{base}/pneumoniamnist.npz")
    monkeypatch.setitem(catalog()["pneumoniamnist"].md5, 28, "0" * 32)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        locate.locate_dataset("pneumoniamnist", 28, target)
    assert not (target / "pneumoniamnist.npz").exists()
    monkeypatch.setitem(catalog()["pneumoniamnist"].md5, 28, good)
    path = locate.locate_dataset("pneumoniamnist", 28, target)
    assert path.read_bytes() == source.read_bytes()
