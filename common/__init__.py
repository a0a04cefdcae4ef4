"""What every side of a federation shares, and nothing that runs a process or a service.

Configuration (``config``), the dataset schema (``schema``), hospital data (``data``),
machine learning (``ml``), run directories (``rundir``), Flower message keys (``wire``),
certificates and TLS checks (``security``), Flower's CLI and processes (``flower``), run
setup (``runsetup``), errors, logging and versions. No Flower process, HTTP service or CLI
lives here; ``common`` imports nothing from the other rooms.
"""
