"""The one failure a hospital replies with (light: the ClientApp forwarder imports it)."""

from __future__ import annotations

from fedward.common.errors import FedwardError


class HospitalError(FedwardError):
    """A hospital could not serve a request; the message is safe to send to the server.

    Flower turns it into the reply's error (``Error.reason``), which the coordinator
    records per hospital and round. Its text is fedward's own message: it names a setting,
    a file kind or a process, never patient data.
    """
