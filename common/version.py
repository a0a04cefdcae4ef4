"""fedward's own version and the compatibility rule between coordinator and hospitals."""

from __future__ import annotations

from functools import cache
from importlib import metadata


@cache
def fedward_version() -> str:
    """The installed fedward version (``"0+unknown"`` when running from an uninstalled tree)."""
    try:
        return metadata.version("fedward")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def major_minor(version: str) -> tuple[str, str]:
    """``"1.4.2" -> ("1", "4")``; missing parts are empty strings."""
    parts = version.split("+", 1)[0].split(".")
    return (parts[0] if parts else "", parts[1] if len(parts) > 1 else "")


def compatible(theirs: str, ours: str) -> bool:
    """Whether a hospital's fedward can join a coordinator's run: same major.minor."""
    return major_minor(theirs) == major_minor(ours)


def library_versions() -> dict[str, str]:
    """Versions of the libraries a trained model depends on, for model cards."""
    import platform

    out = {"python": platform.python_version(), "fedward": fedward_version()}
    for dist in ("flwr", "torch", "monai", "numpy", "safetensors"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out
