"""The registry's web dashboard: runs, live learning curves, hospitals, privacy budget, model cards.

:func:`fedward.server.registry.dashboard.routes.add_dashboard` adds it to the registry's
app; it is served over the registry's own TLS port with its tokens (no other service).
"""
