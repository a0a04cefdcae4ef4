"""The dashboard's JSON endpoints, which its pages poll; each one 401 without a session or token::

    GET /ui/api/runs              {"runs": [entry, ...]}  (status, round k/N, best val AUC, test AUC, epsilon)
    GET /ui/api/runs/{run}        entry, per-round server rows, hospitals, privacy budget, downloads
    GET /ui/api/runs/{run}/card   model_card.json ({} until the run has one)

Answers are ``Cache-Control: no-store`` and small (the figures the pages draw, not the
raw metric files). The run id is matched against the runs folder's directory listing;
nothing from the request becomes a path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException

from fedward.common.rundir.layout import CARD_JSON
from fedward.server.registry.auth import TokenName
from fedward.server.registry.dashboard.run_views import RunViews

API_PREFIX = "/ui/api"


def _run_dir(views: RunViews, run: str) -> Path:
    run_dir = views.run_dir(run)
    if run_dir is None:
        raise HTTPException(status_code=404, detail="no such run")
    return run_dir


def add_api_routes(app: FastAPI, views: RunViews) -> None:
    """Add the ``/ui/api`` routes over ``views``' runs folder to ``app``."""

    @app.get(API_PREFIX + "/runs")
    def runs(token: TokenName) -> dict[str, Any]:
        return {"runs": views.runs()}

    @app.get(API_PREFIX + "/runs/{run}")
    def run(run: str, token: TokenName) -> dict[str, Any]:
        return views.run(_run_dir(views, run))

    @app.get(API_PREFIX + "/runs/{run}/card")
    def card(run: str, token: TokenName) -> dict[str, Any]:
        return views.json_file(_run_dir(views, run), CARD_JSON)
