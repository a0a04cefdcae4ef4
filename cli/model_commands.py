"""``fedward model export|evaluate`` and ``fedward predict``.

Commands are registered on :data:`fedward.cli.models.model_app`; ``predict`` is a
top-level command wired by :mod:`fedward.cli.main`. Heavy imports stay inside the
commands so that ``fedward --help`` stays fast.
"""

from __future__ import annotations

from fedward.cli.models import model_app

__all__ = ["model_app"]
