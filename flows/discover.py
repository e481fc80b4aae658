"""Flow: prompts (train/dev splits) -> one mask search per (relation, seed, resample) -> heads.parquet,
discovery.parquet, head_stability.parquet."""

from __future__ import annotations

from prefect import flow

from entrainment.config import Config
from entrainment.mask_search import SHARED
from tasks.cache import run_jobs
from tasks.discover import combine, discover_shard
from tasks.inputs import discover_relations


@flow(name="discover", validate_parameters=False)
def discover_flow(cfg: Config, only: tuple[str, ...] | None = None) -> dict:
    rels = discover_relations(cfg, only)
    if cfg.shared_mask and len(cfg.discover_relations) > 1 and not only:
        rels = rels + [SHARED]  # one more mask, trained on the union of the discovery relations' items
    jobs = [
        (m, (rel, seed, r))
        for m in cfg.per_model()
        for rel in rels
        for seed in cfg.seeds
        for r in range(cfg.search_resamples)
    ]
    return combine(cfg, run_jobs(discover_shard, jobs))
