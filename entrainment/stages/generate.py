"""The dataset stage as one function: the prompts table a Config asks for, from LRE relations or your own items."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from entrainment.data import items, lre_prompts
from entrainment.stages import crossfit


def from_config(cfg) -> pl.DataFrame:
    """lre_prompts.parquet rows: own items (cfg.items) or generated from the LRE relations (cfg.relations).

    Args:
        cfg: an entrainment.config.Config.
    Returns:
        A frame with prompts.parquet's schema; `fold` is set on the discovery relations' rows (crossfit_folds).
    """
    if cfg.items is not None:
        own = items.build_items(cfg.items, cfg.seed, cfg.split, cfg.prompt_instruction)
        return crossfit.assign_folds(own, cfg.discover_relations, cfg.crossfit_folds, cfg.seed)
    search = lre_prompts.SearchData(
        cfg.search_pairs, cfg.template_holdout, cfg.passage_items, cfg.n_passages, cfg.passage_distractor
    )
    built = lre_prompts.build(
        cfg.data_dir,
        cfg.relations,
        cfg.seed,
        cfg.max_pairs,
        cfg.split,
        cfg.discover_relations,
        search,
        cfg.prompt_instruction,
    )
    return crossfit.assign_folds(built, cfg.discover_relations, cfg.crossfit_folds, cfg.seed)


def input_files(cfg) -> list[Path]:
    """Every file the dataset stage reads (its cache key hashes their contents)."""
    if cfg.items is not None:
        return [Path(cfg.items)]
    return lre_prompts.input_files(cfg.data_dir, cfg.relations)
