"""Prefect flows: one per stage plus the whole pipeline. Import `tasks` first: it sets Prefect's env."""

import tasks  # noqa: F401  (sets PREFECT_HOME etc. before prefect is imported)
