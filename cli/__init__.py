"""The command line: typer app (app.py), options derived from Config (options.py), pre-run checks (preflight.py),
the instant-rerun fast path (fastpath.py), the background Prefect server (server.py), the watchdog that ends a
temporary server when the CLI dies (watchdog.py), output writers and exit codes (output.py, errors.py).

Dependency rule: cli -> flows -> tasks -> entrainment; cli imports a flow only when it has to run one, so an
unchanged rerun never imports Prefect or torch.
"""
