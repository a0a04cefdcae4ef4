"""``fedward model pull``'s client against an in-process registry: verified downloads, tampering, errors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.registry import BEST_ROUND, RUN_ID, copy_store, flip_byte

from fedward.client.evaluator.pull import list_runs, parse_which, pull
from fedward.client.evaluator.registry_client import RegistryClient, RegistryRequestError
from fedward.common.errors import ConfigError, IntegrityError
from fedward.common.flower.processes import free_port

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*httpx2.*")

testclient = pytest.importorskip("fastapi.testclient")
URL = "http://registry.test"


@dataclass
class Served:
    store: Path
    run_dir: Path
    token: str
    http: testclient.TestClient

    def pull(self, out: Path, which: str | int = "best", token: str | None = None) -> object:
        return pull(URL, token or self.token, RUN_ID, which, out, insecure=True, http=self.http)


@pytest.fixture
def served(template: Path, tmp_path: Path) -> Iterator[Served]:
    from fedward.server.registry.service import create_app
    from fedward.server.registry.tokens import TokenStore

    store = copy_store(template, tmp_path / "runs")
    token = TokenStore.for_store(store).create("evaluator")
    with testclient.TestClient(create_app(store), base_url=URL) as http:
        yield Served(store, store / RUN_ID, token, http)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_pull_best_writes_verified_weights_card_config_and_record(served: Served, tmp_path: Path) -> None:
    out = tmp_path / "pulled"
    pulled = served.pull(out)
    best = (served.run_dir / "models" / "best.safetensors").read_bytes()
    assert pulled.round == BEST_ROUND
    assert pulled.sha256 == hashlib.sha256(best).hexdigest()
    assert (out / "model.safetensors").read_bytes() == best
    assert leftovers(out) == [
        "config.toml",
        "model.safetensors",
        "model_card.json",
        "model_card.md",
        "pull.json",
        "run.json",
    ]
    assert (out / "model_card.json").read_bytes() == (served.run_dir / "model_card.json").read_bytes()
    assert (out / "config.toml").read_bytes() == (served.run_dir / "config.toml").read_bytes()
    record = json.loads((out / "pull.json").read_text(encoding="utf-8"))
    assert record["registry"] == URL
    assert record["run"] == RUN_ID
    assert record["round"] == BEST_ROUND
    assert record["sha256"] == pulled.sha256
    assert record["pulled"]
    assert "model card" in " ".join(record["verified-against"])
    assert served.token not in (out / "pull.json").read_text(encoding="utf-8")


def test_pull_writes_run_json_with_the_dataset_schema(served: Served, tmp_path: Path) -> None:
    pulled = served.pull(tmp_path / "pulled")
    run_json = tmp_path / "pulled" / "run.json"
    assert run_json.read_bytes() == (served.run_dir / "run.json").read_bytes()
    assert json.loads(run_json.read_text(encoding="utf-8"))["schema"]["classes"] == ["normal", "pneumonia"]
    assert pulled.files[0] == pulled.path and run_json in pulled.files
    assert pulled.files[-1] == tmp_path / "pulled" / "pull.json"


def test_a_run_without_run_json_is_pulled_without_it(served: Served, tmp_path: Path) -> None:
    (served.run_dir / "run.json").unlink()
    served.pull(tmp_path / "pulled")
    assert "run.json" not in leftovers(tmp_path / "pulled")
    assert "model.safetensors" in leftovers(tmp_path / "pulled")


def test_an_unwritable_out_folder_is_a_config_error_naming_it(served: Served, tmp_path: Path) -> None:
    out = tmp_path / "pulled"
    out.mkdir()
    (out / "config.toml").mkdir()  # a folder where the file must go: the rename fails
    with pytest.raises(ConfigError, match=r"--out .*pulled: cannot write config\.toml"):
        served.pull(out)
    assert "model.safetensors" not in leftovers(out)
    assert not [name for name in leftovers(out) if name.startswith(".")]


def test_pull_a_round_verifies_against_the_model_list(served: Served, tmp_path: Path) -> None:
    pulled = served.pull(tmp_path / "r2", which=2)
    assert pulled.round == 2
    assert (tmp_path / "r2" / "model.safetensors").read_bytes() == (
        served.run_dir / "models" / "round-002.safetensors"
    ).read_bytes()


def test_a_tampered_weight_file_fails_and_leaves_nothing(served: Served, tmp_path: Path) -> None:
    recorded = hashlib.sha256((served.run_dir / "models" / "best.safetensors").read_bytes()).hexdigest()
    flip_byte(served.run_dir / "models" / "best.safetensors")
    actual = hashlib.sha256((served.run_dir / "models" / "best.safetensors").read_bytes()).hexdigest()
    out = tmp_path / "pulled"
    with pytest.raises(IntegrityError) as caught:
        served.pull(out)
    message = str(caught.value)
    assert RUN_ID in message and f"round {BEST_ROUND}" in message
    assert recorded in message and actual in message
    assert leftovers(out) == []  # no model.safetensors, no temporary file, no card of an unverified model


def test_a_tampered_round_keeps_an_earlier_verified_pull_intact(served: Served, tmp_path: Path) -> None:
    out = tmp_path / "pulled"
    served.pull(out, which=1)
    before = (out / "model.safetensors").read_bytes()
    flip_byte(served.run_dir / "models" / "round-001.safetensors", offset=-3)
    with pytest.raises(IntegrityError, match="round 1"):
        served.pull(out, which=1)
    assert (out / "model.safetensors").read_bytes() == before
    assert not [name for name in leftovers(out) if name.startswith(".")]


def test_the_model_card_catches_a_rewritten_manifest(served: Served, tmp_path: Path) -> None:
    """Someone who changes the weights and their manifest entry still fails the card's hash."""
    best = served.run_dir / "models" / "best.safetensors"
    flip_byte(best)
    manifest_path = served.run_dir / "models" / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["files"]["best.safetensors"]["sha256"] = hashlib.sha256(best.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IntegrityError, match="model card records"):
        served.pull(tmp_path / "pulled")
    assert leftovers(tmp_path / "pulled") == []


def test_without_a_model_card_best_is_checked_against_the_model_list(served: Served, tmp_path: Path) -> None:
    (served.run_dir / "model_card.json").unlink()
    (served.run_dir / "model_card.md").unlink()
    pulled = served.pull(tmp_path / "pulled")
    assert pulled.round == BEST_ROUND
    assert "model_card.json" not in leftovers(tmp_path / "pulled")


def test_revoked_and_wrong_tokens_are_clear_errors(served: Served, tmp_path: Path) -> None:
    from fedward.server.registry.tokens import TokenStore

    with pytest.raises(RegistryRequestError, match="refused the token"):
        served.pull(tmp_path / "a", token="fwd_wrong")
    TokenStore.for_store(served.store).revoke("evaluator")
    with pytest.raises(RegistryRequestError, match=r"refused the token.*FEDWARD_REGISTRY_TOKEN"):
        served.pull(tmp_path / "b")
    assert leftovers(tmp_path / "b") == []


def test_unknown_run_and_round_are_clear_errors(served: Served, tmp_path: Path) -> None:
    with pytest.raises(RegistryRequestError, match="no run 'nope'"):
        pull(URL, served.token, "nope", "best", tmp_path / "a", insecure=True, http=served.http)
    with pytest.raises(RegistryRequestError, match=r"no run '\.\./x'"):
        pull(URL, served.token, "../x", "best", tmp_path / "a", insecure=True, http=served.http)
    with pytest.raises(RegistryRequestError, match=r"no weights for round 9.*0, 1, 2"):
        served.pull(tmp_path / "a", which=9)
    assert leftovers(tmp_path / "a") == []


def test_list_runs(served: Served) -> None:
    with RegistryClient(URL, served.token, insecure=True, http=served.http) as client:
        runs = client.runs()
    assert [r["run-id"] for r in runs] == [RUN_ID]
    assert runs[0]["best-round"] == BEST_ROUND


@pytest.mark.parametrize(
    ("url", "token", "insecure", "match"),
    [
        ("http://registry:9095", "fwd_x", False, "plain http.*--insecure"),
        ("registry:9095", "fwd_x", False, "must be a URL"),
        ("ftp://registry", "fwd_x", False, "must be a URL"),
        ("https://", "fwd_x", False, "must be a URL"),
        ("https://registry:9095", None, False, "FEDWARD_REGISTRY_TOKEN"),
        ("https://registry:9095", "  ", False, "FEDWARD_REGISTRY_TOKEN"),
        ("https://registry:9095", "fwd_é", False, "copy it again"),
    ],
)
def test_bad_arguments_are_config_errors(url: str, token: str | None, insecure: bool, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RegistryClient(url, token, insecure=insecure)


def test_a_bad_ca_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("not a certificate", encoding="utf-8")
    with pytest.raises(ConfigError, match="--ca"):
        RegistryClient("https://registry:9095", "fwd_x", ca=tmp_path / "ca.crt")


@pytest.mark.parametrize(("text", "expected"), [("best", "best"), ("BEST", "best"), ("0", 0), ("12", 12), (3, 3)])
def test_parse_which(text: str | int, expected: str | int) -> None:
    assert parse_which(text) == expected


@pytest.mark.parametrize("text", ["-1", "1.5", "last", "", "../1", -2])
def test_parse_which_refuses_the_rest(text: str | int) -> None:
    with pytest.raises(ConfigError, match="--round"):
        parse_which(text)


def test_nothing_listening_names_the_url_and_suggests_ca(tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{free_port()}"
    with pytest.raises(RegistryRequestError) as caught:
        list_runs(url, "fwd_x")
    assert url in str(caught.value) and "--ca" in str(caught.value)
    with pytest.raises(RegistryRequestError, match=url):
        pull(url, "fwd_x", RUN_ID, "best", tmp_path / "out")
    assert leftovers(tmp_path / "out") == []
