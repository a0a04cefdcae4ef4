"""deploy/compose/*.yml against the Compose Specification's JSON schema, and mutated copies that must fail."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fixtures.deploy_tools import COMPOSE_FILES, check_compose, compose_errors, dump_yaml, load_yaml, run

NAMES = [path.name for path in COMPOSE_FILES]


def test_the_compose_files_are_there() -> None:
    assert set(NAMES) >= {"coordinator.yml", "hospital.yml", "hospital.gpu.yml", "demo.yml"}


def test_every_compose_file_follows_the_compose_specification() -> None:
    result = check_compose(*COMPOSE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def _first_service(data: dict[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = next(iter(data["services"].values()))
    return service


def _unknown_field(data: dict[str, Any]) -> None:
    _first_service(data)["imagee"] = "fedward-coordinator:0.2.0"


def _ports_not_a_list(data: dict[str, Any]) -> None:
    _first_service(data)["ports"] = "abc"


def _volumes_not_a_list(data: dict[str, Any]) -> None:
    _first_service(data)["volumes"] = "abc"


def _healthcheck_unknown_field(data: dict[str, Any]) -> None:
    _first_service(data)["healthcheck"] = {"tset": ["CMD", "fedward", "--help"]}


def _bad_depends_condition(data: dict[str, Any]) -> None:
    _first_service(data)["depends_on"] = {"superlink": {"condition": "service_ready"}}


MUTATIONS = {
    "unknown-field": _unknown_field,
    "ports-wrong-type": _ports_not_a_list,
    "volumes-wrong-type": _volumes_not_a_list,
    "healthcheck-unknown-field": _healthcheck_unknown_field,
    "depends-on-bad-value": _bad_depends_condition,
}


def test_a_mutated_copy_of_every_compose_file_fails_validation(tmp_path: Path) -> None:
    unchanged, mutated = [], []
    for path in COMPOSE_FILES:
        data = load_yaml(path)
        unchanged.append(dump_yaml(copy.deepcopy(data), tmp_path / f"same-{path.name}"))
        for name, mutate in MUTATIONS.items():
            changed = copy.deepcopy(data)
            mutate(changed)
            mutated.append(dump_yaml(changed, tmp_path / f"{name}-{path.name}"))
    assert not any(compose_errors(*unchanged).values())  # the YAML round trip alone stays valid
    errors = compose_errors(*mutated)
    passed = [name for name, found in errors.items() if not found]
    assert not passed, f"mutated copies that passed validation: {passed}"


def test_docker_compose_accepts_them_when_it_is_installed(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or run(docker, "compose", "version").returncode != 0:
        pytest.skip("docker compose is not installed (optional: the schema check above is the CI's)")
    env = {
        "FEDWARD_SUPERLINK": "fl.example.org:9092",
        "FEDWARD_HOSPITAL": "st-olav",
        "FEDWARD_DATA": str(tmp_path),
        "FEDWARD_DATA_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    for files in (["coordinator.yml"], ["hospital.yml", "hospital.gpu.yml"], ["demo.yml"]):
        flags = [arg for name in files for arg in ("-f", str(COMPOSE_FILES[0].parent / name))]
        result = subprocess.run(
            [docker, "compose", *flags, "--profile", "setup", "config", "--quiet"],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------ what they say
def _services() -> dict[str, dict[str, Any]]:
    return {
        f"{path.name}:{name}": service
        for path in COMPOSE_FILES
        for name, service in load_yaml(path)["services"].items()
    }


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of a service's volumes, short or long syntax."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts.append((volume["source"], volume["target"], bool(volume.get("read_only"))))
        else:
            parts = volume.rsplit(":", 2) if volume.endswith((":ro", ":rw")) else [*volume.rsplit(":", 1), "rw"]
            mounts.append((parts[0], parts[1], parts[2] == "ro"))
    return mounts


def test_images_are_tagged_by_environment_variables_with_defaults() -> None:
    for name, service in _services().items():
        if "image" in service:
            assert service["image"].startswith("${FEDWARD_") and ":-fedward-" in service["image"], name


def test_long_running_services_have_healthchecks_and_a_read_only_root() -> None:
    for name, service in _services().items():
        if name.endswith("gpu.yml:agent") or "setup" in service.get("profiles", []):
            continue  # an override, or a one-shot setup step
        assert service.get("healthcheck", {}).get("test", [None])[0] == "CMD", name
        assert service.get("read_only") is True, name
        assert service.get("restart") == "unless-stopped", name
        assert "ALL" in service.get("cap_drop", []), name
        assert service.get("user", "10001") not in ("root", "0", "0:0"), name


def test_images_certificates_and_keys_are_mounted_read_only_by_the_services() -> None:
    checked = 0
    for name, service in _services().items():
        if "setup" in service.get("profiles", []):
            continue  # the demo's one-shot steps write certificates, keys and exported data
        for source, target, read_only in _mounts(service):
            if target in ("/data", "/certs", "/keys", "/certs/ca.crt"):
                assert read_only, f"{name}: {source}:{target} must be read-only"
                checked += 1
    assert checked >= 12


def test_the_gpu_override_reserves_an_nvidia_gpu_and_runs_the_cuda_image() -> None:
    agent = load_yaml(COMPOSE_FILES[0].parent / "hospital.gpu.yml")["services"]["agent"]
    devices = agent["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "-cuda}" in agent["image"]
