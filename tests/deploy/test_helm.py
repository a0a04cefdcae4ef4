"""deploy/helm charts: linted and rendered by helm, every object checked against Kubernetes' schemas
(strict: unknown fields fail), and mutated values, templates and rendered objects that must fail."""

from __future__ import annotations

import copy
import functools
import shutil
from pathlib import Path
from typing import Any

import pytest
from fixtures.deploy_tools import (
    CHARTS,
    RENDERINGS,
    Rendering,
    documents,
    dump_yaml,
    helm_template,
    kube_errors,
    load_yaml,
    pod_spec,
    run,
    validator,
)


@functools.cache
def rendered(rendering: Rendering) -> tuple[dict[str, Any], ...]:
    result = helm_template(rendering)
    assert result.returncode == 0, f"{rendering}: {result.stderr}"
    return tuple(documents(result.stdout))


def _deployment(rendering: Rendering) -> dict[str, Any]:
    (deployment,) = (doc for doc in rendered(rendering) if doc["kind"] == "Deployment")
    return deployment


def _container(rendering: Rendering, name: str) -> dict[str, Any]:
    containers: dict[str, dict[str, Any]] = {c["name"]: c for c in pod_spec(_deployment(rendering))["containers"]}
    return containers[name]


COORDINATOR, COORDINATOR_VARIANT, HOSPITAL, HOSPITAL_GPU, HOSPITAL_DATASET = RENDERINGS


@pytest.mark.parametrize("chart", ["fedward-coordinator", "fedward-hospital"])
def test_charts_have_chart_v2_metadata_and_a_values_schema(chart: str) -> None:
    meta = load_yaml(CHARTS / chart / "Chart.yaml")
    assert meta["apiVersion"] == "v2" and meta["name"] == chart and meta["type"] == "application"
    assert (CHARTS / chart / "values.schema.json").is_file()


@pytest.mark.parametrize("rendering", RENDERINGS, ids=str)
def test_helm_lint_strict_passes(rendering: Rendering) -> None:
    result = run(validator("helm"), "lint", "--strict", str(rendering.path), *rendering.flags())
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rendering", RENDERINGS, ids=str)
def test_every_rendered_object_follows_the_kubernetes_schemas(rendering: Rendering) -> None:
    docs = rendered(rendering)
    assert docs
    errors = [error for doc in docs for error in kube_errors(doc)]
    assert not errors, errors


def test_the_coordinator_renders_a_superlink_a_registry_their_services_and_a_state_volume() -> None:
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for doc in rendered(COORDINATOR))
    assert kinds == [
        ("Deployment", "prod-fedward-coordinator"),
        ("PersistentVolumeClaim", "prod-fedward-coordinator-state"),
        ("Service", "prod-fedward-coordinator-registry"),
        ("Service", "prod-fedward-coordinator-superlink"),
    ]
    deployment = _deployment(COORDINATOR)
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    spec = pod_spec(deployment)
    assert [c["name"] for c in spec["containers"]] == ["superlink", "registry"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["secret"]["secret"]["secretName"] == "fedward-certs"
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "prod-fedward-coordinator-state"
    for container in spec["containers"]:
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["certs"].get("readOnly") is True
        assert "secret" not in mounts  # only the init container reads the Secret itself
        assert {"startupProbe", "livenessProbe"} <= set(container)


def test_the_coordinator_variant_drops_the_registry_and_mounts_evaluation_data_read_only() -> None:
    objects = rendered(COORDINATOR_VARIANT)
    assert sorted(doc["kind"] for doc in objects) == ["Deployment", "Service"]
    superlink = _container(COORDINATOR_VARIANT, "superlink")
    assert superlink["args"][-2:] == ["--data-dir", "/data"]
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in superlink["volumeMounts"]
    (service,) = (doc for doc in objects if doc["kind"] == "Service")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["loadBalancerSourceRanges"] == ["198.51.100.0/24"]


@pytest.mark.parametrize("rendering", RENDERINGS, ids=str)
def test_pods_run_as_the_non_root_user_with_a_read_only_root(rendering: Rendering) -> None:
    spec = pod_spec(_deployment(rendering))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["automountServiceAccountToken"] is False
    for container in [*spec["initContainers"], *spec["containers"]]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]


def test_the_hospital_reads_its_data_read_only_and_its_key_from_a_secret() -> None:
    spec = pod_spec(_deployment(HOSPITAL))
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["data"]["hostPath"] == {"path": "/srv/pacs-export", "type": "Directory"}
    assert volumes["secret"]["secret"]["secretName"] == "fedward-hospital"
    agent = _container(HOSPITAL, "agent")
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in agent["volumeMounts"]
    assert agent["args"][agent["args"].index("--key") + 1] == "/credentials/st-olav.key"
    assert "resources" not in agent and agent["image"] == "fedward-hospital:0.2.0"


def test_gpu_enabled_requests_nvidia_gpus_and_runs_the_cuda_image() -> None:
    spec = pod_spec(_deployment(HOSPITAL_GPU))
    agent = _container(HOSPITAL_GPU, "agent")
    assert agent["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert agent["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert agent["image"] == "fedward-hospital:0.2.0-cuda"
    assert spec["runtimeClassName"] == "nvidia"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "pacs-export", "readOnly": True}


def test_the_dataset_names_the_classes_the_agent_checks() -> None:
    args = _container(HOSPITAL_DATASET, "agent")["args"]
    assert args[args.index("--dataset") + 1] == "chestmnist"


def test_the_hospital_chart_refuses_to_render_without_its_required_settings() -> None:
    result = helm_template(Rendering("fedward-hospital"))
    assert result.returncode != 0 and "hospital.name is required" in result.stderr
    both = helm_template(HOSPITAL, None, "--set", "data.existingClaim=pacs")
    assert both.returncode != 0 and "exactly one of data.hostPath and data.existingClaim" in both.stderr


# ------------------------------------------------------------------------------ mutations
VALUE_MUTATIONS = {
    "fedward-coordinator": [
        ("imagee.tag=0.2.0", "additional properties 'imagee' not allowed"),
        ("registry.port=abc", "/registry/port"),
        ("persistence.size=lots", "/persistence/size"),
        ("podSecurityContext.runAsNonRoot=false", "/podSecurityContext/runAsNonRoot"),
    ],
    "fedward-hospital": [
        ("gpu.enabeld=true", "additional properties 'enabeld' not allowed"),
        ("hospital.threads=three", "/hospital/threads"),
        ("gpu.enabled=yes please", "/gpu/enabled"),
        ("hospital.name=../etc", "/hospital/name"),
    ],
}


@pytest.mark.parametrize(
    ("rendering", "mutation", "message"),
    [
        (rendering, mutation, message)
        for rendering in (COORDINATOR, HOSPITAL)
        for mutation, message in VALUE_MUTATIONS[rendering.chart]
    ],
    ids=lambda value: str(value),
)
def test_values_schema_rejects_wrong_fields_and_types(rendering: Rendering, mutation: str, message: str) -> None:
    result = helm_template(rendering, None, "--set", mutation)
    assert result.returncode != 0, f"{mutation} rendered"
    assert message in result.stderr


def _container_typo(doc: dict[str, Any]) -> None:
    container = pod_spec(doc)["containers"][0]
    container["imagee"] = container.pop("image")


def _replicas_string(doc: dict[str, Any]) -> None:
    doc["spec"]["replicas"] = "three"


def _probe_typo(doc: dict[str, Any]) -> None:
    container = pod_spec(doc)["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe", container.get("livenessProbe"))


def _volume_mount_not_a_list(doc: dict[str, Any]) -> None:
    pod_spec(doc)["containers"][0]["volumeMounts"] = "/data"


def _port_string(doc: dict[str, Any]) -> None:
    container = pod_spec(doc)["containers"][0]
    container["ports"] = [{"containerPort": "superlink"}]


OBJECT_MUTATIONS = {
    "unknown-container-field": _container_typo,
    "replicas-wrong-type": _replicas_string,
    "unknown-probe-field": _probe_typo,
    "volume-mounts-wrong-type": _volume_mount_not_a_list,
    "container-port-wrong-type": _port_string,
}


@pytest.mark.parametrize("rendering", RENDERINGS, ids=str)
@pytest.mark.parametrize("mutation", sorted(OBJECT_MUTATIONS))
def test_kubernetes_schemas_reject_a_mutated_deployment(rendering: Rendering, mutation: str) -> None:
    doc = copy.deepcopy(_deployment(rendering))
    OBJECT_MUTATIONS[mutation](doc)
    assert kube_errors(doc), f"{mutation} passed the Kubernetes schemas"


def test_kubernetes_schemas_reject_a_mutated_service() -> None:
    (service,) = (doc for doc in rendered(COORDINATOR) if doc["metadata"]["name"].endswith("superlink"))
    typo, wrong_type = copy.deepcopy(service), copy.deepcopy(service)
    typo["spec"]["selectr"] = typo["spec"].pop("selector")
    wrong_type["spec"]["ports"][0]["port"] = "ninety"
    assert kube_errors(typo) and kube_errors(wrong_type)


@pytest.mark.parametrize(
    ("rendering", "template", "old", "new"),
    [
        (COORDINATOR, "deployment.yaml", "containerPort:", "containerPortt:"),
        (COORDINATOR, "service.yaml", "targetPort: superlink", "targetPort: [superlink]"),
        (HOSPITAL, "deployment.yaml", "readOnly: true", "readOnly: yes-please"),
        (HOSPITAL, "deployment.yaml", "emptyDir:", "emptyDirr:"),
    ],
    ids=["containerPort-typo", "targetPort-list", "readOnly-string", "emptyDir-typo"],
)
def test_a_chart_with_a_broken_template_fails_validation(
    rendering: Rendering, template: str, old: str, new: str, tmp_path: Path
) -> None:
    chart = tmp_path / rendering.chart
    shutil.copytree(rendering.path, chart)
    path = chart / "templates" / template
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    result = helm_template(rendering, chart)
    errors = [error for doc in documents(result.stdout) for error in kube_errors(doc)] if result.returncode == 0 else []
    assert result.returncode != 0 or errors, f"{template}: {old!r} -> {new!r} passed"


def test_a_values_file_with_a_typo_fails(tmp_path: Path) -> None:
    values = load_yaml(HOSPITAL.path / "ci" / "test-values.yaml")
    values["hospital"]["superlnk"] = values["hospital"].pop("superlink")
    result = run(
        validator("helm"), "template", "x", str(HOSPITAL.path), "--values", str(dump_yaml(values, tmp_path / "v.yaml"))
    )
    assert result.returncode != 0 and "superlnk" in result.stderr
