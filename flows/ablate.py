"""Flow: heads.parquet + test splits -> ablation.parquet (with random-head control, transfer) + side_effects.parquet."""

from __future__ import annotations

import polars as pl
from prefect import flow

from entrainment import models, tables
from entrainment.config import Config
from flows.measure import stage_relations
from tasks.ablate import ablate_relation, combine, side_effects
from tasks.cache import run_jobs


def masks(cfg: Config) -> list[tuple[str, int]]:
    """(mask relation, seed) of every selected mask for this model in heads.parquet."""
    df = tables.read_table(cfg.out, "heads").filter(pl.col("model") == models.resolve(cfg.model).spec)
    return sorted(set(zip(df["relation"].to_list(), df["seed"].to_list())))


@flow(name="ablate", validate_parameters=False)
def ablate_flow(cfg: Config) -> dict:
    found = [(m, mask) for m in cfg.per_model() for mask in masks(m)]
    evals = run_jobs(ablate_relation, [(m, (mrel, seed, rel)) for m, (mrel, seed) in found
                                       for rel in stage_relations(m, None)])
    sides = run_jobs(side_effects, found)
    return combine(cfg, evals, sides)
