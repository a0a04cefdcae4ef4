"""Every command a container runs is a fedward command that exists, with options it accepts.

Commands are collected from the Dockerfiles (ENTRYPOINT + CMD, HEALTHCHECK), the compose files
(command, entrypoint, healthcheck) and the rendered Helm charts (command + args of every
container and init container, exec probes). Each one is parsed by fedward's own command line
(unknown options, wrong types and missing required options fail) and its subcommand is run
with --help through the installed console script, so the manifests cannot drift from the CLI.
The services' commands must also be the ones the deployment integration tests run.
"""

from __future__ import annotations

import ast
import functools
import itertools
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import typer
from fixtures.cli import fedward
from fixtures.deploy_tools import (
    COMPOSE_FILES,
    DOCKERFILES,
    RENDERINGS,
    ROOT,
    documents,
    final_stage,
    helm_template,
    load_yaml,
    pod_spec,
)

from fedward.cli.main import app
from fedward.server.coordinator.state import CoordinatorState

INTEGRATION_TESTS = [
    ROOT / "tests" / "integration" / name
    for name in ("test_deployment.py", "test_registry_tls.py", "test_segmentation_deployment.py")
]
SERVICES = {("server", "start"), ("client", "start"), ("registry", "serve")}
# Values for the variables compose files require (${NAME:?message}).
REQUIRED_VARIABLES = {
    "FEDWARD_SUPERLINK": "fl.example.org:9092",
    "FEDWARD_HOSPITAL": "st-olav",
    "FEDWARD_DATA": "/srv/pacs-export",
    "FEDWARD_DATA_DIR": "/srv/medmnist",
}


@dataclass(frozen=True)
class ContainerCommand:
    where: str  # file and service/container
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {' '.join(self.argv)}"


def _interpolate(value: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name, operator, rest = match[1], match[2], match[3]
        if operator == ":-":
            return rest
        return REQUIRED_VARIABLES[name]

    return re.sub(r"\$\{(\w+)(:-|:\?)([^}]*)\}", replace, value)


def dockerfile_commands() -> list[ContainerCommand]:
    commands = []
    for path in DOCKERFILES:
        stage = final_stage(path)
        entrypoint = [json.loads(rest) for key, rest in stage if key == "ENTRYPOINT"][-1]
        cmd = [json.loads(rest) for key, rest in stage if key == "CMD"][-1]
        commands.append(ContainerCommand(f"{path.name} ENTRYPOINT+CMD", (*entrypoint, *cmd)))
        health = [rest for key, rest in stage if key == "HEALTHCHECK"][-1]
        commands.append(ContainerCommand(f"{path.name} HEALTHCHECK", tuple(json.loads(health.partition(" CMD ")[2]))))
    return commands


def compose_commands() -> list[ContainerCommand]:
    commands = []
    for path in COMPOSE_FILES:
        for name, service in load_yaml(path)["services"].items():
            where = f"{path.name}:{name}"
            entrypoint = service.get("entrypoint", ["fedward"])
            if "command" in service or "entrypoint" in service:
                argv = [*entrypoint, *service.get("command", [])]
                commands.append(ContainerCommand(where, tuple(_interpolate(str(a)) for a in argv)))
            test = service.get("healthcheck", {}).get("test")
            if test is not None:
                assert test[0] == "CMD", f"{where}: healthcheck must be an exec form [CMD, fedward, ...]"
                commands.append(ContainerCommand(f"{where} healthcheck", tuple(test[1:])))
    return commands


@functools.cache
def helm_commands() -> tuple[ContainerCommand, ...]:
    commands = []
    for rendering in RENDERINGS:
        result = helm_template(rendering)
        assert result.returncode == 0, result.stderr
        for doc in documents(result.stdout):
            if doc["kind"] != "Deployment":
                continue
            spec = pod_spec(doc)
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                where = f"{rendering} {container['name']}"
                assert "command" in container, f"{where}: set command: [fedward] explicitly"
                commands.append(ContainerCommand(where, (*container["command"], *container.get("args", []))))
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    if probe in container:
                        commands.append(
                            ContainerCommand(f"{where} {probe}", tuple(container[probe]["exec"]["command"]))
                        )
    return tuple(commands)


def all_commands() -> list[ContainerCommand]:
    return [*dockerfile_commands(), *compose_commands(), *helm_commands()]


@functools.cache
def fedward_command() -> click.Command:
    return typer.main.get_command(app)


def resolve(argv: tuple[str, ...]) -> tuple[tuple[str, ...], click.Command, list[str]]:
    """(subcommand path, click command, its arguments) of ``fedward ...``."""
    command = fedward_command()
    path: list[str] = []
    rest = list(argv[1:])
    while isinstance(command, click.Group) and rest and rest[0] in command.commands:
        path.append(rest.pop(0))
        command = command.commands[path[-1]]
    return tuple(path), command, rest


def options_of(argv: tuple[str, ...]) -> set[str]:
    return {arg for arg in argv if arg.startswith("--")}


# ------------------------------------------------------------------------------ tests
def test_commands_are_found_everywhere() -> None:
    sources = {c.where.split()[0].split(":")[0] for c in all_commands()}
    assert {path.name for path in DOCKERFILES} <= sources
    assert {path.name for path in COMPOSE_FILES} - {"hospital.gpu.yml"} <= sources  # the override keeps the command
    assert {"fedward-coordinator", "fedward-hospital"} <= sources


def refusal(command: ContainerCommand) -> str | None:
    """Why fedward's command line refuses ``command`` (``None`` when it accepts it)."""
    if Path(command.argv[0]).name != "fedward":
        return f"{command} does not run fedward"
    path, click_command, rest = resolve(command.argv)
    if not path or isinstance(click_command, click.Group):
        return f"{command}: no such fedward command"
    try:
        click_command.make_context(" ".join(["fedward", *path]), list(rest))
    except click.ClickException as err:
        return f"{command}: fedward {' '.join(path)} refuses it: {err.format_message()}"
    return None


@pytest.mark.parametrize("command", [*dockerfile_commands(), *compose_commands()], ids=str)
def test_every_image_and_compose_command_is_a_fedward_command_its_cli_accepts(command: ContainerCommand) -> None:
    assert refusal(command) is None, refusal(command)


def test_every_chart_command_and_probe_is_a_fedward_command_its_cli_accepts() -> None:
    commands = helm_commands()  # rendered by helm: not at collection time, helm may be missing
    assert len(commands) >= 20
    refused = [reason for reason in map(refusal, commands) if reason is not None]
    assert not refused, refused


def test_every_subcommand_the_containers_run_answers_help_from_the_installed_script() -> None:
    paths = sorted({resolve(c.argv)[0] for c in all_commands()})
    assert ("server", "start") in paths and ("server", "health") in paths and ("certs", "copy") in paths
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(paths, pool.map(lambda path: fedward(*path, "--help", timeout=120), paths), strict=True))
    for path, result in results.items():
        assert result.returncode == 0, f"fedward {' '.join(path)} --help: {result.stderr}"
        assert "Usage: fedward " + " ".join(path) in " ".join(result.stdout.split())


# ------------------------------------------------------------------------------ same as the integration tests
def integration_options() -> dict[tuple[str, ...], set[str]]:
    """Subcommand -> the option names the deployment integration tests give it."""
    found: dict[tuple[str, ...], set[str]] = {}
    for path in INTEGRATION_TESTS:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            items = node.args if isinstance(node, ast.Call) else node.elts if isinstance(node, ast.List) else []
            strings = [item.value for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str)]
            for first, second in itertools.pairwise(strings):
                if (first, second) in SERVICES:
                    found.setdefault((first, second), set()).update(s for s in strings if s.startswith("--"))
    return found


def test_the_integration_tests_run_all_three_services() -> None:
    assert set(integration_options()) == SERVICES


def service_commands() -> list[ContainerCommand]:
    return [c for c in all_commands() if resolve(c.argv)[0] in SERVICES]


def test_the_images_entrypoints_are_the_integration_tests_commands() -> None:
    expected = integration_options()
    images = {c.where.split()[0]: resolve(c.argv)[0] for c in dockerfile_commands() if "ENTRYPOINT" in c.where}
    assert images == {
        "coordinator.Dockerfile": ("server", "start"),
        "coordinator.cuda.Dockerfile": ("server", "start"),
        "hospital.Dockerfile": ("client", "start"),
        "hospital.cuda.Dockerfile": ("client", "start"),
    }
    services = service_commands()
    assert {resolve(c.argv)[0] for c in services} == SERVICES  # compose and helm run all three
    for command in services:
        path = resolve(command.argv)[0]
        untested = options_of(command.argv) - expected[path]
        assert not untested, f"{command}: options the integration tests never run: {sorted(untested)}"


def _value(argv: tuple[str, ...], option: str) -> str:
    return argv[argv.index(option) + 1]


def test_the_registry_serves_the_runs_folder_of_the_coordinators_state() -> None:
    by_file: dict[str, dict[tuple[str, ...], tuple[str, ...]]] = {}
    for command in service_commands():
        by_file.setdefault(command.where.split(":")[0].split()[0], {})[resolve(command.argv)[0]] = command.argv
    checked = 0
    for where, commands in by_file.items():
        if ("registry", "serve") in commands:
            state = Path(_value(commands[("server", "start")], "--state"))
            assert Path(_value(commands[("registry", "serve")], "--store")) == CoordinatorState(state).runs, where
            checked += 1
    assert checked >= 3  # coordinator.yml, demo.yml, the coordinator chart


def _volume_paths(data: Any) -> list[str]:
    return [str(v) for v in data] if isinstance(data, list) else []


def test_compose_services_mount_what_their_commands_read() -> None:
    for path in COMPOSE_FILES:
        for name, service in load_yaml(path)["services"].items():
            if "command" not in service:
                continue
            targets = {
                (v["target"] if isinstance(v, dict) else _interpolate(v).split(":")[1])
                for v in service.get("volumes", [])
            } | set(service.get("tmpfs", []))
            for option in ("--certs", "--state", "--data", "--data-dir", "--cache-dir", "--ca", "--key", "--out"):
                if option in service["command"]:
                    value = Path(_interpolate(_value(tuple(service["command"]), option)))
                    assert any(value == Path(t) or Path(t) in value.parents for t in targets), (
                        f"{path.name}:{name}: {option} {value} is not on a mounted volume"
                    )
