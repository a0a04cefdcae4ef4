"""RunConfig: parsing, validation with field names, and the Flower/TOML round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedward.common.choices import ModelName, Partition, StrategyName, Task
from fedward.common.config import RunConfig, RunSpec
from fedward.common.errors import ConfigError
from fedward.common.schema import DatasetSchema


def test_defaults_are_valid_and_round_trip_through_flower_run_config() -> None:
    cfg = RunConfig()
    flat = cfg.to_flower()
    assert all("." in key for key in flat)
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())
    assert RunConfig.from_flower(flat) == cfg


def test_resolved_schema_and_paths_survive_the_round_trip(tmp_path: Path) -> None:
    cfg = RunConfig.from_mapping({"data": {"data-dir": str(tmp_path)}})
    spec = RunSpec(cfg, DatasetSchema(Task.BINARY, ("normal", "a, b"), 1), run_dir=tmp_path / "run", resume=True)
    again = RunSpec.from_flower(spec.to_flower())
    assert again == spec
    assert again.schema.classes == ("normal", "a, b")
    assert again.schema.num_outputs == 2
    assert not any(key.startswith("resolved.") for key in cfg.to_flower()), "found values stay out of the config"


def test_toml_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[federation]\nhospitals = 7\nrounds = 3\n[strategy]\nname = "fedprox"\nproximal-mu = 0.1\n')
    cfg = RunConfig.from_toml(path, {"federation.rounds": 9, "train.lr": "0.01"})
    assert cfg.federation.hospitals == 7
    assert cfg.federation.rounds == 9
    assert cfg.train.lr == pytest.approx(0.01)
    assert cfg.strategy.name is StrategyName.FEDPROX
    assert cfg.strategy.proximal_mu == pytest.approx(0.1)


def test_relative_paths_in_a_file_are_relative_to_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "run.toml").write_text('[data]\ndata-dir = "../data"\n[run]\noutput-dir = "/abs/runs"\n')
    cfg = RunConfig.from_toml(folder / "run.toml", {"model.init-weights": "w.safetensors"})
    assert cfg.data.data_dir == folder.resolve() / ".." / "data"
    assert cfg.run.output_dir == Path("/abs/runs")
    assert cfg.model.init_weights == Path("w.safetensors")


def test_toml_output_parses_back(tmp_path: Path) -> None:
    cfg = RunConfig.from_mapping(
        {"federation": {"partition": "dirichlet", "alpha": 0.3}, "run": {"output-dir": str(tmp_path / "runs")}}
    )
    path = tmp_path / "config.toml"
    path.write_text(cfg.to_toml())
    assert RunConfig.from_toml(path) == cfg
    assert cfg.federation.partition is Partition.DIRICHLET


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"federation": {"hospitals": 0}}, "federation.hospitals must be >= 1"),
        ({"federation": {"hospitls": 3}}, "did you mean 'hospitals'"),
        ({"federaton": {"hospitals": 3}}, "did you mean 'federation'"),
        ({"federation": {"hospitals": "many"}}, "federation.hospitals must be an integer"),
        ({"federation": {"hospitals": 2.5}}, "federation.hospitals must be an integer"),
        ({"federation": {"alpha": 0}}, "federation.alpha must be in (0"),
        ({"federation": {"alpha": "nan"}}, "federation.alpha must be a finite number"),
        ({"train": {"lr": -1}}, "train.lr must be in (0"),
        ({"train": {"amp": "yes"}}, "train.amp must be true or false"),
        ({"model": {"name": "densnet121"}}, "did you mean 'densenet121'"),
        ({"strategy": {"name": "fedsgd"}}, "strategy.name: unknown value 'fedsgd'"),
        ({"data": {"image-size": 32}}, "data.image-size must be one of 28, 64, 128, 224"),
        ({"model": {"name": "densenet121"}}, "needs images of at least 32 px"),
        (
            {"strategy": {"name": "krum", "num-malicious": 2}, "federation": {"hospitals": 5}},
            "needs more than 6 hospitals",
        ),
        ({"federation": {"min-available": 9, "hospitals": 3}}, "cannot exceed federation.hospitals"),
        ({"federation": {"min-hospitals": 4, "hospitals": 3}}, "federation.min-hospitals (4) cannot exceed"),
        ({"federation": {"min-hospitals": 2, "min-available": 2}}, "or federation.min-available"),
        ({"federation": {"min-hospitals": 2, "min-hospitals-wait": 0}}, "federation.min-hospitals-wait must be in"),
        ({"hospitals": 3}, "must sit in a section"),
        ({"tracking": {"mlflow-uri": "ftp://host/x"}}, "tracking.mlflow-uri 'ftp://host/x': unsupported scheme"),
        ({"tracking": {"mlflow-uri": "http://"}}, "tracking.mlflow-uri 'http://' names no host"),
        ({"tracking": {"mlflow-experiment": " "}}, "tracking.mlflow-experiment must not be empty"),
        ({"tracking": {"tensorboard": "maybe"}}, "tracking.tensorboard must be true or false"),
        ({"tracking": {"mlflow-url": "x"}}, "did you mean 'mlflow-uri'"),
    ],
)
def test_invalid_values_name_the_field(mapping: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.from_mapping(mapping)
    assert message in str(err.value)


def test_model_fits_larger_images() -> None:
    cfg = RunConfig.from_mapping({"model": {"name": "efficientnet-b0"}, "data": {"image-size": 64}})
    assert cfg.model.name is ModelName.EFFICIENTNET_B0


def test_unresolved_schema_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"resolved\.\* values"):
        RunSpec.from_flower(RunConfig().to_flower())
    with pytest.raises(ConfigError, match="unknown config section"):
        RunConfig.from_mapping({"resolved.task": "binary"})  # users cannot set found values
    with pytest.raises(ConfigError, match=r"declare data\.task, data\.classes and data\.channels together"):
        RunConfig.from_mapping({"data": {"classes": ["a", "b"]}})
    declared = RunConfig.from_mapping({"data": {"task": "binary", "classes": ["a", "b"], "channels": 1}})
    assert declared.data.declared_schema() == DatasetSchema(Task.BINARY, ("a", "b"), 1)


def test_bad_toml_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[federation\nhospitals = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        RunConfig.from_toml(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        RunConfig.from_toml(tmp_path / "missing.toml")


def test_config_is_frozen() -> None:
    cfg = RunConfig()
    with pytest.raises(AttributeError):
        cfg.federation.rounds = 3  # type: ignore[misc]


def test_tracking_section_parses_and_reaches_flower(tmp_path: Path) -> None:
    from fedward.common.config.overrides import parse_sets
    from fedward.common.config.tracking import absolute_mlflow_uri

    sets = parse_sets(["tracking.mlflow-uri=http://127.0.0.1:5000", "tracking.tensorboard=true"])
    cfg = RunConfig.from_mapping(sets)
    assert cfg.tracking.enabled and cfg.tracking.tensorboard and cfg.tracking.mlflow_experiment == "fedward"
    assert cfg.to_flower()["tracking.mlflow-uri"] == "http://127.0.0.1:5000"
    assert RunConfig.from_flower(cfg.to_flower()) == cfg
    path = tmp_path / "run.toml"
    path.write_text('[tracking]\nmlflow-uri = "sqlite:///m.db"\nmlflow-experiment = "pneumonia"\n')
    assert RunConfig.from_toml(path).tracking.mlflow_experiment == "pneumonia"
    assert not RunConfig().tracking.enabled
    assert absolute_mlflow_uri("mlruns") == str(Path("mlruns").resolve())
    assert absolute_mlflow_uri("https://x:1") == "https://x:1"


def test_missing_tracking_package_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from fedward.common.config import tracking

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "mlflow" else real(name))
    cfg = RunConfig.from_mapping({"tracking": {"mlflow-uri": "http://127.0.0.1:5000"}})
    with pytest.raises(ConfigError, match=r"tracking\.mlflow-uri needs the mlflow package.*fedward\[tracking\]"):
        tracking.check_tracking_installed(cfg.tracking)
