"""The model registry: an HTTPS service over a runs folder for evaluators, with bearer tokens."""
