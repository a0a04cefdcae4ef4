"""Model directories: run directories and pulled models open, verify their weights, load."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.model_dirs import CLASSES, flip_byte, pull_like, write_run
from fixtures.synthetic import write_npz

from fedward.client.evaluator.loaded_model import load_model, trained_network
from fedward.client.evaluator.model_dir import open_model_dir
from fedward.common.choices import Task
from fedward.common.data.images import make_dataset
from fedward.common.data.npz import read_npz
from fedward.common.errors import ConfigError, IntegrityError, ModelError
from fedward.common.ml.classify import predict


@pytest.fixture(scope="module")
def run_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("runs") / "run-a")


@pytest.fixture
def run_dir(run_template: Path, tmp_path: Path) -> Path:
    """A fresh copy (tests may tamper with it)."""
    return Path(shutil.copytree(run_template, tmp_path / "run-a"))


def test_run_directory_opens_best_model_verified(run_dir: Path) -> None:
    opened = open_model_dir(run_dir)
    assert opened.kind == "run"
    assert opened.weights == run_dir / "models" / "best.safetensors"
    assert opened.round == 1  # best by val-auc
    assert opened.verified_against == ("models/manifest.json", "model_card.json")
    assert opened.task is Task.BINARY and opened.classes == CLASSES
    prep = opened.preprocessing
    assert (prep.image_size, prep.channels, prep.value_range) == (28, 1, (0.0, 1.0))
    assert "round 1" in opened.describe() and "verified" in opened.describe()


def test_round_option_picks_that_rounds_weights(run_dir: Path) -> None:
    opened = open_model_dir(run_dir, round=2)
    assert opened.weights.name == "round-002.safetensors" and opened.round == 2
    assert opened.verified_against[0] == "models/manifest.json"
    best = trained_network(open_model_dir(run_dir)).state_dict()
    second = trained_network(opened).state_dict()
    assert any(not torch.equal(best[k], second[k]) for k in best)
    with pytest.raises(ModelError, match=r"round-007\.safetensors.*rounds: 0, 1, 2"):
        open_model_dir(run_dir, round=7)


def test_pulled_model_opens_verified_against_pull_record_and_card(run_dir: Path, tmp_path: Path) -> None:
    pulled = pull_like(run_dir, tmp_path / "pulled")
    opened = open_model_dir(pulled)
    assert opened.kind == "pulled" and opened.round == 1
    assert opened.verified_against == ("pull.json", "model_card.json")
    assert opened.sha256 == open_model_dir(run_dir).sha256
    with pytest.raises(ConfigError, match="--round applies to run directories"):
        open_model_dir(pulled, round=1)


def test_tampered_weights_are_refused_naming_the_file(run_dir: Path, tmp_path: Path) -> None:
    pulled = pull_like(run_dir, tmp_path / "pulled")
    flip_byte(run_dir / "models" / "best.safetensors")
    with pytest.raises(IntegrityError, match=r"best\.safetensors.*models/manifest\.json"):
        open_model_dir(run_dir)
    flip_byte(pulled / "model.safetensors")
    with pytest.raises(IntegrityError, match=r"model\.safetensors.*pull\.json"):
        open_model_dir(pulled)


def test_card_hash_is_checked_when_there_is_no_manifest(run_dir: Path) -> None:
    (run_dir / "models" / "manifest.json").unlink()
    assert open_model_dir(run_dir).verified_against == ("model_card.json",)
    flip_byte(run_dir / "models" / "best.safetensors")
    with pytest.raises(IntegrityError, match=r"model_card\.json"):
        open_model_dir(run_dir)


def test_missing_files_give_errors_naming_them(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        open_model_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a model directory"):
        open_model_dir(tmp_path / "empty")
    (run_dir / "models" / "best.safetensors").unlink()
    with pytest.raises(ModelError, match=r"best\.safetensors is missing"):
        open_model_dir(run_dir)
    (run_dir / "config.toml").unlink()
    with pytest.raises(ModelError, match=r"config\.toml is missing"):
        open_model_dir(run_dir)


def test_weights_that_do_not_fit_the_config_are_a_model_error(run_dir: Path) -> None:
    info = run_dir / "run.json"
    info.write_text(info.read_text().replace('"channels": 1', '"channels": 3'))
    with pytest.raises(ModelError, match=r"best\.safetensors does not fit smallcnn with 3 channel"):
        load_model(run_dir)


def test_probabilities_match_the_training_evaluation_path(run_dir: Path, tmp_path: Path) -> None:
    """Same scaling and activation as fedward.common.ml.inference.predict (server test metrics)."""
    loaded = load_model(run_dir)
    split = read_npz(write_npz(tmp_path / "tiny.npz"), ["test"])["test"]
    dataset = make_dataset(split, loaded.model_dir.schema, 28)
    ours = loaded.probabilities(dataset.images, batch_size=7)
    theirs, _ = predict(trained_network(loaded.model_dir), dataset, torch.device("cpu"))
    assert ours.dtype == np.float32 and ours.shape == (40, 2)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ModelError, match=r"shape \(N, 1, 28, 28\)"):
        loaded.probabilities(torch.zeros((2, 3, 28, 28), dtype=torch.uint8))


def test_dp_sgd_runs_rebuild_the_private_network(tmp_path: Path) -> None:
    run = write_run(tmp_path / "private-run", private=True)
    loaded = load_model(run)
    assert loaded.model_dir.private
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.network.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in loaded.network.modules())


def test_a_model_pulled_from_a_registry_opens_verified(tmp_path: Path) -> None:
    """The folder the real ``fedward model pull`` writes (in-process registry)."""
    testclient = pytest.importorskip("fastapi.testclient")
    from fixtures.registry import BEST_ROUND, RUN_ID
    from fixtures.registry import write_run as write_registry_run

    from fedward.client.evaluator.pull import pull
    from fedward.server.registry.service import create_app
    from fedward.server.registry.tokens import TokenStore

    store = tmp_path / "runs"
    write_registry_run(store)
    token = TokenStore.for_store(store).create("evaluator")
    with testclient.TestClient(create_app(store), base_url="http://registry.test") as http:
        pull("http://registry.test", token, RUN_ID, "best", tmp_path / "pulled", insecure=True, http=http)
        pull("http://registry.test", token, RUN_ID, 2, tmp_path / "round-2", insecure=True, http=http)
    best = open_model_dir(tmp_path / "pulled")
    assert best.kind == "pulled" and best.round == BEST_ROUND
    assert best.verified_against == ("pull.json", "model_card.json")
    final = open_model_dir(tmp_path / "round-2")
    assert final.round == 2 and final.verified_against == ("pull.json", "model_card.json")  # the card's final entry
    probabilities = load_model(best).probabilities(torch.zeros((3, 1, 28, 28), dtype=torch.uint8))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_a_model_pulled_from_a_run_without_a_card_opens_with_the_schema_of_run_json(tmp_path: Path) -> None:
    """run.json travels with the weights, so a pulled model of a run that has no card yet still opens."""
    testclient = pytest.importorskip("fastapi.testclient")
    from fixtures.registry import BEST_ROUND, RUN_ID
    from fixtures.registry import write_run as write_registry_run

    from fedward.client.evaluator.pull import pull
    from fedward.server.registry.service import create_app
    from fedward.server.registry.tokens import TokenStore

    store = tmp_path / "runs"
    run = write_registry_run(store)
    (run / "model_card.json").unlink()
    (run / "model_card.md").unlink()
    token = TokenStore.for_store(store).create("evaluator")
    with testclient.TestClient(create_app(store), base_url="http://registry.test") as http:
        pull("http://registry.test", token, RUN_ID, "best", tmp_path / "pulled", insecure=True, http=http)
    assert sorted(p.name for p in (tmp_path / "pulled").iterdir()) == [
        "config.toml",
        "model.safetensors",
        "pull.json",
        "run.json",
    ]
    opened = open_model_dir(tmp_path / "pulled")
    assert opened.kind == "pulled" and opened.round == BEST_ROUND and opened.card == {}
    assert opened.task is Task.BINARY and opened.classes == CLASSES
    assert opened.verified_against == ("pull.json",)
    probabilities = load_model(opened).probabilities(torch.zeros((2, 1, 28, 28), dtype=torch.uint8))
    assert probabilities.shape == (2, 2)
