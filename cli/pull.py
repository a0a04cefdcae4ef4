"""``fedward model list|pull``: download a global model from a model registry and verify it.

Commands are registered on :data:`fedward.cli.models.model_app`. Heavy imports stay inside
the commands so that ``fedward --help`` stays fast.
"""

from __future__ import annotations

from fedward.cli.models import model_app

__all__ = ["model_app"]
