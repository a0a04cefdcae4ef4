"""Bad input at the CLI: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from fixtures.synthetic import write_npz
from typer.testing import CliRunner

from fedward.cli.main import app

runner = CliRunner()


def check_one_line_error(args: list[str], expected: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = result.stderr.strip() if result.stderr else result.output.strip()
    assert "Traceback" not in result.output
    assert expected in text, text
    assert len(text.splitlines()) == 1 or text.startswith("error:"), text


def test_nonexistent_data_dir() -> None:
    check_one_line_error(["simulate", "--data-dir", "/nonexistent"], "data directory /nonexistent does not exist")


def test_truncated_npz(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "pneumoniamnist.npz")
    path.write_bytes(path.read_bytes()[:300])
    check_one_line_error(
        ["simulate", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "runs")],
        "truncated or corrupt",
    )


def test_unknown_dataset(tmp_path: Path) -> None:
    check_one_line_error(
        ["simulate", "--dataset", "nosuchmnist", "--data-dir", str(tmp_path)], "unknown dataset 'nosuchmnist'"
    )


def test_unknown_model() -> None:
    check_one_line_error(["simulate", "--model", "vgg99"], "model.name: unknown value 'vgg99'")


def test_zero_hospitals() -> None:
    check_one_line_error(["simulate", "--hospitals", "0"], "federation.hospitals must be >= 1")


def test_bad_set_override() -> None:
    check_one_line_error(["centralized", "--set", "rounds=3"], "--set expects section.key=value")


@pytest.mark.slow
def test_installed_console_script_exit_code() -> None:
    script = shutil.which("fedward")
    if script is None:
        pytest.skip("fedward console script not installed")
    result = subprocess.run(
        [script, "simulate", "--data-dir", "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: data directory /nonexistent does not exist"]
    assert "Traceback" not in result.stdout + result.stderr
