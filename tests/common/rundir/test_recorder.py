"""Run records: metrics files, weights per round, best model by validation AUC, model card, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fedward.common.choices import ModelName, Task
from fedward.common.config import RunConfig, RunSpec
from fedward.common.fileio import sha256_of
from fedward.common.ml.networks import build_network
from fedward.common.rundir.card import HospitalEntry, RunEnding, build_model_card, render_markdown, write_model_card
from fedward.common.rundir.info import read_run_info
from fedward.common.rundir.layout import new_run_dir
from fedward.common.rundir.recorder import RunRecorder, rows_to_csv
from fedward.common.schema import DatasetSchema


@pytest.fixture
def spec(tmp_path: Path) -> RunSpec:
    cfg = RunConfig.from_mapping({"federation": {"rounds": 3}, "run": {"output-dir": str(tmp_path / "runs")}})
    return RunSpec(cfg, DatasetSchema(Task.BINARY, ("normal", "pneumonia"), 1))


def new_dir(spec: RunSpec) -> Path:
    return new_run_dir(spec.config.run.output_dir, spec.config.data.dataset)


def test_run_directory_contents_and_best_model(spec: RunSpec) -> None:
    run_dir = new_dir(spec)
    recorder = RunRecorder(run_dir, spec, mode="federated")
    model = build_network(ModelName.SMALL_CNN, 1, 2)
    for server_round, val_auc in [(0, None), (1, 0.80), (2, 0.90), (3, 0.85)]:
        with torch.no_grad():
            next(model.parameters()).fill_(float(server_round))
        metrics = {"test-auc": 0.5 + server_round / 10}
        if val_auc is not None:
            metrics["val-auc"] = val_auc
        recorder.record_round(
            server_round,
            model.state_dict(),
            metrics,
            [{"hospital": "h-0", "phase": "train", "num-examples": 10}],
        )
    recorder.finish("completed")
    card = build_model_card(
        recorder, RunEnding("completed", hospitals=[HospitalEntry("h-0", 10, 2)], parameters=123, test_images=624)
    )
    write_model_card(run_dir, card)

    for name in (
        "config.toml",
        "run.json",
        "status.json",
        "metrics/server.jsonl",
        "metrics/server.csv",
        "metrics/hospitals.jsonl",
        "metrics/hospitals.csv",
        "models/round-000.safetensors",
        "models/round-003.safetensors",
        "models/best.safetensors",
        "models/best.json",
        "model_card.json",
        "model_card.md",
        "plots/learning_curves.png",
    ):
        assert (run_dir / name).is_file(), name
    assert RunConfig.from_toml(run_dir / "config.toml") == spec.config
    assert read_run_info(run_dir).schema == spec.schema
    best = load_file(str(run_dir / "models" / "best.safetensors"))
    first = next(iter(model.state_dict()))
    assert float(best[first].flatten()[0]) == 2.0  # round 2 had the best validation AUC
    assert json.loads((run_dir / "models" / "best.json").read_text())["round"] == 2
    rows = (run_dir / "metrics" / "server.jsonl").read_text().splitlines()
    assert [json.loads(r)["round"] for r in rows] == [0, 1, 2, 3]
    assert (run_dir / "metrics" / "server.csv").read_text().splitlines()[0].startswith("round,")
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["state"], status["round"], status["best"]["round"]) == ("completed", 3, 2)

    assert card["selection"] == {
        "metric": "val-auc",
        "round": 2,
        "value": 0.9,
        "note": card["selection"]["note"],
        "validation": card["selection"]["validation"],
    }
    assert "next round's training message" in card["selection"]["validation"]  # federation.evaluate-in-train
    assert card["metrics"]["best"]["test-auc"] == pytest.approx(0.7)
    assert card["weights"]["best"]["sha256"] == sha256_of(run_dir / "models" / "best.safetensors")
    assert card["dataset"]["classes"] == ["normal", "pneumonia"]
    assert card["hospitals"] == [
        {
            "name": "h-0",
            "train_images": 10,
            "val_images": 2,
            "class_counts": None,
            "files_skipped": 0,
            "fedward": None,
            "device": None,
        }
    ]
    assert {"flwr", "torch", "monai", "fedward", "python"} <= set(card["versions"])
    markdown = render_markdown(card)
    assert "Selected model: round 2 by val-auc" in markdown and card["weights"]["best"]["sha256"] in markdown


def test_without_validation_auc_the_last_round_stands_in(spec: RunSpec) -> None:
    recorder = RunRecorder(new_dir(spec), spec, mode="centralized")
    model = build_network(ModelName.SMALL_CNN, 1, 2)
    recorder.record_round(0, model.state_dict(), {})
    recorder.record_round(1, model.state_dict(), {"train-loss": 0.3})
    recorder.finish("completed")
    assert (recorder.run_dir / "models" / "best.safetensors").is_file()
    assert build_model_card(recorder, RunEnding("completed"))["selection"]["round"] == 1


def test_run_directories_are_never_reused(spec: RunSpec) -> None:
    assert new_dir(spec) != new_dir(spec)


def test_csv_union_of_columns() -> None:
    text = rows_to_csv([{"round": 0, "a": 1}, {"round": 1, "b": 2}])
    assert text.splitlines() == ["round,a,b", "0,1,", "1,,2"]


def test_the_enrolled_hospitals_file_is_rewritten_only_when_they_change(spec: RunSpec) -> None:
    recorder = RunRecorder(new_dir(spec), spec, mode="federated")
    path = recorder.run_dir / "hospitals.json"
    site = {"name": "h-0", "train_images": 10, "val_images": 2, "fedward": "0.2.0", "device": "cpu"}
    recorder.record_hospitals([site])
    first = json.loads(path.read_text())
    assert first["hospitals"] == [site]
    recorder.record_hospitals([dict(site)])
    assert json.loads(path.read_text()) == first  # unchanged: not rewritten (same time stamp)
    recorder.record_hospitals([site, {**site, "name": "h-1"}])
    assert [h["name"] for h in json.loads(path.read_text())["hospitals"]] == ["h-0", "h-1"]
