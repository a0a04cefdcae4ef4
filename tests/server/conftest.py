"""Server tests build Flower messages, which need a task identity."""

from fixtures.flower import flower_identity  # noqa: F401  (autouse fixture)
from fixtures.registry import template  # noqa: F401  (a runs folder with one finished run)
