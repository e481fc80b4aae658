"""Flow: prompts + heads (+ head_scores, head_stability when present) -> head_types.parquet +
head_type_agreement.parquet, one cached task per model."""

from __future__ import annotations

from prefect import flow

from entrainment.config import Config
from tasks.cache import run_jobs
from tasks.head_types import combine, head_types_model


@flow(name="heads", validate_parameters=False)
def head_types_flow(cfg: Config) -> dict:
    return combine(cfg, run_jobs(head_types_model, [(m, ()) for m in cfg.per_model()]))
