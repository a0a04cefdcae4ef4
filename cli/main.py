"""``fedward``: the command line. Thin: parse, call the rooms, print.

Errors a user can fix (:class:`~fedward.common.errors.FedwardError`) print as one line
and exit with code 2; no traceback.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from fedward.cli import options as o
from fedward.common.choices import Task
from fedward.common.config import RunConfig, load_config
from fedward.common.errors import ConfigError, FedwardError

# Before Flower, Ray or Hugging Face are imported anywhere: no telemetry, no hub access.
for _key, _value in (
    ("FLWR_TELEMETRY_ENABLED", "0"),
    ("FLWR_DISABLE_UPDATE_CHECK", "1"),
    ("RAY_USAGE_STATS_ENABLED", "0"),
    ("HF_DATASETS_OFFLINE", "1"),
    ("HF_HUB_OFFLINE", "1"),
):
    os.environ.setdefault(_key, _value)

app = typer.Typer(
    name="fedward",
    help="Federated learning for hospitals: train medical-imaging CNNs together, images stay home.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
client_app = typer.Typer(help="Hospital side: check the local data, run the agent.", no_args_is_help=True)
app.add_typer(client_app, name="client")

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(command: F) -> F:
    """Turn fedward's errors into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FedwardError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _setup_logging(verbose: bool) -> None:
    from fedward.common.logs import configure_logging

    configure_logging(logging.DEBUG if verbose else logging.WARNING)


def _run_simulation(cfg: RunConfig) -> None:
    from fedward.cli.display import RoundProgress, summary_table
    from fedward.simulation.driver import prepare, simulate
    from fedward.simulation.partition import describe_table, summarize_plan

    prepared = prepare(cfg)
    dataset = prepared.resolved.dataset
    if prepared.plan is not None and dataset is not None:
        labels, groups = dataset.splits["train"].labels, dataset.strata
        console.print(describe_table(summarize_plan(prepared.plan, labels, len(groups)), groups))
    else:
        for index, folder in enumerate(prepared.cfg.data.hospital_dirs):
            console.print(f"hospital {index}: {folder}")
    console.print(f"run directory: [bold]{prepared.run_dir}[/]")
    with RoundProgress(console, prepared.cfg.federation.rounds, "federated") as progress:
        outcome = simulate(prepared, progress.update)
    console.print(summary_table(outcome.run_dir))
    console.print(f"model card: {outcome.run_dir / 'model_card.md'}")


def _resume_simulation(run_dir: Path) -> None:
    from fedward.cli.display import RoundProgress, summary_table
    from fedward.simulation.driver import prepare_resume, simulate

    prepared = prepare_resume(run_dir)
    console.print(f"resuming run directory: [bold]{prepared.run_dir}[/]")
    with RoundProgress(console, prepared.cfg.federation.rounds, "federated") as progress:
        outcome = simulate(prepared, progress.update)
    console.print(summary_table(outcome.run_dir))
    console.print(f"model card: {outcome.run_dir / 'model_card.md'}")


def _run_centralized(cfg: RunConfig) -> None:
    from fedward.cli.display import RoundProgress, summary_table
    from fedward.simulation.centralized import run_centralized
    from fedward.simulation.driver import prepare

    prepared = prepare(cfg, mode="centralized")
    console.print(f"run directory: [bold]{prepared.run_dir}[/]")
    with RoundProgress(console, prepared.cfg.federation.rounds, "centralized") as progress:
        run_centralized(prepared, progress.update)
    console.print(summary_table(prepared.run_dir))
    console.print(f"model card: {prepared.run_dir / 'model_card.md'}")


def _register_run_command(name: str, runner: Callable[[RunConfig], None], help_text: str) -> None:
    """Register a command taking every run flag; both run commands accept the same ones,
    so swapping ``simulate`` for ``centralized`` in a command line gives its baseline."""

    def command(
        config: o.ConfigFile = None,
        sets: o.Sets = None,
        dataset: o.Dataset = None,
        data_dir: o.DataDir = None,
        image_size: o.ImageSize = None,
        augment: o.Augment = None,
        val_fraction: o.ValFraction = None,
        hospital_dirs: o.HospitalDirs = None,
        frames: o.Frames = None,
        model: o.Model = None,
        init_weights: o.InitWeights = None,
        local_epochs: o.LocalEpochs = None,
        batch_size: o.BatchSize = None,
        optimizer: o.Optimizer = None,
        lr: o.Lr = None,
        schedule: o.ScheduleOpt = None,
        class_weighting: o.ClassWeightingOpt = None,
        device: o.Device = None,
        hospitals: o.Hospitals = None,
        partition: o.PartitionOpt = None,
        alpha: o.Alpha = None,
        rounds: o.Rounds = None,
        fraction_train: o.FractionTrain = None,
        round_timeout: o.RoundTimeout = None,
        strategy: o.StrategyOpt = None,
        proximal_mu: o.ProximalMu = None,
        client_cpus: o.ClientCpus = None,
        client_gpus: o.ClientGpus = None,
        seed: o.Seed = None,
        name: o.Name = None,
        output_dir: o.OutputDir = None,
        resume: o.Resume = None,
        verbose: o.Verbose = False,
    ) -> None:
        _setup_logging(verbose)
        if resume is not None:
            flags = locals()
            given = [k for k in (*o.FLAG_KEYS, "config", "sets", "hospital_dirs") if flags.get(k) not in (None, [])]
            if name_ != "simulate":
                raise ConfigError("--resume continues a federated run: use fedward simulate --resume RUN_DIR")
            if given:
                raise ConfigError(f"--resume continues with the run's own config.toml; drop {', '.join(sorted(given))}")
            _resume_simulation(resume)
            return
        runner(load_config(config, o.overrides_from(locals(), sets)))

    name_ = name
    command.__doc__ = help_text
    command.__name__ = name
    app.command(name)(handle_errors(command))


_register_run_command(
    "simulate",
    _run_simulation,
    "Simulate a federation of hospitals on this machine (Flower simulation runtime, Ray).",
)
_register_run_command(
    "centralized",
    _run_centralized,
    "Train the same model on all hospitals' data pooled: the upper-bound baseline.\n\n"
    "Same settings as simulate: the pooled data is the union of the hospitals' splits and the "
    "epochs are rounds x local epochs.",
)


@client_app.command("check-data")
def client_check_data(
    folder: Annotated[Path, typer.Argument(help="The hospital's data folder.")],
    classes: Annotated[
        str | None,
        typer.Option(help="The federation's classes, comma-separated (default: from --config or --dataset)."),
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Take the classes of this MedMNIST dataset.")] = None,
    config: o.ConfigFile = None,
    frames: o.Frames = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Files of another modality or channels than the federation's: unusable.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a hospital folder without training: counts, sizes, and every unusable file with its reason.

    Segmentation folders (image + mask, Decathlon, DICOM series with SEG) are read as training
    reads them (with --config: its data section, e.g. data.volume-size) and every bad case is
    named. Exit code 0 when training can use the folder, 1 when it cannot (segmentation
    folders: when any case has a problem), 2 on bad arguments. When the federation's schema
    is known (a catalogued --dataset, or --config), files whose header names another modality
    or whose channels differ are warnings (modality-mismatch); with --strict unusable (exit 1).
    """
    import json

    from fedward.client.hospital.check import check_folder, render
    from fedward.client.hospital.check_fit import federation_schema
    from fedward.common.choices import FrameMode, choose

    try:
        names, task = _federation_classes(classes, dataset, config)
        mode = choose(frames or "middle", FrameMode, "--frames")
        cfg = load_config(config, {}) if config is not None else None
        schema = federation_schema(dataset, cfg)
        data = cfg.data if cfg is not None else None
        report = check_folder(folder, names, task, mode, data=data, schema=schema, strict=strict)
    except FedwardError as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        console.print_json(json.dumps(report.to_json()))
    else:
        console.print(render(report))
    raise typer.Exit(report.exit_code)


def _federation_classes(
    classes: str | None, dataset: str | None, config: Path | None
) -> tuple[list[str] | None, Task | None]:
    """Classes (and task) to check labels against: --classes, else --config, else --dataset."""
    from fedward.common.data.catalog import lookup
    from fedward.common.errors import ConfigError

    if classes:
        return [c.strip() for c in classes.split(",") if c.strip()], None
    if config is not None:
        cfg = load_config(config, {})
        if cfg.data.classes:
            return list(cfg.data.classes), cfg.data.task
        dataset = dataset or cfg.data.dataset
    if dataset:
        entry = lookup(dataset)
        if entry is None:
            raise ConfigError(f"unknown dataset {dataset!r}: pass --classes instead")
        return list(entry.classes), entry.task
    return None, None


def _register_data_commands() -> None:
    """``fedward data describe|export``, with fedward's error handling."""
    from fedward.cli.data_commands import data_app

    for info in data_app.registered_commands:
        if info.callback is not None:
            info.callback = handle_errors(info.callback)
    app.add_typer(data_app, name="data")


_register_data_commands()


def _register_deployment_commands() -> None:
    """``fedward certs|server|run`` and ``fedward client start``, with fedward's error handling."""
    from fedward.cli import deploy, runs

    for sub, name in ((deploy.certs_app, "certs"), (deploy.server_app, "server"), (runs.run_app, "run")):
        for info in sub.registered_commands:
            if info.callback is not None:
                info.callback = handle_errors(info.callback)
        app.add_typer(sub, name=name)
    client_app.command("start")(handle_errors(deploy.client_start))


_register_deployment_commands()


def _register_evaluator_commands() -> None:
    """``fedward model ...``, ``fedward predict`` and ``fedward registry ...``, with fedward's error handling."""
    from fedward.cli import model_registry_commands  # noqa: F401  (list and pull register on model_app)
    from fedward.cli.model_commands import model_app, predict
    from fedward.cli.registry import registry_app

    for sub, name in ((model_app, "model"), (registry_app, "registry")):
        groups = [group.typer_instance for group in sub.registered_groups if group.typer_instance is not None]
        for info in [c for typer_app in (sub, *groups) for c in typer_app.registered_commands]:
            if info.callback is not None:
                info.callback = handle_errors(info.callback)
        if sub.registered_commands or sub.registered_groups:
            app.add_typer(sub, name=name)
    app.command("predict")(handle_errors(predict))


_register_evaluator_commands()


def _register_container_commands() -> None:
    """``fedward server|registry|client health`` and ``fedward certs copy`` (containers), with error handling."""
    from fedward.cli import container, deploy
    from fedward.cli.registry import registry_app

    deploy.server_app.command("health")(handle_errors(container.server_health))
    registry_app.command("health")(handle_errors(container.registry_health))
    client_app.command("health")(handle_errors(container.client_health))
    deploy.certs_app.command("copy")(handle_errors(container.certs_copy))


_register_container_commands()


@app.command()
def version() -> None:
    """Print fedward's version and the versions of the libraries it runs on."""
    from fedward.common.version import library_versions

    for key, value in library_versions().items():
        console.print(f"{key} {value}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
