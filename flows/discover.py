"""Flow: prompts (train/dev splits) -> one mask search per (relation, seed, resample) -> heads.parquet,
discovery.parquet, head_stability.parquet."""

from __future__ import annotations

from prefect import flow

from entrainment.config import Config
from entrainment.stages.discover import fold_jobs, search_jobs
from tasks.cache import run_jobs
from tasks.discover import combine, crossfit_shard, discover_shard
from tasks.inputs import discover_relations


@flow(name="discover", validate_parameters=False)
def discover_flow(cfg: Config, only: tuple[str, ...] | None = None) -> dict:
    rels = discover_relations(cfg, only)
    jobs = [(m, job) for m in cfg.per_model() for job in search_jobs(cfg, rels, bool(only))]  # shared mask too
    folds = [(m, job) for m in cfg.per_model() for job in fold_jobs(cfg, rels)]  # cross-fitting over subjects
    return combine(cfg, run_jobs(discover_shard, jobs) + (run_jobs(crossfit_shard, folds) if folds else []))
