"""CLI commands that need no simulation: data describe, version, help."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fedward.cli.main import app

runner = CliRunner()


def test_data_describe_prints_the_class_table(real_data_dir: Path) -> None:
    result = runner.invoke(
        app,
        [
            "data",
            "describe",
            "--data-dir",
            str(real_data_dir),
            "--hospitals",
            "5",
            "--partition",
            "dirichlet",
            "--alpha",
            "0.5",
            "--seed",
            "0",
        ],
        env={"COLUMNS": "160"},
    )
    assert result.exit_code == 0, result.output
    for text in ("hospital-0", "hospital-4", "total", "normal", "pneumonia", "4708", "label skew"):
        assert text in result.output


def test_version_lists_the_libraries() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    for name in ("fedward", "flwr", "torch", "monai"):
        assert name in result.output


def test_run_commands_share_their_flags() -> None:
    simulate = runner.invoke(app, ["simulate", "--help"], env={"COLUMNS": "200"}).output
    centralized = runner.invoke(app, ["centralized", "--help"], env={"COLUMNS": "200"}).output
    for flag in (
        "--config",
        "--set",
        "--hospitals",
        "--partition",
        "--alpha",
        "--rounds",
        "--seed",
        "--strategy",
        "--client-gpus",
        "--init-weights",
        "--device",
    ):
        assert flag in simulate and flag in centralized
