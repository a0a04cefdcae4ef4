"""The registry's HTTP contract is one module: the app routes exactly its paths and no other module spells them."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from fedward.common import registry_api as api
from fedward.common.rundir import layout
from fedward.server.registry.service import create_app

REPO = Path(__file__).resolve().parents[3]
ROOMS = ("common", "server", "client", "simulation", "cli")
CONTRACT_MODULE = REPO / "common" / "registry_api.py"


def contract_routes() -> set[str]:
    files = {api.run_file_route(f) for f in api.RUN_FILES}
    return {api.HEALTH_PATH, api.RUNS_PATH, api.RUN_ROUTE, api.MODEL_ROUTE, *files}


def test_the_app_routes_exactly_the_contracts_paths(tmp_path: Path) -> None:
    routes = {str(getattr(route, "path", None)) for route in create_app(tmp_path).routes}
    assert {r for r in routes if r.startswith("/v1/")} == contract_routes()
    assert all(r.startswith("/ui") or r == "/" for r in routes - contract_routes())  # the dashboard's
    assert "/v1/runs/{run}/run" in routes and "/v1/runs/{run}/card.md" in routes


def test_the_run_files_are_the_run_directorys_files() -> None:
    served = {f.endpoint: f.file for f in api.RUN_FILES}
    assert served == {
        "card": layout.CARD_JSON,
        "card.md": layout.CARD_MD,
        "config": layout.CONFIG_FILE,
        "run": layout.RUN_FILE,
    }
    assert served["run"] == "run.json"


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ("20250101-120000-demo", "/v1/runs/20250101-120000-demo"),
        ("../x", "/v1/runs/..%2Fx"),
        ("a b/c?d#e", "/v1/runs/a%20b%2Fc%3Fd%23e"),
    ],
)
def test_a_run_id_is_one_percent_encoded_segment(run: str, expected: str) -> None:
    assert api.run_path(run) == expected
    assert api.model_path(run, api.BEST) == f"{expected}/models/best"
    assert api.model_path(run, 3) == f"{expected}/models/3"
    run_json = next(f for f in api.RUN_FILES if f.file == layout.RUN_FILE)
    assert api.run_file_path(run, run_json) == f"{expected}/run"


def test_health_body_round_trips() -> None:
    assert api.is_healthy(api.health_body())
    assert not api.is_healthy({"status": "starting"})
    assert not api.is_healthy(None)


def test_the_clis_defaults_come_from_the_contract() -> None:
    from fedward.cli.container import registry_health
    from fedward.cli.registry import registry_serve
    from fedward.server.registry.serve import serve

    assert inspect.signature(registry_health).parameters["url"].default == f"https://127.0.0.1:{api.DEFAULT_PORT}"
    assert inspect.signature(registry_serve).parameters["port"].default == api.DEFAULT_PORT
    assert inspect.signature(serve).parameters["port"].default == api.DEFAULT_PORT


def _prose_nodes(tree: ast.Module) -> set[int]:
    """Docstrings, and the bare strings documenting a constant: every string that is a statement of its own."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def test_no_other_module_spells_a_string_of_the_contract() -> None:
    """Code literals only: docstrings (the CLI's help texts among them) may name a path in prose."""
    spelled = (api.API_ROOT, api.SHA256_HEADER, api.ROUND_HEADER, api.TOKEN_ENV)
    offenders = []
    for room in ROOMS:
        for path in sorted((REPO / room).rglob("*.py")):
            if path == CONTRACT_MODULE or "__pycache__" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            prose = _prose_nodes(tree)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Constant) or id(node) in prose:
                    continue
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                if isinstance(node.value, str) and any(text in node.value for text in spelled):
                    offenders.append(f"{where}: {node.value!r}")
                elif isinstance(node.value, int) and node.value == api.DEFAULT_PORT:
                    offenders.append(f"{where}: {node.value}")
    assert not offenders, "contract strings spelled outside fedward.common.registry_api:\n" + "\n".join(offenders)
