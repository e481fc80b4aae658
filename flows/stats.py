"""Flow: measurements.parquet -> stats.parquet + contrasts.parquet (paired and Welch t-tests in DuckDB)."""

from prefect import flow

from entrainment.config import Config
from tasks.cache import run_cached
from tasks.stats import stats_task


@flow(name="stats", validate_parameters=False)
def stats_flow(cfg: Config) -> dict:
    return run_cached(stats_task, cfg)
