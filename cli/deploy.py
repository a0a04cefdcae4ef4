"""``fedward certs|server`` and ``fedward client start``: the real deployment (runs: :mod:`fedward.cli.runs`).

Thin like the rest of the CLI: parse, call :mod:`fedward.common.security.certs`,
:mod:`fedward.server.coordinator.superlink`, :mod:`fedward.server.coordinator.admission` and
:mod:`fedward.client.hospital.agent`, print.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedward.cli import options as o
from fedward.common.errors import ConfigError

if TYPE_CHECKING:
    from fedward.common.choices import Task

console = Console()
err_console = Console(stderr=True)

certs_app = typer.Typer(help="Make the federation's CA, server certificate and hospital keys.", no_args_is_help=True)
server_app = typer.Typer(help="Coordinator: run the SuperLink, register hospitals.", no_args_is_help=True)

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
    from fedward.common.security.certs import certificate_summary, init_federation

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
    from fedward.common.security.certs import create_node_keys, read_public_key
    from fedward.server.coordinator.admission import fingerprint

    keys = create_node_keys(name, out, force=force)
    console.print(f"private key: {keys.private_key} (0600, never leaves the hospital; client start --key)")
    console.print(f"public key:  {keys.public_key} (send it to the coordinator)")
    console.print(f"fingerprint: {fingerprint(read_public_key(keys.public_key))} (confirm it by phone)")


@certs_app.command("show")
def certs_show(path: Annotated[Path, typer.Argument(help="A PEM certificate.")]) -> None:
    """Print a certificate's subject, issuer, names and expiry."""
    from fedward.common.security.certs import certificate_summary

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
    from fedward.common.security.certs import FederationCerts
    from fedward.server.coordinator.state import CoordinatorState
    from fedward.server.coordinator.superlink import Coordinator, SuperLinkSettings

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
    from fedward.server.coordinator.admission import HospitalRoster
    from fedward.server.coordinator.state import CoordinatorState

    coordinator = CoordinatorState(state.resolve())
    hospital = HospitalRoster(coordinator.hospitals_file, coordinator.flwr()).register(name, public_key)
    console.print(f"registered {hospital.name}: node {hospital.node_id}, key {hospital.fingerprint}")


@server_app.command("unregister")
def server_unregister(
    name: Annotated[str, typer.Argument(help="The hospital's name.")],
    state: StateDir = DEFAULT_STATE,
) -> None:
    """Remove a hospital: its key can no longer connect."""
    from fedward.server.coordinator.admission import HospitalRoster
    from fedward.server.coordinator.state import CoordinatorState

    coordinator = CoordinatorState(state.resolve())
    hospital = HospitalRoster(coordinator.hospitals_file, coordinator.flwr()).unregister(name)
    console.print(f"unregistered {hospital.name} (node {hospital.node_id})")


@server_app.command("hospitals")
def server_hospitals(state: StateDir = DEFAULT_STATE, as_json: AsJson = False) -> None:
    """List registered hospitals with their status and when they were last seen."""
    from fedward.server.coordinator.admission import HospitalRoster
    from fedward.server.coordinator.state import CoordinatorState

    coordinator = CoordinatorState(state.resolve())
    rows = HospitalRoster(coordinator.hospitals_file, coordinator.flwr()).status()
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
    warm_worker: Annotated[
        bool,
        typer.Option(
            "--warm-worker/--no-warm-worker",
            help="Serve every message in one long-lived worker that keeps the model and decoded images "
            "(default); --no-warm-worker: in a fresh process per message, as Flower does by itself.",
        ),
    ] = True,
) -> None:
    """Run this hospital's agent: check the data, connect over TLS with the hospital key, train when asked.

    Exit code 1 when the data folder is unusable (the report is printed), 2 on bad
    arguments, certificates or a refused key.
    """
    from fedward.client.hospital.agent import AgentSettings, HospitalAgent, UnusableDataError
    from fedward.client.hospital.check import render
    from fedward.common.choices import FrameMode, choose
    from fedward.common.logs import configure_logging
    from fedward.common.security.tls import parse_address

    configure_logging()
    names, task = _federation_classes(classes, dataset)
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
        warm_worker=warm_worker,
    )
    try:
        code = HospitalAgent(settings).run()
    except UnusableDataError as err:
        if err.report is not None:
            console.print(render(err.report))
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def _federation_classes(classes: str | None, dataset: str | None) -> tuple[tuple[str, ...] | None, Task]:
    """The classes labels are checked against (``--classes``, else ``--dataset``'s, else none) and the task."""
    from fedward.common.choices import Task

    if classes:
        return tuple(c.strip() for c in classes.split(",") if c.strip()), Task.BINARY
    if dataset:
        from fedward.common.data.catalog import lookup

        entry = lookup(dataset)
        if entry is None:
            raise ConfigError(f"unknown dataset {dataset!r}: pass --classes instead")
        return entry.classes, entry.task
    return None, Task.BINARY
