"""Tasks: evaluate each distinct learned head set on each measured relation's test split, and its side effects.

Masks with the same heads (a seed and the stable set often agree) share one evaluation: the shards are keyed by
(mask relation, heads, evaluated relation), and ``combine`` labels their rows once per mask. The work is
``entrainment.evaluation`` (shared with the Python API).
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task

from entrainment import evaluation, masks, models, relations, tables
from entrainment.config import Config
from entrainment.paths import ICL_DIR
from entrainment.schema import ABLATION, NULL_DRAWS, SIDE_EFFECTS
from entrainment.searches import source_relations
from entrainment.summaries import summary_lines
from tasks.cache import files_hash, key_fn, manifest, write_timings
from tasks.inputs import model_key, relation_rows, rows_hash, shard_name
from tasks.means import reference

SHARDS = Path("shards") / "ablation"


def learned(cfg: Config) -> list[masks.LearnedMask]:
    """This model's masks in heads.parquet (each seed's search and the stable set)."""
    spec = models.resolve(cfg.model).spec
    return [m for m in masks.learned_masks(tables.read_table(cfg.out, "heads")) if m.model == spec]


def _mean(cfg: Config, loaded, mask_relation: str, needed: bool):
    return reference(cfg, loaded, source_relations(cfg, mask_relation)) if needed else None


def _inputs_eval(cfg: Config, mask_relation: str, heads_sets: tuple, relation: str) -> dict:
    return {
        "model": model_key(cfg),
        "heads": [mask_relation, [list(h) for h in heads_sets]],
        "relation": relation,
        "rows": rows_hash(relation_rows(cfg.out, relation)),
        "train": rows_hash(relation_rows(cfg.out, source_relations(cfg, mask_relation))),
    }


def eval_stem(cfg: Config, spec: str, mask_relation: str, heads: tuple, relation: str) -> Path:
    """Where one head set's evaluation on one relation is stored (suffix .eval.parquet / .null.parquet)."""
    hs = evaluation.head_set(mask_relation, heads)
    return cfg.out / SHARDS / shard_name(spec) / f"{shard_name(hs.id)}.{shard_name(relation)}"


def side_path(cfg: Config, spec: str, mask_relation: str, heads: tuple) -> Path:
    """Where one head set's side effects are stored."""
    hs = evaluation.head_set(mask_relation, heads)
    return cfg.out / SHARDS / shard_name(spec) / f"{shard_name(hs.id)}.side.parquet"


@task(name="ablate", tags=["gpu"], cache_key_fn=key_fn("ablate", __name__, _inputs_eval))
def ablate_relation(cfg: Config, mask_relation: str, heads_sets: tuple, relation: str) -> dict:
    """Every distinct head set of one mask relation on one relation's test split (the intact passes shared)."""
    t0 = time.perf_counter()
    loaded = models.load(cfg.model, cfg.device, cfg.dtype)
    needed = bool(set(cfg.methods()) - {"zero"})
    get_run_logger().info(
        "ablation: %d head sets of %s (%s heads) on %s, %d random draws",
        len(heads_sets),
        mask_relation,
        "/".join(str(len(h)) for h in heads_sets),
        relation,
        cfg.random_draws,
    )
    done = evaluation.evaluate_relation(
        loaded,
        tables.read_table(cfg.out, "prompts"),
        mask_relation,
        list(heads_sets),
        relation,
        cfg,
        _mean(cfg, loaded, mask_relation, needed),
    )
    paths = []
    for heads, (df, draws) in zip(heads_sets, done):
        stem = eval_stem(cfg, loaded.info.spec, mask_relation, heads, relation)
        paths += [
            tables.write_parquet(df, stem.with_name(stem.name + ".eval.parquet"), ABLATION),
            tables.write_parquet(draws, stem.with_name(stem.name + ".null.parquet"), NULL_DRAWS),
        ]
    return manifest(paths, seconds=time.perf_counter() - t0)


def _inputs_side(cfg: Config, mask_relation: str, heads_sets: tuple) -> dict:
    files = relations.relation_files(cfg.data_dir) + sorted(ICL_DIR.glob("*.json"))
    return {"model": model_key(cfg), "heads": [mask_relation, [list(h) for h in heads_sets]],
            "data": files_hash(files), "knobs": [evaluation.SIDE_RECALL_ITEMS, evaluation.SIDE_RANDOM_DRAWS],
            "train": rows_hash(relation_rows(cfg.out, source_relations(cfg, mask_relation)))}


@task(name="side-effects", tags=["gpu"], cache_key_fn=key_fn("ablate", __name__, _inputs_side))
def side_effects_task(cfg: Config, mask_relation: str, heads_sets: tuple) -> dict:
    """The side effects of every distinct head set of one mask relation (the intact passes shared)."""
    t0 = time.perf_counter()
    loaded = models.load(cfg.model, cfg.device, cfg.dtype)
    methods = cfg.methods() if cfg.compare_everywhere else (cfg.ablation_method,)
    needed = any(m != "zero" for m in methods)
    get_run_logger().info("side effects of %d head sets of %s", len(heads_sets), mask_relation)
    frames = evaluation.side_effect_rows(loaded, mask_relation, list(heads_sets), cfg, ICL_DIR,
                                         _mean(cfg, loaded, mask_relation, needed))
    paths = [tables.write_parquet(df, side_path(cfg, loaded.info.spec, mask_relation, heads), SIDE_EFFECTS)
             for heads, df in zip(heads_sets, frames)]
    return manifest(paths, seconds=time.perf_counter() - t0)


def combine(cfg: Config, jobs: list[tuple[masks.LearnedMask, str, dict]],
            sides: list[tuple[masks.LearnedMask, dict]]) -> dict:
    """ablation, null_draws and side_effects: each mask's rows from the shard of its head set, labelled."""

    def read(m: dict, path: Path) -> pl.DataFrame:
        assert str(path) in m["outputs"], path
        return tables.read_parquet(path)

    evals = []
    for mask, relation, m in jobs:
        stem = eval_stem(cfg, mask.model, mask.relation, mask.head_set.heads, relation)
        evals.append((mask, read(m, stem.with_name(stem.name + ".eval.parquet")),
                      read(m, stem.with_name(stem.name + ".null.parquet"))))
    side = [(mask, read(m, side_path(cfg, mask.model, mask.relation, mask.head_set.heads))) for mask, m in sides]
    t = evaluation.tables(evals, side)
    timed: dict[str, dict] = {}  # one row per distinct task (several masks share one)
    for stage, ms in (("ablate", [(j[0], j[2]) for j in jobs]), ("side-effects", sides)):
        for mask, m in ms:
            timed.setdefault(min(m["outputs"]), {"model": mask.model, "stage": stage, "relation": mask.relation,
                                                 "seed": mask.seed, "epoch": -1,
                                                 "seconds": m.get("seconds", float("nan"))})
    paths = [tables.write_table(t[name], cfg.out, name) for name in ("ablation", "side_effects", "null_draws")]
    paths.append(write_timings(cfg, "ablate", pl.DataFrame(list(timed.values()))))
    return manifest(paths, summary=summary_lines(t["ablation"]))
