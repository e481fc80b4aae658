"""Flow: prompts.parquet -> one shard per (model, relation, ablation) -> measurements.parquet, models.parquet,
head_means.parquet."""

from __future__ import annotations

from prefect import flow

from entrainment.config import Config
from entrainment.heads.masks import parse_ablation
from entrainment.model import sources
from tasks.cache import run_jobs
from tasks.inputs import stage_relations
from tasks.measure import combine, measure_shard, model_facts


@flow(name="measure", validate_parameters=False)
def measure_flow(cfg: Config, only: tuple[str, ...] | None = None) -> dict:
    jobs, facts = [], []
    for m in cfg.per_model():  # model by model: one model in memory at a time
        facts.append((m, ()))
        head_sets = [None] + parse_ablation(m.ablation_heads, sources.resolve(m.model).spec)
        jobs += [(m, (rel, hs)) for hs in head_sets for rel in stage_relations(m, only)]
    fact_manifests = run_jobs(model_facts, facts)  # one shard per model, cached
    return combine(cfg, run_jobs(measure_shard, jobs), fact_manifests)
