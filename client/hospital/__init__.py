"""The hospital side: the ClientApp, the hospital's data, check-data, and the agent that runs the SuperNode."""
