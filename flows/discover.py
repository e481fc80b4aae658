"""Flow: prompts (train/dev splits) -> one mask search per (relation, seed, resample) -> heads.parquet,
discovery.parquet, head_stability.parquet."""

from __future__ import annotations

from prefect import flow

from entrainment.config import Config
from entrainment.heads.masks import SHARED
from entrainment.stages.discover import search_jobs
from tasks.cache import run_jobs
from tasks.discover import combine, crossfit_shard, discover_shard
from tasks.inputs import discover_relations


@flow(name="discover", validate_parameters=False)
def discover_flow(cfg: Config, only: tuple[str, ...] | None = None) -> dict:
    rels = discover_relations(cfg, only)
    jobs = [(m, job) for m in cfg.per_model() for job in search_jobs(cfg, rels, bool(only))]  # shared mask included
    folds = [
        (m, (rel, f)) for m in cfg.per_model() for rel in rels if rel != SHARED for f in range(cfg.crossfit_folds)
    ]  # cross-fitting over subjects (entrainment.stages.crossfit)
    return combine(cfg, run_jobs(discover_shard, jobs) + (run_jobs(crossfit_shard, folds) if folds else []))
