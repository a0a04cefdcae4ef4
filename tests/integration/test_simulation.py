"""A real simulated federation on the real chest X-rays, through the installed CLI.

Flower's simulation runtime (a SuperLink in simulation mode, Ray) runs the same
ServerApp/ClientApp as deployment: 3 hospitals x 2 rounds, twice with the same seed.
The second run is killed with SIGKILL in round 2 (the whole process tree: CLI,
SuperLink, simulation runtime, Ray) and resumed with ``fedward simulate --resume``; it
must end exactly where the uninterrupted first run ended.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from fixtures.cli import ENV, fedward, fedward_cli
from fixtures.privacy import RECORD_COLUMNS, is_hospital_metric_key
from fixtures.processes import kill_tree, live_flower_processes, wait_until_gone
from fixtures.weights import weights_digest

pytestmark = pytest.mark.slow

VOLATILE = ("time", "elapsed-s", "train-seconds", "eval-seconds")
OPERATING_POINT = (
    "temperature",
    "threshold",
    "ece",
    "ece-uncalibrated",
    "brier",
    "brier-uncalibrated",
)
"""What the operating point adds to each round's validation figures (issue 14)."""
REFERENCE = Path(__file__).parent / "reference" / "simulation_3x2.json"
"""Per-round metrics of the first run below, recorded before the restructure into rooms."""


SETTINGS = ["--hospitals", "3", "--partition", "dirichlet", "--alpha", "1.0", "--seed", "0"]
SETTINGS += ["--set", "train.amp=false"]  # the reference was recorded in float32, before bfloat16 on CPUs
TRAINING = ["--rounds", "2", "--local-epochs", "1"]


def run_simulation(out: Path, data_dir: Path, *extra: str) -> Path:
    result = fedward("simulate", "--data-dir", str(data_dir), *TRAINING, *SETTINGS, "--output-dir", str(out), *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]  # beside it: the runs index (runs.sqlite)
    return run_dir


def server_rows(run_dir: Path) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in (run_dir / "metrics" / "server.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]


def checkpointed_round(run_dir: Path) -> int:
    from fedward.common.rundir.checkpoint import CHECKPOINT_FILE, load_checkpoint

    return load_checkpoint(run_dir).server_round if (run_dir / CHECKPOINT_FILE).is_file() else -1


def killed_and_resumed(out: Path, data_dir: Path) -> Path:
    """Start the same simulation, SIGKILL it once round 1 is checkpointed, resume it."""
    command = [fedward_cli(), "simulate", "--data-dir", str(data_dir), *TRAINING, *SETTINGS]
    process = subprocess.Popen(
        [*command, "--output-dir", str(out)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    run_dir = None
    try:
        while time.monotonic() < deadline and process.poll() is None:
            dirs = [p for p in out.iterdir() if p.is_dir()]
            if dirs and checkpointed_round(dirs[0]) >= 1:
                run_dir = dirs[0]
                break
            time.sleep(0.2)
    finally:
        kill_tree(process.pid)
        process.wait(timeout=30)
    assert run_dir is not None, "round 1 was never checkpointed"
    assert checkpointed_round(run_dir) == 1, "the kill came too late: the run had finished round 2"
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"  # nothing closed it
    result = fedward("simulate", "--resume", str(run_dir))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> tuple[Path, Path]:
    """An uninterrupted run, and the same run killed with SIGKILL in round 2 and resumed."""
    before = live_flower_processes()
    first = run_simulation(tmp_path_factory.mktemp("first"), real_data_dir)
    second = killed_and_resumed(tmp_path_factory.mktemp("second"), real_data_dir)
    assert not wait_until_gone(before), "the simulation SuperLink and its workers are gone"
    return first, second


def test_run_directory_is_complete(two_runs: tuple[Path, Path]) -> None:
    run_dir = two_runs[0]
    for name in (
        "config.toml",
        "run.json",
        "partitions.json",
        "status.json",
        "model_card.json",
        "model_card.md",
        "metrics/server.jsonl",
        "metrics/server.csv",
        "metrics/hospitals.jsonl",
        "metrics/hospitals.csv",
        "models/round-000.safetensors",
        "models/round-001.safetensors",
        "models/round-002.safetensors",
        "models/best.safetensors",
        "plots/learning_curves.png",
        "logs/flower.log",
    ):
        assert (run_dir / name).is_file(), name
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed"
    card = json.loads((run_dir / "model_card.json").read_text())
    assert [h["name"] for h in card["hospitals"]] == ["hospital-0", "hospital-1", "hospital-2"]
    assert card["dataset"]["name"] == "pneumoniamnist" and card["run"]["status"] == "completed"
    hospitals = [json.loads(line) for line in (run_dir / "metrics" / "hospitals.jsonl").read_text().splitlines()]
    assert {(h["round"], h["phase"]) for h in hospitals} == {(r, p) for r in (1, 2) for p in ("train", "evaluate")}
    assert len(hospitals) == 12


def test_only_counts_losses_and_metrics_reached_the_server(two_runs: tuple[Path, Path]) -> None:
    run_dir = two_runs[0]
    rows = [json.loads(line) for line in (run_dir / "metrics" / "hospitals.jsonl").read_text().splitlines()]
    assert all(is_hospital_metric_key(k) or k in RECORD_COLUMNS for k in set().union(*rows))
    logs = (run_dir / "logs" / "server.log").read_text() + (run_dir / "logs" / "flower.log").read_text()
    assert "tensor(" not in logs and "array(" not in logs


def test_the_global_model_beats_round_zero(two_runs: tuple[Path, Path]) -> None:
    rows = server_rows(two_runs[0])
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[2]["test-auc"] > rows[0]["test-auc"] + 0.2  # type: ignore[operator]
    assert rows[2]["val-auc"] > 0.85  # type: ignore[operator]
    assert rows[2]["hospitals-trained"] == 3 and rows[2]["hospitals-rejected"] == 0


def test_same_seed_same_per_round_metrics(two_runs: tuple[Path, Path]) -> None:
    """Same seed, same metrics in every round, even across a SIGKILL and a resume."""
    assert server_rows(two_runs[0]) == server_rows(two_runs[1])


def test_per_round_metrics_equal_the_recorded_reference(two_runs: tuple[Path, Path]) -> None:
    """The same settings give the metrics recorded before the code was reorganised into rooms.

    On the machine kind and PyTorch build it was recorded with, every value is identical. Where
    PyTorch picks other CPU kernels (another instruction set: AVX2 against the recorded AVX512),
    last-bit differences grow through two rounds of training (measured: test AUC 0.0163 apart
    after round 1 of this small run), so each value is compared within 0.05; counts stay exact.

    Since issue 14 the figures that depend on a decision threshold (accuracy, sensitivity,
    specificity, F1) are taken at the operating point chosen on validation rather than at
    0.5, and the operating point's own figures are added: those are not compared with the
    reference; AUC, losses and counts still are.
    """
    import torch

    reference = json.loads(REFERENCE.read_text())
    recorded = reference["recorded-with"]
    same_kernels = (torch.__version__, torch.backends.cpu.get_cpu_capability()) == (
        recorded["torch"],
        recorded["cpu-capability"],
    )
    added = {"val-balanced-accuracy", "test-balanced-accuracy"}  # reported since segmentation came (issue 12)
    added |= {f"val-{k}" for k in OPERATING_POINT} | {"operating-hospitals", "test-ece", "test-brier"}  # issue 14
    thresholded = {
        f"{split}-{k}" for split in ("val", "test") for k in ("accuracy", "sensitivity", "specificity", "f1")
    }
    full = server_rows(two_runs[0])
    assert [sorted(set(r) - added) for r in full] == [sorted(r) for r in reference["rows"]], "the same metrics"
    rows = [{k: v for k, v in r.items() if k not in added | thresholded} for r in full]
    reference["rows"] = [{k: v for k, v in r.items() if k not in thresholded} for r in reference["rows"]]
    # The untrained model's test scores (round 0) show whether this machine's kernels are the
    # recorded ones: the same capability name can hide another CPU model whose oneDNN kernels
    # round the last bits differently (measured: test loss 0.7002260191 against 0.7002260190).
    same_kernels = same_kernels and rows[0] == reference["rows"][0]
    if same_kernels:
        assert rows == reference["rows"]
    else:
        for got, want in zip(rows, reference["rows"], strict=True):
            assert got == pytest.approx(want, rel=0.0, abs=0.05), (got, want)


def test_sigkill_and_resume_ends_with_the_identical_model(two_runs: tuple[Path, Path]) -> None:
    straight, resumed = two_runs
    for name in ("round-001.safetensors", "round-002.safetensors", "best.safetensors"):
        assert weights_digest(resumed / "models" / name) == weights_digest(straight / "models" / name), name
    status = json.loads((resumed / "status.json").read_text())
    assert status["state"] == "completed" and [r["after-round"] for r in status["resumed"]] == [1]
    card = json.loads((resumed / "model_card.json").read_text())
    assert card["run"]["resumed_after_rounds"] == [1] and card["run"]["rounds_completed"] == 2
    hospitals = [json.loads(line) for line in (resumed / "metrics" / "hospitals.jsonl").read_text().splitlines()]
    assert len(hospitals) == 12, "no round's hospital rows are doubled by the resume"


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> Path:
    """The same federation over DICOM folders exported from PneumoniaMNIST, with planted PHI."""
    import pydicom
    from fixtures.dicom_folders import PHI

    exported = tmp_path_factory.mktemp("dicom")
    result = fedward("data", "export", "--data-dir", str(real_data_dir), *SETTINGS, "--out", str(exported))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for path in sorted((exported / "hospital-0" / "images").iterdir()):
        ds = pydicom.dcmread(path)
        for keyword, value in PHI.items():
            setattr(ds, keyword, value)
        ds.save_as(path, enforce_file_format=True)
    folders = [str(exported / f"hospital-{i}") for i in range(3)]
    cache = tmp_path_factory.mktemp("cache")
    extra = [arg for folder in folders for arg in ("--hospital-dir", folder)]
    return run_simulation(
        tmp_path_factory.mktemp("dicom-run"), real_data_dir, *extra, "--set", f"data.cache-dir={cache}"
    )


def test_dicom_folders_reach_the_npz_test_auc(two_runs: tuple[Path, Path], dicom_run: Path) -> None:
    npz, dicom = server_rows(two_runs[0]), server_rows(dicom_run)
    assert abs(dicom[-1]["test-auc"] - npz[-1]["test-auc"]) <= 0.01  # type: ignore[operator]
    card = json.loads((dicom_run / "model_card.json").read_text())
    assert [h["name"] for h in card["hospitals"]] == ["hospital-0", "hospital-1", "hospital-2"]


def test_no_patient_identifier_reached_the_server_or_a_log(dicom_run: Path) -> None:
    from fixtures.dicom_folders import PHI

    for path in dicom_run.rglob("*"):
        if path.is_file() and path.suffix != ".safetensors":
            text = path.read_text(errors="replace")
            for value in PHI.values():
                assert value not in text, f"{value} found in {path.relative_to(dicom_run)}"
