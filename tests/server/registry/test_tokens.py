"""Registry tokens: only hashes stored (0600), revocation, name checks, and the CLI that prints a token once."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedward.common.errors import ConfigError
from fedward.server.registry.tokens import TOKEN_PREFIX, TokenError, TokenStore, hash_token


@pytest.fixture
def tokens(tmp_path: Path) -> TokenStore:
    return TokenStore.for_store(tmp_path / "runs")


def test_create_stores_only_the_hash_in_a_private_file(tokens: TokenStore) -> None:
    token = tokens.create("alice")
    assert token.startswith(TOKEN_PREFIX)
    assert len(token) == len(TOKEN_PREFIX) + 43  # 32 random bytes, URL-safe base64
    assert tokens.path == tokens.path.parent.parent / "registry" / "tokens.json"
    assert stat.S_IMODE(tokens.path.stat().st_mode) == 0o600
    text = tokens.path.read_text(encoding="utf-8")
    assert token not in text and token[len(TOKEN_PREFIX) :] not in text
    data = json.loads(text)
    assert data["alice"]["sha256"] == hash_token(token)
    assert data["alice"]["revoked"] is None and data["alice"]["created"]
    assert tokens.verify(token) == "alice"
    assert tokens.create("bob") != token


def test_the_file_stays_private_through_rewrites_and_leaves_no_temporary_file(tokens: TokenStore) -> None:
    """Written with fedward.common.fileio.atomic_write (mode 0600); the registry folder is 0700."""
    tokens.create("alice")
    tokens.revoke("alice")
    tokens.create("alice", force=True)
    assert stat.S_IMODE(tokens.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(tokens.path.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in tokens.path.parent.iterdir()) == ["tokens.json"]


def test_a_failed_write_is_a_token_error_and_keeps_the_old_file(
    tokens: TokenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedward.server.registry.tokens as module

    alice = tokens.create("alice")
    before = tokens.path.read_bytes()

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "atomic_write", disk_full)
    with pytest.raises(TokenError, match=r"cannot write .*tokens\.json: No space left on device"):
        tokens.revoke("alice")
    assert tokens.path.read_bytes() == before
    assert tokens.verify(alice) == "alice"


def test_verify_refuses_unknown_and_revoked_tokens(tokens: TokenStore) -> None:
    alice, bob = tokens.create("alice"), tokens.create("bob")
    assert tokens.verify("fwd_nope") is None
    assert tokens.verify(alice[:-1]) is None
    info = tokens.revoke("alice")
    assert info.revoked is not None and not info.active
    assert tokens.verify(alice) is None
    assert tokens.verify(bob) == "bob"
    assert tokens.revoke("alice").revoked == info.revoked


def test_no_token_file_accepts_nothing(tokens: TokenStore) -> None:
    assert tokens.verify("fwd_anything") is None
    assert tokens.list() == []


def test_an_existing_valid_name_needs_force(tokens: TokenStore) -> None:
    old = tokens.create("alice")
    with pytest.raises(TokenError, match=r"already exists.*--force"):
        tokens.create("alice")
    new = tokens.create("alice", force=True)
    assert tokens.verify(old) is None
    assert tokens.verify(new) == "alice"
    tokens.revoke("alice")
    again = tokens.create("alice")  # a revoked name may be reused without --force
    assert tokens.verify(again) == "alice"


def test_list_shows_names_and_times_never_hashes(tokens: TokenStore) -> None:
    tokens.create("bob")
    tokens.create("alice")
    tokens.revoke("bob")
    listed = tokens.list()
    assert [i.name for i in listed] == ["alice", "bob"]
    assert [i.active for i in listed] == [True, False]
    assert all(set(i.to_json()) == {"name", "created", "revoked"} for i in listed)


def test_revoking_an_unknown_name_names_the_known_ones(tokens: TokenStore) -> None:
    tokens.create("alice")
    with pytest.raises(TokenError, match=r"no registry token named 'carol'.*alice"):
        tokens.revoke("carol")


@pytest.mark.parametrize("name", ["", "a b", "a/b", "../x", "..", ".", "x" * 65, "é", "a\n"])
def test_bad_names_are_refused(tokens: TokenStore, name: str) -> None:
    with pytest.raises(ConfigError, match="token name"):
        tokens.create(name)
    assert not tokens.path.exists()


@pytest.mark.parametrize("content", ["{not json", "[]", '{"alice": {"sha256": "short"}}', '{"alice": 3}'])
def test_a_damaged_file_is_an_error_not_an_open_door(tokens: TokenStore, content: str) -> None:
    tokens.path.parent.mkdir(parents=True)
    tokens.path.write_text(content, encoding="utf-8")
    with pytest.raises(TokenError, match=str(tokens.path)):
        tokens.verify("fwd_x")
    with pytest.raises(TokenError):
        tokens.create("alice")


def test_cli_prints_the_token_once_and_lists_without_hashes(tmp_path: Path) -> None:
    from fedward.cli.main import app

    runner = CliRunner()
    store = tmp_path / "runs"
    store.mkdir()
    created = runner.invoke(app, ["registry", "token", "create", "alice", "--store", str(store)])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith(TOKEN_PREFIX) and "\n" not in token
    assert TokenStore.for_store(store).verify(token) == "alice"

    again = runner.invoke(app, ["registry", "token", "create", "alice", "--store", str(store)])
    assert again.exit_code == 2
    assert "--force" in again.output

    listed = runner.invoke(app, ["registry", "token", "list", "--store", str(store), "--json"])
    assert listed.exit_code == 0
    assert [row["name"] for row in json.loads(listed.stdout)] == ["alice"]
    assert hash_token(token) not in listed.stdout and token not in listed.stdout

    revoked = runner.invoke(app, ["registry", "token", "revoke", "alice", "--store", str(store)])
    assert revoked.exit_code == 0
    assert TokenStore.for_store(store).verify(token) is None

    both = runner.invoke(app, ["registry", "token", "list", "--store", str(store), "--state", str(tmp_path)])
    assert both.exit_code == 2
    assert "either --store" in both.output


def test_cli_state_means_the_coordinators_runs_folder(tmp_path: Path) -> None:
    from fedward.cli.main import app

    result = CliRunner().invoke(app, ["registry", "token", "create", "ci", "--state", str(tmp_path / "state")])
    assert result.exit_code == 0, result.output
    assert TokenStore.for_store(tmp_path / "state" / "runs").verify(result.stdout.strip()) == "ci"
