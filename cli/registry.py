"""``fedward registry serve|token``: the coordinator's read-only model registry.

Heavy imports (FastAPI, uvicorn) stay inside the commands so that ``fedward --help``
stays fast.
"""

from __future__ import annotations

import typer

registry_app = typer.Typer(help="Coordinator: serve global models to evaluators over TLS.", no_args_is_help=True)
