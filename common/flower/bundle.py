"""The Flower app bundle of a fedward run: configuration, not code.

``flwr run`` ships a folder's ``pyproject.toml`` as a FAB. fedward's bundle names the
installed components (:data:`SERVER_APP`, :data:`CLIENT_APP`) and carries the run's
:class:`~fedward.common.config.spec.RunSpec` as Flower's run config; it contains no Python,
so a hospital only ever executes the fedward it installed itself. Runtime dependency installation is disabled on every
fedward SuperLink and SuperNode, so the bundle's (empty) dependency list is never
installed either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w

from fedward.common.config import RunSpec
from fedward.common.version import fedward_version

SERVER_APP = "fedward.server.app.serverapp:app"
CLIENT_APP = "fedward.client.hospital.clientapp:app"
PUBLISHER = "fedward"
"""The FAB's publisher: Flower's ``fab_id`` of a fedward run is ``fedward/fedward-run``."""


def bundle_pyproject(spec: RunSpec) -> str:
    """The ``pyproject.toml`` text of a run's app bundle."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in spec.to_flower().items():
        section, _, name = key.partition(".")
        nested.setdefault(section, {})[name] = value
    doc = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": "fedward-run",
            "version": fedward_version().split("+", 1)[0],
            "description": "fedward run configuration (components come from the installed fedward)",
            "dependencies": [],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": PUBLISHER,
                    "components": {"serverapp": SERVER_APP, "clientapp": CLIENT_APP},
                    "config": nested,
                }
            }
        },
    }
    return tomli_w.dumps(doc)


def write_bundle(app_dir: Path, spec: RunSpec) -> Path:
    """Write the bundle folder (only ``pyproject.toml``) and return it."""
    app_dir = Path(app_dir)
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "pyproject.toml").write_text(bundle_pyproject(spec), encoding="utf-8")
    return app_dir


def read_bundle_config(app_dir: Path) -> dict[str, Any]:
    """The run config a bundle carries (flat ``section.key`` mapping), for inspection."""
    import tomllib

    doc = tomllib.loads((Path(app_dir) / "pyproject.toml").read_text(encoding="utf-8"))
    config = doc["tool"]["flwr"]["app"]["config"]
    return {f"{section}.{key}": value for section, table in config.items() for key, value in table.items()}
