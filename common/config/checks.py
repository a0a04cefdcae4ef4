"""Validation helpers every config section uses: key naming and range checks with errors naming the key.

Config keys are kebab-case (Flower's convention, ``local-epochs``); Python fields are
snake_case (``local_epochs``). :func:`config_key` is the one place that maps them.
"""

from __future__ import annotations

from fedward.common.choices import IMAGE_SIZES, MIN_IMAGE_SIZE, ModelName
from fedward.common.errors import ConfigError


def config_key(field_name: str) -> str:
    """Map a Python field name to its config key (``local_epochs`` -> ``local-epochs``)."""
    return field_name.replace("_", "-")


def check_min(where: str, value: int, low: int) -> None:
    """Refuse an integer below ``low``.

    Raises:
        ConfigError: naming ``where`` (e.g. ``train.local-epochs``) and the bound.
    """
    if value < low:
        raise ConfigError(f"{where} must be >= {low}; got {value}")


def check_range(
    where: str,
    value: float,
    *,
    low: float,
    high: float,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Refuse a number outside ``[low, high]`` (or the open interval on either side).

    Raises:
        ConfigError: naming ``where`` and the interval in mathematical notation.
    """
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ConfigError(f"{where} must be in {left}{low:g}, {high:g}{right}; got {value!r}")


def check_image_size(name: ModelName, image_size: int) -> None:
    """Refuse, at config time, an image size the network cannot take.

    Raises:
        ConfigError: if ``image_size`` (pixels) is below the network's minimum; the message
            names the minimum and the allowed sizes that satisfy it.
    """
    smallest = MIN_IMAGE_SIZE[name]
    if image_size < smallest:
        fits = ", ".join(str(s) for s in IMAGE_SIZES if s >= smallest)
        raise ConfigError(
            f"model {name.value} needs images of at least {smallest} px; data.image-size is {image_size} (use {fits})"
        )
