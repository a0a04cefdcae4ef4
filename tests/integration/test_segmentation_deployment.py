"""Hippocampus federation through a real TLS deployment on exported DICOM series + SEG, against its NIfTI simulation.

One module-scoped scenario, through the installed ``fedward`` command only: a small
Decathlon folder (16 train / 4 test real Hippocampus volumes) is copied into tmp_path;
``fedward simulate`` runs 2 hospitals x 1 round of a 3D U-Net on it; ``fedward data export``
writes the same 2 hospitals' cases as DICOM MR series with a DICOM SEG each; then
``certs init`` -> ``server start`` (no data on the coordinator) -> the two hospitals
registered under the simulation's names -> two ``client start`` on the exported folders ->
``run start`` with the simulation's settings and a declared segmentation schema. The
deployed run must complete, record the federated validation Dice of round 1 from both
hospitals, train and validate each hospital on as many cases as the simulated one, and
reach the simulation's validation Dice within 1e-3 (the issue asks 0.01). Every process started here is stopped
in a ``finally``, pass or fail, and the test checks none is left.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fixtures.cli import fedward
from fixtures.deadlines import deadline
from fixtures.deployment import (
    Processes,
    finished_run,
    hospitals_status,
    register_hospitals,
    run_scenario,
    start_coordinator,
    start_run,
    wait_for,
)
from fixtures.processes import unused_port
from fixtures.seg_folders import decathlon_subset, hippocampus_cases

from fedward.common.flower.processes import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(deadline(1200))]

HOSPITALS = ("hospital-0", "hospital-1")
"""The simulation's names: each hospital's training seed derives from its name, so the deployed ones share them."""
CASES = {"train": 16, "test": 4}
"""The first cases of each split of the shared splits.csv (the source's ``val`` split is not part of a plan)."""
RUN_TIMEOUT_S = 600.0
"""A hang guard for one run, not a performance target."""
DICE_TOLERANCE = 1e-3
"""Tighter than the issue's 0.01: after one round Dice is near its untrained value, so only a small
tolerance tells a faithful deployment (measured gap 1.5e-6, int16 rescaling of float NIfTI) from a wrong one."""

DATA = (
    "--dataset", "hippocampus", "--hospitals", "2", "--seed", "0",
    "--set", "data.volume-size=[48,64,48]",
    "--set", "federation.min-hospital-size=4",  # 16 training cases for 2 hospitals
)  # fmt: skip
"""What decides which cases each hospital holds and how they are read: the simulation, the export and the run."""
TRAINING = ("--model", "unet", "--rounds", "1", "--local-epochs", "1", "--set", "train.batch-size=4")
DECLARED_SCHEMA = (
    "--set", "data.task=segmentation",
    "--set", 'data.classes=["background","anterior","posterior"]',
    "--set", "data.channels=1",
    "--set", "data.modality=MR",
)  # fmt: skip
"""A coordinator without the data learns the schema from the run config."""


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@dataclass
class Outcome:
    simulated: Path
    deployed: Path
    run_row: dict[str, Any]
    logs: Path
    exit_codes: dict[str, int] = field(default_factory=dict)
    left_behind: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    cases = hippocampus_cases(CASES)
    tmp = tmp_path_factory.mktemp("seg-deploy")
    outcome, left_behind = run_scenario(lambda processes: _scenario(tmp, cases, processes))
    outcome.left_behind = left_behind
    yield outcome


def _scenario(tmp: Path, cases: list[str], processes: Processes) -> Outcome:
    data_dir, exported, certs, keys, state = (tmp / name for name in ("data", "exported", "certs", "keys", "state"))
    decathlon_subset(data_dir / "hippocampus", cases)
    local = ("--data-dir", str(data_dir), "--set", f"data.cache-dir={tmp / 'cache'}")

    # The export carries no model, but its run is set up like any other: a segmentation network.
    result = fedward("data", "export", *DATA, *local, "--out", str(exported))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in exported.iterdir()) == list(HOSPITALS)

    result = fedward("simulate", *DATA, *TRAINING, *local, "--output-dir", str(tmp / "simulated"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (simulated,) = [p for p in (tmp / "simulated").iterdir() if p.is_dir()]  # beside it: the runs index

    assert fedward("certs", "init", "--out", str(certs)).returncode == 0
    for name in HOSPITALS:
        assert fedward("certs", "node", name, "--out", str(keys)).returncode == 0
    port = free_port()
    server = start_coordinator(
        processes, tmp / "server.log", state, "server", "start", "--certs", str(certs), "--state", str(state),
        "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    register_hospitals(state, keys, HOSPITALS)
    agents = {}
    for name in HOSPITALS:  # one thread each, as a simulated hospital with simulation.client-cpus = 1
        agents[name] = processes.start(
            tmp / f"{name}.log", "client", "start", "--superlink", f"127.0.0.1:{port}", "--ca", str(certs / "ca.crt"),
            "--key", str(keys / f"{name}.key"), "--data", str(exported / name), "--port", str(unused_port()),
            "--threads", "1", "--cache-dir", str(tmp / "cache" / name),
        )  # fmt: skip
    wait_for(
        lambda: (s := hospitals_status(state)) and all(s.get(n, {}).get("status") == "online" for n in HOSPITALS),
        180,
        "two online hospitals",
        interval=3,
    )

    run_id = start_run(state, *DATA, *TRAINING, *DECLARED_SCHEMA)
    row = wait_for(lambda: finished_run(state, run_id), RUN_TIMEOUT_S, f"run {run_id} to finish", interval=3)
    exit_codes = {name: processes.stop(agent) for name, agent in agents.items()}
    exit_codes["server"] = processes.stop(server)
    return Outcome(simulated=simulated, deployed=Path(row["path"]), run_row=row, logs=tmp, exit_codes=exit_codes)


def hospital_rows(run_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Round 1's reply of each (hospital, phase)."""
    rows = [r for r in jsonl(run_dir / "metrics" / "hospitals.jsonl") if r["round"] == 1]
    keyed = {(r["hospital"], r["phase"]): r for r in rows}
    assert len(keyed) == len(rows), rows
    return keyed


def round_one(run_dir: Path) -> dict[str, Any]:
    (row,) = [r for r in jsonl(run_dir / "metrics" / "server.jsonl") if r["round"] == 1]
    return row


def test_deployed_run_completes_with_round_one_from_both_hospitals(runs: Outcome) -> None:
    assert runs.run_row["flower-status"] == "finished:completed" and runs.run_row["status"] == "completed", (
        runs.run_row,
        (runs.logs / "server.log").read_text(errors="replace")[-3000:],
    )
    for run_dir in (runs.simulated, runs.deployed):
        assert json.loads((run_dir / "status.json").read_text())["state"] == "completed", run_dir
        row = round_one(run_dir)
        assert isinstance(row.get("val-dice"), float) and 0.0 <= row["val-dice"] <= 1.0, row
        assert row["hospitals-trained"] == 2 and row["hospitals-evaluated"] == 2, row
        assert set(hospital_rows(run_dir)) == {(h, p) for h in HOSPITALS for p in ("train", "evaluate")}
    card = json.loads((runs.deployed / "model_card.json").read_text())
    assert card["dataset"]["task"] == "segmentation" and card["dataset"]["spatial_dims"] == 3
    assert card["dataset"]["classes"] == ["background", "anterior", "posterior"]
    assert card["dataset"]["preprocessing"]["grid"] == [48, 64, 48]


def test_each_deployed_hospital_holds_the_simulated_hospital_s_cases(runs: Outcome) -> None:
    def counts(run_dir: Path) -> dict[str, tuple[int, int]]:
        card = json.loads((run_dir / "model_card.json").read_text())
        return {h["name"]: (h["train_images"], h["val_images"]) for h in card["hospitals"]}

    simulated, deployed = counts(runs.simulated), counts(runs.deployed)
    assert set(simulated) == set(HOSPITALS) and sum(t + v for t, v in simulated.values()) == CASES["train"]
    assert deployed == simulated
    simulated_rows, deployed_rows = hospital_rows(runs.simulated), hospital_rows(runs.deployed)
    for key, row in simulated_rows.items():  # the images trained on and validated on this round
        assert deployed_rows[key]["num-examples"] == row["num-examples"], key


def test_deployed_validation_dice_matches_the_simulation(runs: Outcome) -> None:
    simulated, deployed = round_one(runs.simulated)["val-dice"], round_one(runs.deployed)["val-dice"]
    per_hospital = {
        name: (row["val-dice"], hospital_rows(runs.deployed)[(name, "evaluate")]["val-dice"])
        for (name, phase), row in hospital_rows(runs.simulated).items()
        if phase == "evaluate"
    }
    assert abs(deployed - simulated) <= DICE_TOLERANCE, (
        f"federated validation Dice: deployment {deployed:.6f}, simulation {simulated:.6f} "
        f"(per hospital, simulated vs deployed: {per_hospital})"
    )


def test_every_process_stops_cleanly(runs: Outcome) -> None:
    assert runs.exit_codes == {"hospital-0": 0, "hospital-1": 0, "server": 0}
    assert not runs.left_behind
