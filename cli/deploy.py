"""``fedward certs|server|run`` and ``fedward client start``: the real deployment.

Thin like the rest of the CLI: parse, call :mod:`fedward.common.certs`,
:mod:`fedward.server.coordinator`, :mod:`fedward.server.hospitals`,
:mod:`fedward.server.launch` and :mod:`fedward.client.agent`, print.
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
from fedward.common.errors import ConfigError, FedwardError

if TYPE_CHECKING:
    from fedward.common.flwr_cli import FlwrCli

console = Console()
err_console = Console(stderr=True)

certs_app = typer.Typer(help="Make the federation's CA, server certificate and hospital keys.", no_args_is_help=True)
server_app = typer.Typer(help="Coordinator: run the SuperLink, register hospitals.", no_args_is_help=True)
run_app = typer.Typer(help="Start, list, follow and stop training runs on a coordinator.", no_args_is_help=True)

DEFAULT_STATE = Path("fedward-state")

StateDir = Annotated[
    Path,
    typer.Option("--state", help="The coordinator's state folder.", envvar="FEDWARD_STATE_DIR"),
]
Superlink = Annotated[
    str | None,
    typer.Option("--superlink", help="HOST:PORT of a coordinator (default: the one of --state)."),
]
CaCert = Annotated[Path | None, typer.Option("--ca", help="The federation's CA certificate (ca.crt).")]
Insecure = Annotated[bool, typer.Option("--insecure", help="No TLS (development only).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


# ---------------------------------------------------------------------------------- certs
@certs_app.command("init")
def certs_init(
    out: Annotated[Path, typer.Option("--out", help="Folder for ca.crt, ca.key, server.crt, server.key.")],
    host: Annotated[
        list[str] | None, typer.Option("--host", help="DNS name hospitals dial (repeatable; localhost is added).")
    ] = None,
    ip: Annotated[
        list[str] | None, typer.Option("--ip", help="IP address hospitals dial (repeatable; 127.0.0.1 is added).")
    ] = None,
    days: Annotated[int, typer.Option(help="Validity of the certificates, days.")] = 825,
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """Create the federation's private CA and the coordinator's TLS certificate."""
    from fedward.common.certs import certificate_summary, init_federation

    files = init_federation(out, hosts=host or [], ips=ip or [], days=days, force=force)
    summary = certificate_summary(files.server_cert)
    table = Table("file", "what it is for", title=f"federation certificates in {out}")
    table.add_row(str(files.ca_cert), "CA certificate: give it to every hospital (--ca)")
    table.add_row(str(files.ca_key), "CA private key (0600): keep offline; only needed to re-issue certificates")
    table.add_row(str(files.server_cert), f"coordinator certificate for {', '.join(summary.sans)}")
    table.add_row(str(files.server_key), "coordinator private key (0600): stays on the coordinator")
    console.print(table)
    console.print(f"valid until {summary.not_after}")


@certs_app.command("node")
def certs_node(
    name: Annotated[str, typer.Argument(help="The hospital's name.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for <name>.key and <name>.pub.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """Create a hospital's authentication key pair (run it at the hospital)."""
    from fedward.common.certs import create_node_keys, read_public_key
    from fedward.server.hospitals import fingerprint

    keys = create_node_keys(name, out, force=force)
    console.print(f"private key: {keys.private_key} (0600, never leaves the hospital; client start --key)")
    console.print(f"public key:  {keys.public_key} (send it to the coordinator)")
    console.print(f"fingerprint: {fingerprint(read_public_key(keys.public_key))} (confirm it by phone)")


@certs_app.command("show")
def certs_show(path: Annotated[Path, typer.Argument(help="A PEM certificate.")]) -> None:
    """Print a certificate's subject, issuer, names and expiry."""
    from fedward.common.certs import certificate_summary

    summary = certificate_summary(path)
    console.print(f"subject: {summary.subject}")
    console.print(f"issuer: {summary.issuer}")
    console.print(f"names: {', '.join(summary.sans)}")
    console.print(f"valid until: {summary.not_after}")


# ---------------------------------------------------------------------------------- server
@server_app.command("start")
def server_start(
    certs: Annotated[Path | None, typer.Option("--certs", help="Folder made by 'fedward certs init'.")] = None,
    state: StateDir = DEFAULT_STATE,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port of the SuperLink (hospitals, flwr and fedward run).")] = 9092,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Run without TLS and without hospital authentication (development).")
    ] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder with the dataset's .npz for server-side test evaluation.")
    ] = None,
) -> None:
    """Run the coordinator: a Flower SuperLink with TLS and hospital authentication, until Ctrl+C."""
    from fedward.common.certs import FederationCerts
    from fedward.server.coordinator import Coordinator, CoordinatorState, SuperLinkSettings

    if certs is not None and insecure:
        raise ConfigError("--certs and --insecure exclude each other")
    settings = SuperLinkSettings(
        state=CoordinatorState(state.resolve()),
        certs=FederationCerts.in_folder(certs) if certs is not None else None,
        host=host,
        port=port,
        insecure=insecure,
        data_dir=data_dir,
    )
    if insecure:
        err_console.print(
            "[bold yellow]WARNING:[/] --insecure: no TLS, no hospital authentication. Anyone who can reach "
            f"port {port} can read model updates, join as a hospital and start runs. Development only.",
            highlight=False,
        )
    coordinator = Coordinator(settings)
    coordinator.start()
    scheme = "http (INSECURE)" if insecure else "TLS, hospital keys required"
    console.print(f"coordinator listening on {host}:{port} ({scheme}); state in {settings.state.root}")
    console.print("stop with Ctrl+C", style="dim")
    raise typer.Exit(coordinator.wait())


@server_app.command("register")
def server_register(
    name: Annotated[str, typer.Argument(help="The hospital's name.")],
    public_key: Annotated[Path, typer.Argument(help="The hospital's <name>.pub.")],
    state: StateDir = DEFAULT_STATE,
) -> None:
    """Admit a hospital: register its public key with the running SuperLink."""
    from fedward.server.coordinator import CoordinatorState
    from fedward.server.hospitals import HospitalRegistry

    coordinator = CoordinatorState(state.resolve())
    hospital = HospitalRegistry(coordinator.hospitals_file, coordinator.flwr()).register(name, public_key)
    console.print(f"registered {hospital.name}: node {hospital.node_id}, key {hospital.fingerprint}")


@server_app.command("unregister")
def server_unregister(
    name: Annotated[str, typer.Argument(help="The hospital's name.")],
    state: StateDir = DEFAULT_STATE,
) -> None:
    """Remove a hospital: its key can no longer connect."""
    from fedward.server.coordinator import CoordinatorState
    from fedward.server.hospitals import HospitalRegistry

    coordinator = CoordinatorState(state.resolve())
    hospital = HospitalRegistry(coordinator.hospitals_file, coordinator.flwr()).unregister(name)
    console.print(f"unregistered {hospital.name} (node {hospital.node_id})")


@server_app.command("hospitals")
def server_hospitals(state: StateDir = DEFAULT_STATE, as_json: AsJson = False) -> None:
    """List registered hospitals with their status and when they were last seen."""
    from fedward.server.coordinator import CoordinatorState
    from fedward.server.hospitals import HospitalRegistry

    coordinator = CoordinatorState(state.resolve())
    rows = HospitalRegistry(coordinator.hospitals_file, coordinator.flwr()).status()
    if as_json:
        data = [
            {
                "name": r.hospital.name,
                "node-id": r.hospital.node_id,
                "status": r.status,
                "last-seen": r.last_seen,
                "fingerprint": r.hospital.fingerprint,
                "registered-at": r.hospital.registered_at,
            }
            for r in rows
        ]
        console.print_json(json.dumps(data))
        return
    table = Table("hospital", "node id", "status", "last seen", "key fingerprint", "registered")
    for r in rows:
        table.add_row(
            r.hospital.name,
            str(r.hospital.node_id),
            r.status,
            r.last_seen,
            r.hospital.fingerprint,
            r.hospital.registered_at,
        )
    console.print(table)


# ---------------------------------------------------------------------------------- runs
def _control(state: Path, superlink: str | None, ca: Path | None, insecure: bool) -> tuple[FlwrCli, Path | None]:
    """The flwr CLI for the chosen coordinator, and its runs folder when it is local."""
    from fedward.common.flwr_cli import Connection, FlwrCli
    from fedward.common.tls import parse_address, probe
    from fedward.server.coordinator import CONNECTION, CoordinatorState

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
    from fedward.server.launch import start_run

    overrides = o.overrides_from({k: v for k, v in locals().items() if k in o.FLAG_KEYS}, sets)
    cfg = o.load_config(config, overrides)
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
    import dataclasses

    from fedward.common.tls import parse_address, probe
    from fedward.server.coordinator import CoordinatorState
    from fedward.server.launch import run_rows
    from fedward.server.runstore import RunEntry, RunStore

    if superlink is not None:
        if runs is not None:
            raise ConfigError("--runs lists a folder on this machine; it does not go with --superlink")
        flwr, _ = _control(state, superlink, ca, insecure)
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
        return
    if ca is not None or insecure:
        raise ConfigError("--ca and --insecure go with --superlink")
    live: dict[int, dict[str, Any]] | None = None
    if runs is not None:
        folder = runs.absolute()
        if not folder.is_dir():
            raise ConfigError(f"--runs {runs}: no such folder")
    else:
        coordinator = CoordinatorState(state.resolve())
        folder = coordinator.runs
        try:
            connection = coordinator.connection()
            probe(parse_address(connection.address), connection.root_certificates, timeout_s=3.0)
            live = {int(r["run-id"]): r for r in coordinator.flwr().runs()}
        except FedwardError as err:
            if not folder.is_dir():
                raise ConfigError(
                    f"--state {state}: no coordinator state here ({err}); pass the --state folder of "
                    "'fedward server start', or --runs DIR for a folder of run directories"
                ) from None
            err_console.print(
                f"listing the run store only (no live status from Flower): {err}", style="dim", soft_wrap=True
            )
    entries = RunStore(folder).list()
    rows = [entry.to_json() for entry in entries]
    if live is not None:
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
        rows = waiting + rows
    if as_json:
        console.print_json(json.dumps(rows))
        return
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
    console.print(table)


def _flower_state(flower_status: str) -> str:
    """Flower's run status (``finished:completed``, ``running``...) in run-store terms."""
    return FLOWER_STATES.get(flower_status, flower_status.removeprefix("finished:"))


def _utc(timestamp: Any) -> str:
    """An ISO 8601 UTC time, shorter (``2025-01-31 12:00:00``)."""
    return str(timestamp).replace("T", " ").removesuffix("+00:00") if timestamp else ""


@run_app.command("reindex")
def run_reindex(state: StateDir = DEFAULT_STATE, runs: RunsFolder = None) -> None:
    """Rebuild the run store (runs.sqlite) from the run directories of the coordinator (or of --runs DIR)."""
    from fedward.server.coordinator import CoordinatorState
    from fedward.server.runstore import INDEX_FILE, RunStore

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
    from fedward.server.coordinator import CoordinatorState
    from fedward.server.launch import locate_run, resume_run

    coordinator = CoordinatorState(state.resolve())
    run_dir = locate_run(coordinator.runs, run)
    flwr = coordinator.flwr()
    run_id = resume_run(flwr, run_dir)
    console.print(f"run id: {run_id} (resumes {run_dir.name})")
    if follow:
        raise typer.Exit(flwr.log_process(run_id, follow=True).wait())


# ---------------------------------------------------------------------------------- client
def client_start(
    superlink: Annotated[str, typer.Option("--superlink", help="HOST:PORT of the coordinator.")],
    data: Annotated[Path, typer.Option("--data", help="The hospital's data folder.")],
    ca: CaCert = None,
    key: Annotated[Path | None, typer.Option("--key", help="The hospital's private key (<name>.key).")] = None,
    name: Annotated[str | None, typer.Option(help="The hospital's name (default: the key file's name).")] = None,
    port: Annotated[int, typer.Option(help="Local port of the SuperNode's ClientApp API (127.0.0.1).")] = 9094,
    insecure: Insecure = False,
    classes: Annotated[
        str | None, typer.Option(help="The federation's classes, comma-separated, to check labels against.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Take the classes of this MedMNIST dataset.")] = None,
    frames: o.Frames = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Decoded-image cache folder.")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for training (0: all cores).")] = 0,
) -> None:
    """Run this hospital's agent: check the data, connect over TLS with the hospital key, train when asked.

    Exit code 1 when the data folder is unusable (the report is printed), 2 on bad
    arguments, certificates or a refused key.
    """
    from fedward.client.agent import AgentSettings, HospitalAgent, UnusableDataError
    from fedward.client.check import render
    from fedward.common.choices import FrameMode, Task, choose
    from fedward.common.logs import configure_logging
    from fedward.common.tls import parse_address

    configure_logging()
    names: tuple[str, ...] | None = None
    task = Task.BINARY
    if classes:
        names = tuple(c.strip() for c in classes.split(",") if c.strip())
    elif dataset:
        from fedward.common.data.catalog import lookup

        entry = lookup(dataset)
        if entry is None:
            raise ConfigError(f"unknown dataset {dataset!r}: pass --classes instead")
        names, task = entry.classes, entry.task
    settings = AgentSettings(
        superlink=parse_address(superlink),
        data_dir=data,
        name=name or (key.stem if key is not None else "hospital"),
        ca_cert=ca,
        key=key,
        insecure=insecure,
        runtime_port=port,
        cache_dir=cache_dir,
        classes=names,
        task=task,
        frames=choose(frames or "middle", FrameMode, "--frames"),
        threads=threads,
    )
    try:
        code = HospitalAgent(settings).run()
    except UnusableDataError as err:
        if err.report is not None:
            console.print(render(err.report))
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)
