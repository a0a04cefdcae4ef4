"""deploy/docker: the Dockerfiles linted by hadolint (and mutated copies that must fail), what
the images promise (non-root, healthcheck, telemetry off, pinned torch and dependencies), and
the constraints file covering every runtime dependency."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from fixtures.deploy_tools import DEPLOY, DOCKERFILES, HADOLINT_CONFIG, ROOT, final_stage, instructions, run, validator

CONSTRAINTS = DEPLOY / "docker" / "constraints.txt"
NAMES = [path.name for path in DOCKERFILES]


def hadolint(*files: Path) -> dict[str, list[str]]:
    """File name -> hadolint's findings (one call for all files)."""
    result = run(validator("hadolint"), "--config", str(HADOLINT_CONFIG), "--format", "json", *map(str, files))
    findings: dict[str, list[str]] = {path.name: [] for path in files}
    for item in json.loads(result.stdout or "[]"):
        findings[Path(item["file"]).name].append(f"{item['line']} {item['code']} {item['message']}")
    assert (result.returncode != 0) == any(findings.values()), result.stdout + result.stderr
    return findings


def test_a_cpu_and_a_cuda_dockerfile_for_the_coordinator_and_the_hospital() -> None:
    assert NAMES == [
        "coordinator.Dockerfile",
        "coordinator.cuda.Dockerfile",
        "hospital.Dockerfile",
        "hospital.cuda.Dockerfile",
    ]


def test_hadolint_finds_nothing() -> None:
    findings = hadolint(*DOCKERFILES)
    assert not any(findings.values()), findings


MUTATIONS = {
    # a misspelt instruction, an argument of the wrong type, and a broken promise
    "unknown-instruction": ("ENTRYPOINT [", "ENTRYPONT ["),
    "port-not-a-number": ("HEALTHCHECK --interval=30s", "HEALTHCHECK --interval=thirty"),
    "port-out-of-range": ("USER 10001:10001\n", "USER 10001:10001\nEXPOSE 99999\n"),
    "root-user": ("USER 10001:10001\n", "USER root\n"),
}


def test_hadolint_rejects_mutated_copies(tmp_path: Path) -> None:
    copies = []
    for path in DOCKERFILES:
        text = path.read_text(encoding="utf-8")
        for name, (old, new) in MUTATIONS.items():
            assert old in text, f"{path.name}: {old!r} not found"
            copy = tmp_path / f"{name}.{path.name}"
            copy.write_text(text.replace(old, new, 1), encoding="utf-8")
            copies.append(copy)
    findings = hadolint(*copies)
    passed = [name for name, found in findings.items() if not found]
    assert not passed, f"mutated Dockerfiles hadolint accepted: {passed}"


# ------------------------------------------------------------------------------ what the images promise
def _last(path: Path, keyword: str) -> str:
    values = [rest for key, rest in final_stage(path) if key == keyword]
    assert values, f"{path.name} has no {keyword}"
    return values[-1]


def _env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, rest in final_stage(path):
        if key == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", rest))
    return env


@pytest.mark.parametrize("path", DOCKERFILES, ids=NAMES)
def test_the_image_runs_fedward_as_a_non_root_user_with_a_healthcheck(path: Path) -> None:
    assert json.loads(_last(path, "ENTRYPOINT")) == ["fedward"]
    assert json.loads(_last(path, "CMD"))[0] in ("server", "client")
    assert _last(path, "USER") == "10001:10001"
    healthcheck = _last(path, "HEALTHCHECK")
    assert json.loads(healthcheck.partition(" CMD ")[2])[:1] == ["fedward"]
    assert "useradd --system --uid 10001" in _last(path, "RUN")


@pytest.mark.parametrize("path", DOCKERFILES, ids=NAMES)
def test_telemetry_and_runtime_installs_are_off_as_in_every_fedward_process(path: Path) -> None:
    from fedward.common.flower.processes import QUIET_VARIABLES

    env = _env(path)
    for key in (
        "FLWR_TELEMETRY_ENABLED",
        "FLWR_DISABLE_UPDATE_CHECK",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION",
        "RAY_USAGE_STATS_ENABLED",
        "HF_HUB_OFFLINE",
    ):
        assert env.get(key) == QUIET_VARIABLES[key], key


@pytest.mark.parametrize("path", DOCKERFILES, ids=NAMES)
def test_torch_2_13_from_the_pytorch_index_and_fedward_from_the_repository_with_constraints(path: Path) -> None:
    steps = instructions(path)
    args = dict(rest.split("=", 1) for key, rest in steps if key == "ARG" and "=" in rest)
    runs = [rest for key, rest in steps if key == "RUN"]
    assert any('--index-url "${TORCH_INDEX}"' in r and "torch==2.13.0" in r for r in runs)
    assert any("--constraint /tmp/constraints.txt /src" in r for r in runs)
    assert ("COPY", "deploy/docker/constraints.txt /tmp/constraints.txt") in steps
    for package in ("common", "server", "client", "simulation", "cli"):
        assert ("COPY", f"{package} /src/{package}") in steps
    if ".cuda." in path.name:
        assert re.fullmatch(r"nvidia/cuda:[0-9.]+-runtime-ubuntu[0-9.]+", args["CUDA_IMAGE"])
        assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu[0-9]+", args["TORCH_INDEX"])
        cuda = re.search(r"cuda:(\d+)\.(\d+)", args["CUDA_IMAGE"])
        assert cuda is not None and args["TORCH_INDEX"].endswith(f"cu{cuda[1]}{cuda[2]}")  # matching CUDA
    else:
        assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
        assert args["PYTHON_IMAGE"].startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}")


@pytest.mark.parametrize("role", ["coordinator", "hospital"])
def test_cpu_and_cuda_variants_run_the_same_commands(role: str) -> None:
    cpu, cuda = DEPLOY / "docker" / f"{role}.Dockerfile", DEPLOY / "docker" / f"{role}.cuda.Dockerfile"
    for keyword in ("ENTRYPOINT", "CMD", "HEALTHCHECK", "USER", "WORKDIR", "VOLUME"):
        assert _last(cpu, keyword) == _last(cuda, keyword), keyword
    assert _env(cpu) == _env(cuda)


def test_the_build_context_keeps_the_sources_and_leaves_out_the_rest() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines() if line.strip()]
    rules = [line for line in lines if not line.startswith("#")]
    assert rules[0] == "**"  # everything out (.git, .venv, runs, data), then the sources back in
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        rest.split()[0]
        for path in DOCKERFILES
        for key, rest in instructions(path)
        if key == "COPY" and not rest.startswith("--from")
    }
    assert copied - kept == set(), "COPY sources excluded by .dockerignore"


# ------------------------------------------------------------------------------ constraints
def test_the_constraints_pin_every_runtime_dependency_within_pyproject_ranges() -> None:
    pytest.importorskip("packaging")
    from packaging.utils import canonicalize_name

    sys.path.insert(0, str(DEPLOY / "docker"))
    try:
        import pin_constraints
    finally:
        sys.path.pop(0)
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    for requirement in pin_constraints.project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is missing from constraints.txt: regenerate it (see its header)"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {requirement}"
    assert pins["torch"] == "2.13.0"
    assert not [name for name in pins if name.startswith(("pytest", "hadolint", "kubernetes-validate"))]


def test_the_constraints_are_what_the_generator_writes_for_this_environment() -> None:
    sys.path.insert(0, str(DEPLOY / "docker"))
    try:
        import pin_constraints
    finally:
        sys.path.pop(0)
    try:
        expected = pin_constraints.render(pin_constraints.runtime_closure(pin_constraints.project_requirements()))
    except Exception as err:  # a partial environment: not every dependency installed
        pytest.skip(f"this environment lacks a runtime dependency: {err}")
    pinned = {line for line in expected.splitlines() if "==" in line}
    written = {line for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines() if "==" in line}
    missing = {line.split("==")[0] for line in pinned} - {line.split("==")[0] for line in written}
    assert not missing, f"constraints.txt lacks {sorted(missing)}: regenerate it (see its header)"
