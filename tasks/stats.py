"""Task: stats.parquet and contrasts.parquet, cached on the measurement and prompt tables and the code."""

from __future__ import annotations

import sys

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from entrainment import schema, stats, tables
from entrainment.config import Config
from tasks.cache import files_hash, key_fn, manifest


def _inputs(cfg: Config) -> str:
    return files_hash([cfg.out / "measurements.parquet", cfg.out / "prompts.parquet"])


@task(name="stats", cache_key_fn=key_fn("stats", (stats, schema, tables, sys.modules[__name__]), _inputs))
def stats_task(cfg: Config) -> dict:
    s, c = stats.compute(cfg.out / "measurements.parquet", cfg.out / "prompts.parquet", cfg.confidence)
    paths = [tables.write_table(s, cfg.out, "stats"), tables.write_table(c, cfg.out, "contrasts")]
    lines = stats.summary_lines(s)
    logger = get_run_logger()
    for line in lines:
        logger.info(line)
    top = (s.filter((s["relation"] == "ALL") & (s["target"] == "distractor"))
           .select("model", "ablation", "condition", "metric", "n", "mean_diff", "ci_low", "ci_high", "p_value", "p_adjusted"))
    create_table_artifact(key="entrainment-stats", table=top.head(40).to_dicts(),
                          description=f"Pooled distractor shifts (ctx - base); full table: {paths[0]}")
    return manifest(paths, rows=len(s), summary=lines)
