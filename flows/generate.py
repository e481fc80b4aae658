"""Flow: relation files -> prompts.parquet."""

from prefect import flow

from entrainment.config import Config
from tasks.cache import run_cached
from tasks.generate import generate


@flow(name="generate", validate_parameters=False)
def generate_flow(cfg: Config) -> dict:
    return run_cached(generate, cfg)
