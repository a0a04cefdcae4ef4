"""``fedward model list|pull``: list a model registry's runs, download a global model from it and verify it.

Commands are registered on :data:`fedward.cli.model_commands.model_app`. The registry's
defaults (the token's environment variable) come from :mod:`fedward.common.registry_api`;
heavy imports stay inside the commands so that ``fedward --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fedward.cli.model_commands import model_app
from fedward.common.registry_api import BEST, TOKEN_ENV

__all__ = ["model_app"]

console = Console()

Registry = Annotated[
    str, typer.Option("--registry", help="The registry's URL, https://HOST:PORT.", envvar="FEDWARD_REGISTRY")
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        help=f"Bearer token (better: the {TOKEN_ENV} environment variable, kept out of shell history).",
        envvar=TOKEN_ENV,
        show_envvar=False,
    ),
]
Ca = Annotated[Path | None, typer.Option("--ca", help="The federation's CA certificate (ca.crt).")]
Insecure = Annotated[bool, typer.Option("--insecure", help="Allow a plain http:// registry (development only).")]


def _number(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and not isinstance(value, bool) else ""


@model_app.command("list")
def model_list(
    registry: Registry,
    token: Token = None,
    ca: Ca = None,
    insecure: Insecure = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the runs a model registry serves."""
    from fedward.client.evaluator.pull import list_runs

    runs = list_runs(registry, token, ca, insecure=insecure)
    if as_json:
        console.print_json(json.dumps(runs))
        return
    table = Table("run", "status", "rounds", "best val-auc", "test-auc", "epsilon", title=f"runs on {registry}")
    for run in runs:
        table.add_row(
            str(run.get("run-id", "")),
            str(run.get("status", "")),
            f"{run.get('rounds-done', '')}/{run.get('rounds', '')}",
            _number(run.get("best-value")),
            _number(run.get("test-auc")),
            _number(run.get("epsilon"), 2),
        )
    console.print(table)


@model_app.command("pull")
def model_pull(
    run: Annotated[str, typer.Argument(help="The run id (see 'fedward model list').")],
    registry: Registry,
    out: Annotated[Path, typer.Option("--out", help="Folder for the weights, model card, config and run.json.")],
    token: Token = None,
    which: Annotated[str, typer.Option("--round", help=f"{BEST!r} or a round number.")] = BEST,
    ca: Ca = None,
    insecure: Insecure = False,
) -> None:
    """Download a run's weights, model card, config and run.json; keep them only if the SHA-256 matches."""
    from fedward.client.evaluator.pull import parse_which, pull

    pulled = pull(registry, token, run, parse_which(which), out, ca, insecure=insecure)
    console.print(
        f"pulled run {pulled.run} round {pulled.round}: {pulled.path} ({pulled.bytes} bytes, sha256 {pulled.sha256}, "
        "verified)",
        highlight=False,
    )
    for path in pulled.files[1:]:
        console.print(f"  {path}", highlight=False)
