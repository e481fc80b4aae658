"""Tasks: evaluate each selected mask on each measured relation's test split, and its side effects."""

from __future__ import annotations


import sys
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task

from entrainment import ablate, heads, models, multimask, null, relations, scoring, tables, tokens
from entrainment.config import Config
from entrainment.discover import SHARED
from entrainment.paths import ICL_DIR
from entrainment.schema import ABLATION, NULL_DRAWS, SIDE_EFFECTS
from tasks.cache import files_hash, key_fn, manifest
from tasks.measure import model_key, relation_rows, rows_hash, slug

SHARDS = Path("shards") / "ablation"
MODULES = (ablate, multimask, null, scoring, heads, models, tokens, tables, sys.modules[__name__])
SIDE_RECALL_ITEMS = 20   # subjects per other relation (factual recall without context)
SIDE_RANDOM_DRAWS = 1    # random head sets for the side-effect control (each costs a full pass)


def head_set(cfg: Config, mask_relation: str, seed: int) -> heads.HeadSet:
    df = tables.read_table(cfg.out, "heads").filter(
        (pl.col("model") == models.resolve(cfg.model).spec) & (pl.col("relation") == mask_relation) & (pl.col("seed") == seed)
        & pl.col("removed")).sort("layer", "head")
    return heads.mask_set(mask_relation, seed, tuple(zip(df["layer"].to_list(), df["head"].to_list())))


def _inputs_eval(cfg: Config, mask_relation: str, seed: int, relation: str) -> dict:
    return {"model": model_key(cfg), "mask": head_set(cfg, mask_relation, seed).id, "relation": relation,
            "rows": rows_hash(relation_rows(cfg.out, relation))}


@task(name="ablate", tags=["gpu"], cache_key_fn=key_fn("ablate", MODULES, _inputs_eval))
def ablate_relation(cfg: Config, mask_relation: str, seed: int, relation: str) -> dict:
    loaded = models.load(cfg.model, cfg.device, cfg.dtype)
    hs = head_set(cfg, mask_relation, seed)
    items = relation_rows(cfg.out, relation).filter(pl.col("split") == "test")
    get_run_logger().info("ablation: mask %s (%d heads) on %s, %d test items, %d random draws", hs.id, len(hs.heads),
                          relation, len(items), cfg.random_draws)
    null = ablate.NullPlan(cfg.null_draws, cfg.null_items, cfg.train_conditions,
                           models.search_bf16(cfg.search_dtype, loaded.info.device))
    own = relation == mask_relation or (mask_relation == SHARED and relation in cfg.discover_relations)
    draws: list[dict] = []
    df = ablate.evaluate_mask(loaded, items, hs, mask_relation, seed, cfg.random_draws, cfg.seed, cfg.batch_size,
                              null if own else None, tokens.Tokens(loaded.tokenizer, cfg.bos), draws_out=draws)
    stem = cfg.out / SHARDS / slug(loaded.info.spec) / f"{slug(mask_relation)}.seed{seed}.{slug(relation)}"
    paths = [tables.write_parquet(df, stem.with_name(stem.name + ".parquet"), ABLATION),
             tables.write_parquet(pl.DataFrame(draws, schema=NULL_DRAWS.polars_schema()),
                                  stem.with_name(stem.name + ".null.parquet"), NULL_DRAWS)]
    return manifest(paths)


def side_tasks(cfg: Config, mask_relation: str) -> tuple[dict[str, list[tuple[str, str]]], set[str]]:
    """Factual recall on every other eligible relation in --data-dir, plus the ICL tasks in data/icl."""
    out: dict[str, list[tuple[str, str]]] = {}
    for path in relations.relation_files(cfg.data_dir):
        rel = relations.load_relation(path)
        if rel.eligible and rel.name != mask_relation:
            out[rel.name] = ablate.recall_prompts(rel, SIDE_RECALL_ITEMS, cfg.seed)
    icl = {name: ablate.icl_prompts(items, cfg.seed) for name, items in ablate.load_icl(ICL_DIR).items()}
    return out | {f"icl:{k}": v for k, v in icl.items()}, {f"icl:{k}" for k in icl}


def _inputs_side(cfg: Config, mask_relation: str, seed: int) -> dict:
    files = relations.relation_files(cfg.data_dir) + sorted(ICL_DIR.glob("*.json"))
    return {"model": model_key(cfg), "mask": head_set(cfg, mask_relation, seed).id, "data": files_hash(files),
            "knobs": [SIDE_RECALL_ITEMS, SIDE_RANDOM_DRAWS]}


@task(name="side-effects", tags=["gpu"], cache_key_fn=key_fn("ablate", MODULES, _inputs_side))
def side_effects(cfg: Config, mask_relation: str, seed: int) -> dict:
    loaded = models.load(cfg.model, cfg.device, cfg.dtype)
    hs = head_set(cfg, mask_relation, seed)
    tasks_, icl = side_tasks(cfg, mask_relation)
    draws = ablate.random_head_sets(hs, loaded.info.n_layers, loaded.info.n_heads, min(SIDE_RANDOM_DRAWS, cfg.random_draws), cfg.seed)
    get_run_logger().info("side effects of %s: %d tasks, %d random draws", hs.id, len(tasks_), len(draws))
    df = ablate.side_effects(loaded, tasks_, icl, hs, draws, mask_relation, seed, cfg.batch_size,
                             tokens.Tokens(loaded.tokenizer, cfg.bos))
    path = tables.write_parquet(df, cfg.out / SHARDS / slug(loaded.info.spec) / f"{slug(mask_relation)}.seed{seed}.side.parquet",
                                SIDE_EFFECTS)
    return manifest([path])


def combine(cfg: Config, eval_manifests: list[dict], side_manifests: list[dict]) -> dict:
    read = lambda ms, end: pl.concat([tables.read_parquet(Path(p)) for m in ms for p in m["outputs"]  # noqa: E731
                                      if p.endswith(end) and (end != ".parquet" or not p.endswith(".null.parquet"))])
    abl = ablate.with_holm(read(eval_manifests, ".parquet").sort("model", "mask_relation", "seed", "relation", "condition",
                                                                 "split", "variant"))
    draws = read(eval_manifests, ".null.parquet").sort("model", "mask_relation", "seed", "relation", "condition", "split", "draw")
    side = read(side_manifests, ".parquet").sort("model", "mask_relation", "seed", "task", "metric")
    paths = [tables.write_table(abl, cfg.out, "ablation"), tables.write_table(side, cfg.out, "side_effects"),
             tables.write_table(draws, cfg.out, "null_draws")]
    return manifest(paths, summary=ablate.summary_lines(abl))
