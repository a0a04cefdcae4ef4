"""Flower as processes: the flwr CLI, the app bundle a run ships, and starting and stopping
Flower's processes quietly.
"""
