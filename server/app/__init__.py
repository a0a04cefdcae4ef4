"""The ServerApp: one federated run on the coordinator, round after round.

The Flower entry point (``serverapp``), the run session with its end-of-round step
(``session``), the round loop, the guard around the strategy, the strategies, the DP
plan, the hospital directory and the server's test-split scoring.
"""
