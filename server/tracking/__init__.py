"""Tracking runs in MLflow and TensorBoard: the ``[tracking]`` section's sinks, fed by the run recorder, and the replay.

* :mod:`.tracker` — :func:`open_tracker` and the :class:`TrackingSink` protocol;
* :mod:`.names` — metric and parameter names (the same live and replayed);
* :mod:`.tensorboard` — event files in ``<run>/tensorboard/``;
* :mod:`.mlflow_sink` — MLflow in a background thread (:mod:`.delivery`), ``tracking.json`` (:mod:`.record`);
* :mod:`.replay` — ``fedward run export-tracking``: a finished run directory into MLflow.

mlflow and tensorboard are imported only when a run is tracked (``pip install 'fedward[tracking]'``).
"""
