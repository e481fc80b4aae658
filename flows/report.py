"""Flow: every table in --out -> report.html."""

from prefect import flow

from entrainment.config import Config
from tasks.cache import run_cached
from tasks.report import report_task


@flow(name="report", validate_parameters=False)
def report_flow(cfg: Config) -> dict:
    return run_cached(report_task, cfg)
