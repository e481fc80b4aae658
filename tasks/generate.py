"""Task: build prompts.parquet (cached on the relation files, word/fact pools, parameters and code)."""

from __future__ import annotations

import sys


import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from entrainment import prompts, relations, schema, tables
from entrainment.config import Config
from tasks.cache import files_hash, key_fn, manifest


def _inputs(cfg: Config) -> str:
    return files_hash(prompts.input_files(cfg.data_dir, cfg.relations))


@task(name="generate", cache_key_fn=key_fn("generate", (prompts, relations, schema, tables, sys.modules[__name__]), _inputs))
def generate(cfg: Config) -> dict:
    df = prompts.build(cfg.data_dir, cfg.relations, cfg.seed, cfg.max_pairs, cfg.split, cfg.discover_relations,
                       cfg.search_pairs)
    path = tables.write_table(df, cfg.out, "prompts")
    counts = df.group_by("relation", "condition").len().sort("relation", "condition")
    logger = get_run_logger()
    logger.info("wrote %s: %d prompts for %d relations", path, len(df), df["relation"].n_unique())
    sizes = df.filter(pl.col("relation").is_in(list(cfg.discover_relations))).group_by("relation", "condition", "split").len()
    for r in sizes.sort("relation", "condition", "split").iter_rows(named=True):
        logger.info("head-search data: %s / %s / %s: %d items", r["relation"], r["condition"], r["split"], r["len"])
    create_table_artifact(key="prompt-counts", table=counts.to_dicts(),
                          description=f"Prompts per relation and condition in {path}")
    summary = [f"head-search data for {r['relation']} ({', '.join(cfg.train_conditions)}): " + ", ".join(
        f"{s} {r[s]}" for s in ("train", "dev", "test")) for r in
        df.filter(pl.col("relation").is_in(list(cfg.discover_relations)) & pl.col("condition").is_in(list(cfg.train_conditions)))
        .group_by("relation", "split").len().pivot("split", index="relation", values="len").fill_null(0)
        .with_columns([pl.lit(0).alias(s) for s in ("train", "dev", "test") if s not in df["split"].unique()])
        .sort("relation").iter_rows(named=True)]
    return manifest([path], rows=len(df), summary=summary)



