"""The model registry: an HTTPS service over a runs folder for evaluators, with bearer tokens.

``service`` is the FastAPI app (the paths of :mod:`fedward.common.registry_api`),
``model_files`` the weight files it may serve, ``tokens`` the bearer tokens, ``serve``
runs the app with uvicorn over TLS.
"""
