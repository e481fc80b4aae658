"""The one registry of scheduled deployments of the pipeline.

Serve them on one machine (a long-running process that creates and executes the scheduled runs):

    .venv/bin/prefect server start --host 127.0.0.1 --port 4200 &        # once, keep running
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    .venv/bin/python -m deployments.schedules                               # serves every deployment below

Or with a work pool and workers (e.g. one worker per GPU machine): see prefect.yaml and README.
"""

from __future__ import annotations

from typing import Any

from entrainment.config import Config

# name -> (cron, timezone, Config overrides). Parameters are JSON: the pipeline flow takes `options`.
SCHEDULES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "weekly-smollm2": ("0 3 * * 1", "UTC", {"out": "results/weekly-smollm2"}),
}


def deployments() -> list:
    """RunnerDeployment objects for every entry of SCHEDULES."""
    from prefect.schedules import Cron

    import tasks  # noqa: F401  (project-local Prefect env)
    from flows.pipeline import pipeline

    out = []
    for name, (cron, tz, overrides) in SCHEDULES.items():
        options = Config(**overrides).to_dict()
        out.append(
            pipeline.to_deployment(
                name=name,
                schedule=Cron(cron, timezone=tz),
                parameters={"options": options},
                concurrency_limit=1,
                tags=["entrainment"],
                description=f"Full entrainment pipeline ({cron} {tz})",
            )
        )
    return out


if __name__ == "__main__":
    from prefect import serve

    serve(*deployments(), limit=1)
