"""``fedward registry serve|token``: the coordinator's read-only model registry.

Heavy imports (FastAPI, uvicorn) stay inside the commands so that ``fedward --help``
stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedward.common.errors import ConfigError
from fedward.common.registry_api import DEFAULT_PORT, TOKEN_ENV

registry_app = typer.Typer(help="Coordinator: serve global models to evaluators over TLS.", no_args_is_help=True)
token_app = typer.Typer(help="Create, revoke and list the registry's bearer tokens.", no_args_is_help=True)
registry_app.add_typer(token_app, name="token")

console = Console()
err_console = Console(stderr=True)

Store = Annotated[
    Path | None, typer.Option("--store", help="The runs folder to serve (a simulation's ./runs, <state>/runs).")
]
State = Annotated[Path | None, typer.Option("--state", help="A coordinator's state folder: serve <state>/runs.")]


def runs_folder(store: Path | None, state: Path | None) -> Path:
    """The runs folder from ``--store`` or ``--state``.

    Raises:
        ConfigError: unless exactly one of them is given.
    """
    if (store is None) == (state is None):
        raise ConfigError("pass either --store RUNS_FOLDER or --state COORDINATOR_STATE_FOLDER")
    if store is not None:
        return store
    from fedward.server.coordinator.state import CoordinatorState

    return CoordinatorState(Path(str(state))).runs


@registry_app.command("serve")
def registry_serve(
    store: Store = None,
    state: State = None,
    certs: Annotated[Path | None, typer.Option("--certs", help="Folder made by 'fedward certs init'.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port of the registry (Flower uses 9091-9093).")] = DEFAULT_PORT,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Serve plain HTTP without TLS (development only).")
    ] = False,
    session_hours: Annotated[
        float, typer.Option("--session-hours", help="How long a dashboard sign-in lasts (hours).")
    ] = 8.0,
) -> None:
    """Serve the runs' models, model cards and configs read-only over HTTPS, and the dashboard, until Ctrl+C.

    Every request but /v1/health needs a token from 'fedward registry token create' (the
    dashboard, https://HOST:PORT/ui, signs in with one); every download is logged in
    <store>/registry/downloads.jsonl.
    """
    import logging

    from fedward.common.logs import configure_logging
    from fedward.server.registry.serve import serve

    if certs is not None and insecure:
        raise ConfigError("--certs and --insecure exclude each other")
    folder = runs_folder(store, state)
    configure_logging(logging.INFO)
    if insecure:
        err_console.print(
            "[bold yellow]WARNING:[/] --insecure: no TLS. Tokens and model weights travel in clear text; "
            f"anyone on the network path to port {port} can read and replay them. Development only.",
            highlight=False,
        )
    scheme = "http (INSECURE)" if insecure else "https"
    console.print(
        f"model registry for {folder.resolve()} on {scheme}://{host}:{port} (dashboard: /ui); stop with Ctrl+C"
    )
    serve(folder, certs, host, port, insecure=insecure, session_seconds=session_hours * 3600)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="Who the token is for (letters, digits, '.', '_', '-').")],
    store: Store = None,
    state: State = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a valid token of the same name.")] = False,
) -> None:
    """Create a token and print it once: only its hash is stored, it cannot be shown again."""
    from fedward.server.registry.tokens import TokenStore

    tokens = TokenStore.for_store(runs_folder(store, state))
    token = tokens.create(name, force=force)
    err_console.print(
        f"token {name!r} created; copy it now, it is not shown again (stored as a SHA-256 in {tokens.path}). "
        f"Evaluators pass it with --token or the {TOKEN_ENV} environment variable.",
        highlight=False,
    )
    typer.echo(token)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    store: Store = None,
    state: State = None,
) -> None:
    """Revoke a token: the registry refuses it from the next request on."""
    from fedward.server.registry.tokens import TokenStore

    info = TokenStore.for_store(runs_folder(store, state)).revoke(name)
    console.print(f"token {info.name!r} revoked at {info.revoked}", highlight=False)


@token_app.command("list")
def token_list(
    store: Store = None,
    state: State = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List token names with when they were created and revoked (never the tokens)."""
    from fedward.server.registry.tokens import TokenStore

    infos = TokenStore.for_store(runs_folder(store, state)).list()
    if as_json:
        console.print_json(json.dumps([info.to_json() for info in infos]))
        return
    table = Table("name", "created", "revoked", "status")
    for info in infos:
        table.add_row(info.name, info.created, info.revoked or "", "valid" if info.active else "revoked")
    console.print(table)
