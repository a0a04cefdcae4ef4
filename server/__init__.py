"""The coordinator's side: the ServerApp (app), the coordinator's operations (coordinator) and
the model registry (registry).
"""
