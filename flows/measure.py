"""Flow: prompts.parquet -> one shard per (model, relation, ablation) -> measurements.parquet."""

from __future__ import annotations

from prefect import flow

from entrainment import models, tables
from entrainment.config import Config
from entrainment.heads import parse_ablation
from tasks.cache import run_many
from tasks.measure import combine, measure_shard


def stage_relations(cfg: Config, only: tuple[str, ...] | None) -> list[str]:
    """Relations present in prompts.parquet (optionally restricted to `only`)."""
    present = sorted(tables.read_table(cfg.out, "prompts")["relation"].unique())
    return [r for r in present if not only or r in only]


@flow(name="measure", validate_parameters=False)
def measure_flow(cfg: Config, only: tuple[str, ...] | None = None) -> dict:
    head_sets = [None] + parse_ablation(cfg.ablation_heads, models.resolve(cfg.model).spec)
    calls = [(rel, hs) for hs in head_sets for rel in stage_relations(cfg, only)]
    return combine(cfg, run_many(measure_shard, cfg, calls))
