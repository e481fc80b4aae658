"""Flow: prompts (train/dev splits) -> one mask search per (relation, seed) -> heads.parquet + discovery.parquet."""

from __future__ import annotations

from prefect import flow

from entrainment.config import Config
from entrainment.discover import SHARED
from entrainment.errors import InputError
from flows.measure import stage_relations
from tasks.cache import run_jobs
from tasks.discover import combine, discover_shard


def discover_relations(cfg: Config, only: tuple[str, ...] | None) -> list[str]:
    rels = stage_relations(cfg, only or cfg.discover_relations)
    if not rels:
        wanted = ", ".join(only or cfg.discover_relations)
        raise InputError(cfg.out / "prompts.parquet", "relation", wanted, "not in prompts.parquet (generate it first)")
    return rels


@flow(name="discover", validate_parameters=False)
def discover_flow(cfg: Config, only: tuple[str, ...] | None = None) -> dict:
    rels = discover_relations(cfg, only)
    if cfg.shared_mask and len(cfg.discover_relations) > 1 and not only:
        rels = rels + [SHARED]  # one more mask, trained on the union of the discovery relations' items
    jobs = [(m, (rel, seed)) for m in cfg.per_model() for rel in rels for seed in cfg.seeds]
    return combine(cfg, run_jobs(discover_shard, jobs))
