"""The layout of a pulled model folder: the file names ``fedward model pull`` writes and model directories read.

::

    <out>/
      model.safetensors   the verified weights
      model_card.json|md  the run's model card (when the run has one)
      config.toml         the run's settings
      run.json            what the run's setup found: the dataset schema
      pull.json           registry, run, round, sha256, bytes, time, what the hash was checked against

The run files are those of :data:`fedward.common.registry_api.RUN_FILES`, under their
run-directory names; this module names the two files a pull adds.
"""

from __future__ import annotations

PULLED_WEIGHTS = "model.safetensors"
"""The weights of a pulled model."""
PULL_RECORD = "pull.json"
"""What was pulled from where, with the verified SHA-256."""
