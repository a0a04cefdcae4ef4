"""The ``[tracking]`` section of a run configuration: TensorBoard event files and an MLflow tracking server.

Tracking only mirrors what the run directory already records (per-round server metrics,
each hospital's metrics, the config, the model card, plots and best weights) into tools
people already use; the run directory stays the record. Only the ServerApp tracks:
hospitals never need MLflow or TensorBoard. Validated when built
(:class:`~fedward.common.errors.ConfigError` naming the key), like every section of
:mod:`fedward.common.config.sections`; whether the packages are installed is checked by
:func:`check_tracking_installed` where the run is set up, not here (hospitals parse this
config too).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from fedward.common.errors import ConfigError

MLFLOW_SCHEMES = ("http", "https", "file", "sqlite")
"""URI schemes ``tracking.mlflow-uri`` accepts; a value without a scheme is a folder (MLflow's file store)."""

INSTALL_HINT = "pip install 'fedward[tracking]'"
"""How to install the optional tracking packages."""


@dataclass(frozen=True, slots=True)
class TrackingConfig:
    """Where a run's metrics are mirrored besides its run directory.

    Attributes:
        tensorboard: write TensorBoard event files into ``<run>/tensorboard/``.
        mlflow_uri: an MLflow tracking URI: ``http(s)://host:port`` (a tracking server),
            ``sqlite:///path.db``, or a folder (``file:`` URI or plain path; MLflow's file
            store). Empty (the default): no MLflow. A relative folder is taken relative to
            the working directory of the command that sets the run up.
        mlflow_experiment: the MLflow experiment the run is logged under (created if absent).
    """

    tensorboard: bool = False
    mlflow_uri: str = ""
    mlflow_experiment: str = "fedward"

    def __post_init__(self) -> None:
        uri = self.mlflow_uri.strip()
        if uri != self.mlflow_uri:
            raise ConfigError(f"tracking.mlflow-uri must not start or end with spaces; got {self.mlflow_uri!r}")
        scheme = mlflow_scheme(uri)
        if scheme and scheme not in MLFLOW_SCHEMES:
            raise ConfigError(
                f"tracking.mlflow-uri {uri!r}: unsupported scheme {scheme!r}; use http(s)://host:port (a tracking "
                "server), sqlite:///path.db, or a folder"
            )
        if scheme in ("http", "https") and not urlparse(uri).hostname:
            raise ConfigError(f"tracking.mlflow-uri {uri!r} names no host; write e.g. http://127.0.0.1:5000")
        if not self.mlflow_experiment.strip():
            raise ConfigError("tracking.mlflow-experiment must not be empty")

    @property
    def enabled(self) -> bool:
        """Whether the run is tracked anywhere besides its run directory."""
        return self.tensorboard or bool(self.mlflow_uri)


def mlflow_scheme(uri: str) -> str:
    """The URI's scheme in lower case, or ``""`` for a plain path (``C:\\x`` counts as a path)."""
    scheme = urlparse(uri).scheme.lower()
    return scheme if len(scheme) > 1 else ""


def absolute_mlflow_uri(uri: str) -> str:
    """``uri`` with a plain relative folder made absolute (processes started elsewhere log there too)."""
    if not uri or mlflow_scheme(uri):
        return uri
    return str(Path(uri).expanduser().resolve())


def check_tracking_installed(settings: TrackingConfig) -> None:
    """Refuse tracking whose package is not installed (on the machine that runs the ServerApp).

    Raises:
        ConfigError: naming ``tracking.mlflow-uri`` or ``tracking.tensorboard`` and the
            install command.
    """
    wanted = []
    if settings.mlflow_uri:
        wanted.append(("tracking.mlflow-uri", "mlflow"))
    if settings.tensorboard:
        wanted.append(("tracking.tensorboard", "tensorboard"))
    for key, package in wanted:
        if importlib.util.find_spec(package) is None:
            raise ConfigError(f"{key} needs the {package} package, which is not installed: {INSTALL_HINT}")
