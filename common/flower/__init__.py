"""Flower as processes: the flwr CLI, the app bundle a run ships, quiet process control.

Nothing here is a ServerApp or ClientApp; these helpers start, submit to and stop Flower's
own processes for the coordinator, the hospital agent and the simulation driver.
"""
