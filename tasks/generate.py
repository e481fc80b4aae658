"""Task: build prompts.parquet (cached on the relation files or the items file, word/fact pools, parameters, code)."""

from __future__ import annotations

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from entrainment.config import Config
from entrainment.stages.generate import from_config, input_files
from entrainment.store import tables
from entrainment.vocabulary import SPLITS
from tasks.cache import files_hash, key_fn, manifest

MAX_LINES = 20  # console lines per kind of summary (the table itself has every count)


def _inputs(cfg: Config) -> str:
    return files_hash(input_files(cfg))


@task(name="generate", cache_key_fn=key_fn("generate", __name__, _inputs))
def generate(cfg: Config) -> dict:
    df = from_config(cfg)
    path = tables.write_table(df, cfg.out, "prompts")
    counts = df.group_by("relation", "condition").len().sort("relation", "condition")
    logger = get_run_logger()
    logger.info("wrote %s: %d prompts for %d relations", path, len(df), df["relation"].n_unique())
    search = df.filter(pl.col("relation").is_in(list(cfg.discover_relations)))
    if cfg.items is not None and search.is_empty():
        search = df  # own items without the discovery relations: every relation is searched (tasks.inputs)
    groups = search.group_by("relation", "condition", "split").len().sort("relation", "condition", "split")
    for r in groups.head(MAX_LINES).iter_rows(named=True):
        logger.info("head-search data: %s / %s / %s: %d items", r["relation"], r["condition"], r["split"], r["len"])
    if len(groups) > MAX_LINES:  # 20k relations must not print 40k lines
        logger.info("head-search data: ... and %d more (relation, condition, split) groups", len(groups) - MAX_LINES)
    create_table_artifact(
        key="prompt-counts", table=counts.to_dicts(), description=f"Prompts per relation and condition in {path}"
    )
    train = search.filter(pl.col("condition").is_in(list(cfg.train_conditions)))
    summary = []
    for (rel,), g in sorted(train.group_by("relation"), key=lambda kv: kv[0]):
        n = {s: len(g.filter(pl.col("split") == s)) for s in SPLITS}
        held = sorted(
            set(g.filter(pl.col("split") == "test")["query_template"].drop_nulls())
            - set(g.filter(pl.col("split") != "test")["query_template"].drop_nulls())
        )
        one_template = (
            cfg.items is None and cfg.template_holdout and not held and g["query_template"].drop_nulls().n_unique() == 1
        )
        summary.append(
            f"head-search data for {rel} ({', '.join(cfg.train_conditions)}): "
            + ", ".join(f"{s} {n[s]}" for s in n)
            + (f"; held-out query template (test only): {held[0]!r}" if held else "")
            + ("; template_holdout holds nothing out (the relation has one query template)" if one_template else "")
        )
    if len(summary) > MAX_LINES:
        summary = summary[:MAX_LINES] + [f"head-search data: ... and {len(summary) - MAX_LINES} more relations"]
    return manifest([path], rows=len(df), summary=summary)
