"""``fedward model ...`` and ``fedward predict``: what evaluators run.

Thin like the rest of the CLI: parse, call the rooms, print. Commands are added by
:mod:`fedward.cli.model_commands` (export, evaluate, predict) and
:mod:`fedward.cli.pull` (list, pull from a model registry).
"""

from __future__ import annotations

import typer

model_app = typer.Typer(help="Evaluators: pull, export, evaluate and use a global model.", no_args_is_help=True)
