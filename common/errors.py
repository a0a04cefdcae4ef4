"""One exception hierarchy for fedward.

Every error a user can cause (a bad flag, a missing file, a corrupt archive, an update
that does not fit the global model) is a :class:`FedwardError`. Its message is written
for the person who has to act on it (a researcher, a coordinator, a hospital's IT
staff): it names the field or file and says what to do. The CLI prints the message as
one line and exits with code 2; it never shows a traceback for these.

Messages never contain patient identifiers, pixel values or pixel statistics: they may
travel from a hospital to the coordinator inside a Flower error reply.
"""

from __future__ import annotations


class FedwardError(Exception):
    """Base class of every error fedward raises on purpose."""


class ConfigError(FedwardError):
    """A run configuration, a CLI flag or a TOML file holds an invalid value."""


class DataError(FedwardError):
    """A dataset file or folder is missing, unreadable or does not have the layout fedward needs."""


class DownloadError(DataError):
    """A dataset is not on disk and could not be downloaded (offline, or a hash mismatch)."""


class ModelError(FedwardError):
    """A model cannot be built, or given weights do not fit it."""


class SimulationError(FedwardError):
    """The simulation runtime (a local Flower SuperLink) failed to start or the run failed."""


class IntegrityError(FedwardError):
    """A downloaded or stored file does not match the SHA-256 recorded for it."""
