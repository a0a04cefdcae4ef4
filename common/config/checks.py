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


def check_segmentation_grid(
    volume_size: tuple[int, ...], patch_size: tuple[int, ...], spacing: tuple[float, ...], ct_window: tuple[float, ...]
) -> None:
    """Refuse segmentation grid settings that cannot work: ``data.volume-size``, ``data.patch-size``,
    ``data.spacing`` (mm) and ``data.ct-window`` (Hounsfield units).

    Raises:
        ConfigError: naming the key: sizes must be multiples of 16 (and three of them for
            volumes), a patch must lie within the volume grid, spacings must be positive,
            and a CT window must be [low, high] with low < high.
    """
    if volume_size and (len(volume_size) != 3 or any(v < 16 or v % 16 for v in volume_size)):
        raise ConfigError(
            f"data.volume-size must be three sizes (D, H, W), each a multiple of 16 voxels; got {volume_size}"
        )
    if patch_size and any(v < 16 or v % 16 for v in patch_size):
        raise ConfigError(f"data.patch-size must hold sizes that are multiples of 16; got {patch_size}")
    if (
        patch_size
        and volume_size
        and (len(patch_size) != 3 or any(p > v for p, v in zip(patch_size, volume_size, strict=True)))
    ):
        raise ConfigError(f"data.patch-size {patch_size} must be three sizes within data.volume-size {volume_size}")
    if spacing and (len(spacing) != 3 or min(spacing) <= 0):
        raise ConfigError(f"data.spacing must be three positive spacings (mm) along D, H, W; got {spacing}")
    if len(ct_window) != 2 or ct_window[0] >= ct_window[1]:
        raise ConfigError(f"data.ct-window must be [low, high] Hounsfield units with low < high; got {ct_window}")
