"""``fedward run start|list|reindex|logs|stop|resume|export-tracking``: training runs on a coordinator.

Thin like the rest of the CLI: parse, call :mod:`fedward.server.coordinator.launch`,
:mod:`fedward.common.rundir.index` and Flower's CLI (:mod:`fedward.common.flower.flwr_cli`), print.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedward.cli import options as o
from fedward.cli.deploy import DEFAULT_STATE, AsJson, CaCert, Insecure, StateDir, Superlink
from fedward.common.config import load_config
from fedward.common.errors import ConfigError, FedwardError

if TYPE_CHECKING:
    from fedward.common.flower.flwr_cli import FlwrCli
    from fedward.common.rundir.index import RunEntry

console = Console()
err_console = Console(stderr=True)

run_app = typer.Typer(help="Start, list, follow and stop training runs on a coordinator.", no_args_is_help=True)


def _control(state: Path, superlink: str | None, ca: Path | None, insecure: bool) -> tuple[FlwrCli, Path | None]:
    """The flwr CLI for the chosen coordinator, and its runs folder when it is local."""
    from fedward.common.flower.flwr_cli import Connection, FlwrCli
    from fedward.common.security.tls import parse_address, probe
    from fedward.server.coordinator.state import CONNECTION, CoordinatorState

    if superlink is None:
        if ca is not None or insecure:
            raise ConfigError("--ca and --insecure go with --superlink")
        coordinator = CoordinatorState(state.resolve())
        return coordinator.flwr(), coordinator.runs
    if (ca is None) == (not insecure):
        raise ConfigError("with --superlink, pass --ca ca.crt (or --insecure for a development coordinator)")
    address = parse_address(superlink)
    probe(address, ca)
    home = Path(tempfile.gettempdir()) / f"fedward-flwr-home-{os.getuid()}"
    return FlwrCli(home, Connection(CONNECTION, str(address), ca, insecure=insecure)), None


@run_app.command("start")
def run_start(
    config: o.ConfigFile = None,
    sets: o.Sets = None,
    dataset: o.Dataset = None,
    model: o.Model = None,
    hospitals: o.Hospitals = None,
    rounds: o.Rounds = None,
    strategy: o.StrategyOpt = None,
    local_epochs: o.LocalEpochs = None,
    seed: o.Seed = None,
    name: o.Name = None,
    state: StateDir = DEFAULT_STATE,
    superlink: Superlink = None,
    ca: CaCert = None,
    insecure: Insecure = False,
    follow: Annotated[bool, typer.Option("--follow", help="Stream the run's log until it ends.")] = False,
) -> None:
    """Start a training run on the coordinator's hospitals and print its run id."""
    from fedward.server.coordinator.launch import start_run

    overrides = o.overrides_from({k: v for k, v in locals().items() if k in o.FLAG_KEYS}, sets)
    cfg = load_config(config, overrides)
    flwr, _ = _control(state, superlink, ca, insecure)
    run_id = start_run(flwr, cfg)
    console.print(f"run id: {run_id}")
    if follow:
        raise typer.Exit(flwr.log_process(run_id, follow=True).wait())


RunsFolder = Annotated[
    Path | None,
    typer.Option("--runs", help="A folder of run directories (e.g. ./runs of simulations) instead of a coordinator's."),
]
FLOWER_STATES = {"pending": "pending", "starting": "pending", "running": "running"}


@run_app.command("list")
def run_list(
    state: StateDir = DEFAULT_STATE,
    runs: RunsFolder = None,
    superlink: Superlink = None,
    ca: CaCert = None,
    insecure: Insecure = False,
    as_json: AsJson = False,
) -> None:
    """List runs: status, rounds, best validation AUC, test AUC, epsilon, start and end.

    Reads the run store of the coordinator's runs folder (or of --runs DIR) and adds
    Flower's live status when the coordinator answers. With --superlink, lists what a
    remote coordinator's Flower reports.
    """
    from fedward.common.rundir.index import RunStore

    if superlink is not None:
        if runs is not None:
            raise ConfigError("--runs lists a folder on this machine; it does not go with --superlink")
        _list_remote(_control(state, superlink, ca, insecure)[0], as_json)
        return
    if ca is not None or insecure:
        raise ConfigError("--ca and --insecure go with --superlink")
    folder, live = _local_runs_folder(state, runs)
    entries = RunStore(folder).list()
    rows = [entry.to_json() for entry in entries]
    if live is not None:
        rows = _with_flower_status(entries, rows, live)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    console.print(_runs_table(folder, rows))


def _list_remote(flwr: FlwrCli, as_json: bool) -> None:
    """Print the runs a remote coordinator's Flower reports, as JSON or a table."""
    from fedward.server.coordinator.launch import run_rows

    remote = run_rows(flwr, None)
    if as_json:
        console.print_json(json.dumps(remote))
        return
    table = Table("run id", "status", "elapsed", "started", "finished", "run directory")
    for row in remote:
        table.add_row(
            str(row["run-id"]),
            str(row.get("status", "")),
            str(row.get("elapsed", "")),
            str(row.get("running-at") or row.get("pending-at") or ""),
            str(row.get("finished-at") or ""),
            row["run-dir"],
        )
    console.print(table)


def _local_runs_folder(state: Path, runs: Path | None) -> tuple[Path, dict[int, dict[str, Any]] | None]:
    """The runs folder to list and, when a local coordinator answers, Flower's runs by Flower run id.

    Raises:
        ConfigError: if ``--runs`` is not a folder, or ``--state`` holds neither a
            coordinator that answers nor a runs folder.
    """
    from fedward.common.security.tls import parse_address, probe
    from fedward.server.coordinator.state import CoordinatorState

    if runs is not None:
        folder = runs.absolute()
        if not folder.is_dir():
            raise ConfigError(f"--runs {runs}: no such folder")
        return folder, None
    coordinator = CoordinatorState(state.resolve())
    folder = coordinator.runs
    try:
        connection = coordinator.connection()
        probe(parse_address(connection.address), connection.root_certificates, timeout_s=3.0)
        return folder, {int(r["run-id"]): r for r in coordinator.flwr().runs()}
    except FedwardError as err:
        if not folder.is_dir():
            raise ConfigError(
                f"--state {state}: no coordinator state here ({err}); pass the --state folder of "
                "'fedward server start', or --runs DIR for a folder of run directories"
            ) from None
        err_console.print(
            f"listing the run store only (no live status from Flower): {err}", style="dim", soft_wrap=True
        )
    return folder, None


def _with_flower_status(
    entries: list[RunEntry], rows: list[dict[str, Any]], live: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    """``rows`` with Flower's status of each, after rows for Flower's runs that have no run directory yet."""
    import dataclasses

    from fedward.common.rundir.index import RunEntry

    listed = {e.flower_run_id for e in entries}
    for row in rows:
        flower = live.get(row["flower-run-id"]) if row["flower-run-id"] is not None else None
        row["flower-status"] = flower.get("status") if flower else None
    blank = dict.fromkeys(f.name.replace("_", "-") for f in dataclasses.fields(RunEntry))
    waiting = [  # Flower's runs whose ServerApp has not written a run directory (yet)
        {
            **blank,
            "flower-run-id": run_id,
            "status": _flower_state(str(flower.get("status", ""))),
            "flower-status": flower.get("status"),
        }
        for run_id, flower in sorted(live.items(), reverse=True)
        if run_id not in listed
    ]
    return waiting + rows


def _runs_table(folder: Path, rows: list[dict[str, Any]]) -> Table:
    """The run-store listing: one line per run, Flower's status where it disagrees with the run's."""
    table = Table(
        "run", "status", "rounds", "best val-auc", "test-auc", "epsilon", "started", "ended",
        title=f"runs in {folder}", caption="times in UTC" if rows else "no runs yet",
    )  # fmt: skip
    for row in rows:
        status = str(row["status"])
        flower_status = row.get("flower-status")
        if flower_status and _flower_state(str(flower_status)) != status:
            status += f" (Flower: {flower_status})"
        best = row["best-value"] if row["best-metric"] == "val-auc" else None
        table.add_row(
            escape(str(row["run-id"] or f"(Flower run {row['flower-run-id']}, no run directory yet)")),
            escape(status),
            f"{row['rounds-done']}/{row['rounds']}" if row["run-id"] else "",
            f"{best:.4f} (round {row['best-round']})" if best is not None else "",
            f"{row['test-auc']:.4f}" if row["test-auc"] is not None else "",
            f"{row['epsilon']:.2f}" if row["epsilon"] is not None else "",
            _utc(row["started"]),
            _utc(row["ended"]),
        )
    return table


def _flower_state(flower_status: str) -> str:
    """Flower's run status (``finished:completed``, ``running``...) in run-store terms."""
    return FLOWER_STATES.get(flower_status, flower_status.removeprefix("finished:"))


def _utc(timestamp: Any) -> str:
    """An ISO 8601 UTC time, shorter (``2025-01-31 12:00:00``)."""
    return str(timestamp).replace("T", " ").removesuffix("+00:00") if timestamp else ""


@run_app.command("reindex")
def run_reindex(state: StateDir = DEFAULT_STATE, runs: RunsFolder = None) -> None:
    """Rebuild the run store (runs.sqlite) from the run directories of the coordinator (or of --runs DIR)."""
    from fedward.common.rundir.index import INDEX_FILE, RunStore
    from fedward.server.coordinator.state import CoordinatorState

    folder = runs.absolute() if runs is not None else CoordinatorState(state.resolve()).runs
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder; pass --runs DIR or the coordinator's --state DIR")
    count = RunStore(folder).rebuild()
    console.print(f"indexed {count} run{'s' if count != 1 else ''} in {folder / INDEX_FILE}")


@run_app.command("logs")
def run_logs(
    run_id: Annotated[int, typer.Argument(help="The run id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the run ends.")] = False,
    state: StateDir = DEFAULT_STATE,
    superlink: Superlink = None,
    ca: CaCert = None,
    insecure: Insecure = False,
) -> None:
    """Print a run's log (the ServerApp's output)."""
    flwr, _ = _control(state, superlink, ca, insecure)
    raise typer.Exit(flwr.log_process(run_id, follow=follow).wait())


@run_app.command("stop")
def run_stop(
    run_id: Annotated[int, typer.Argument(help="The run id.")],
    state: StateDir = DEFAULT_STATE,
    superlink: Superlink = None,
    ca: CaCert = None,
    insecure: Insecure = False,
) -> None:
    """Stop a run; its run directory records it as stopped."""
    flwr, _ = _control(state, superlink, ca, insecure)
    flwr.stop(run_id)
    console.print(f"run {run_id} stopped")


@run_app.command("resume")
def run_resume(
    run: Annotated[str, typer.Argument(help="The run id, or the run directory's name or path, on this coordinator.")],
    state: StateDir = DEFAULT_STATE,
    follow: Annotated[bool, typer.Option("--follow", help="Stream the run's log until it ends.")] = False,
) -> None:
    """Continue an interrupted run from its checkpoint (run on the coordinator); print the new run id."""
    from fedward.server.coordinator.launch import locate_run, resume
    from fedward.server.coordinator.state import CoordinatorState

    coordinator = CoordinatorState(state.resolve())
    run_dir = locate_run(coordinator.runs, run)
    flwr = coordinator.flwr()
    run_id = resume(flwr, run_dir)
    console.print(f"run id: {run_id} (resumes {run_dir.name})")
    if follow:
        raise typer.Exit(flwr.log_process(run_id, follow=True).wait())


@run_app.command("export-tracking")
def run_export_tracking(
    run: Annotated[str, typer.Argument(help="A run directory, or a run id or directory name on this coordinator.")],
    mlflow_uri: Annotated[
        str, typer.Option("--mlflow-uri", help="Tracking URI: http(s)://host:port, sqlite:///file.db or a folder.")
    ],
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment name.")] = "fedward",
    state: StateDir = DEFAULT_STATE,
) -> None:
    """Send a finished run directory to MLflow: config as parameters, every round's metrics, model card and plots."""
    from fedward.common.config.tracking import TrackingConfig, absolute_mlflow_uri
    from fedward.server.tracking.replay import export_run

    settings = TrackingConfig(mlflow_uri=mlflow_uri, mlflow_experiment=experiment)  # checks the URI, naming it
    run_dir = Path(run).expanduser()
    if not run_dir.is_dir():
        from fedward.server.coordinator.launch import locate_run
        from fedward.server.coordinator.state import CoordinatorState

        run_dir = locate_run(CoordinatorState(state.resolve()).runs, run)
    report = export_run(run_dir, absolute_mlflow_uri(settings.mlflow_uri), settings.mlflow_experiment)
    console.print(
        f"exported {escape(run_dir.name)} to MLflow run {report.run_id}: {report.rounds} rounds, "
        f"{report.metrics} new metric values ({report.skipped} already there), {report.artifacts} artifacts"
    )
