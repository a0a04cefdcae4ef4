"""The coordinator's operations: the SuperLink process, admitting hospitals, launching, listing and resuming runs."""
