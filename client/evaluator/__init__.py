"""The evaluator's tools: the registry client (list, pull), model directories, evaluate, predict, export.

``registry_client`` and ``pull`` talk to a model registry (the contract of
:mod:`fedward.common.registry_api`) and write a pulled folder (``pulled_layout``);
``model_dir`` opens and verifies a pulled folder or run directory, ``loaded_model`` loads
its network; ``evaluate`` (with ``labelled_data`` and ``roc``), ``predict`` and the
exports (``export_formats``, ``model_export``, ``monai_bundle``) use it.
"""
