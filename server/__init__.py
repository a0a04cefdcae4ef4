"""The coordinator's side: the ServerApp, the coordinator's operations and the model registry.

``app`` runs one federated run (Flower's ServerApp), ``coordinator`` runs the SuperLink,
admits hospitals and launches runs, ``registry`` serves finished models to evaluators.
"""
