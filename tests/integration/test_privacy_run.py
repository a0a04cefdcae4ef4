"""A real simulated federation with client-level DP, DP-SGD and a privacy budget.

3 hospitals on the real chest X-rays, client-side fixed clipping (noise multiplier 1.0,
delta 1e-3) plus DP-SGD at every hospital, 4 rounds planned and a max-epsilon that only
two rounds fit: the run must stop after round 2, keep that model, record the epsilon of
every round as the accountant computes it, and say why it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.cli import fedward

from fedward.common.ml.accounting import ClientLevelGaussian

pytestmark = pytest.mark.slow

MECHANISM = ClientLevelGaussian(1.0, hospitals=3, sampled=3)
BUDGET = (MECHANISM.epsilon(2, 1e-3) + MECHANISM.epsilon(3, 1e-3)) / 2


@pytest.fixture(scope="module")
def private_run(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("private")
    privacy = {
        "client-dp": "client-fixed",
        "noise-multiplier": "1.0",
        "clipping-norm": "1.0",
        "delta": "1e-3",
        "max-epsilon": f"{BUDGET:.6f}",
        "dpsgd": "true",
        "dpsgd-target-epsilon": "8",
    }
    sets = [arg for key, value in privacy.items() for arg in ("--set", f"privacy.{key}={value}")]
    result = fedward(
        "simulate", "--data-dir", str(real_data_dir), "--hospitals", "3", "--partition", "iid", "--seed", "0",
        "--rounds", "4", "--local-epochs", "1", "--output-dir", str(out), *sets,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]  # beside it: the runs index (runs.sqlite)
    return run_dir


def test_the_budget_stops_the_run_after_the_last_round_that_fits(private_run: Path) -> None:
    rows = [json.loads(line) for line in (private_run / "metrics" / "server.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2]
    for row in rows[1:]:
        assert row["epsilon"] == pytest.approx(MECHANISM.epsilon(row["round"], 1e-3))
        assert 0 < row["dpsgd-epsilon"] <= 8.0
    assert (private_run / "models" / "round-002.safetensors").is_file()
    assert not (private_run / "models" / "round-003.safetensors").exists()


def test_the_model_card_states_the_guarantees_and_why_it_stopped(private_run: Path) -> None:
    card = json.loads((private_run / "model_card.json").read_text())
    assert card["run"]["status"] == "completed"
    assert "privacy budget" in card["run"]["stop_reason"] and "max-epsilon" in card["run"]["stop_reason"]
    hospital, image = card["privacy"]["guarantees"]
    assert hospital["unit"] == "hospital" and hospital["delta"] == 1e-3 and hospital["rounds"] == 2
    assert hospital["epsilon"] == pytest.approx(MECHANISM.epsilon(2, 1e-3)) and hospital["epsilon"] <= BUDGET
    assert hospital["noise_multiplier"] == 1.0 and hospital["clipping_norm"] == 1.0
    assert image["unit"] == "image" and image["delta"] == 1e-5 and 0 < image["epsilon"] <= 8.0
    assert image["clipping_norm"] == 1.0 and "target epsilon 8" in image["noise_multiplier"]
    assert "Poisson" in image["sampling"] and image["local_epochs"] == 1  # the run trains 1 local epoch
    assert "stopped after round 2 of 4" in card["privacy"]["statement"]
    assert "Differential privacy" in (private_run / "model_card.md").read_text()
