"""The ServerApp: one federated run on the coordinator, round after round (guard, strategies,
DP plan, hospital directory, test-split scoring).
"""
