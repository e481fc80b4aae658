"""Tasks: evaluate each distinct learned head set on each measured relation's test split, and its side effects.

Masks with the same heads (a seed and the stable set often agree) share one evaluation: the shards are keyed by
(mask relation, heads, evaluated relation), and ``combine`` labels their rows once per mask. The work is
``entrainment.stages.ablate`` (shared with the Python API).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import polars as pl
from prefect import get_run_logger, task

from entrainment.ablation.summaries import summary_lines
from entrainment.config import Config
from entrainment.data import relations
from entrainment.heads import masks
from entrainment.heads.masks import source_relations
from entrainment.model import loading, sources
from entrainment.paths import ICL_DIR
from entrainment.stages import ablate, crossfit
from entrainment.statistics import verdict
from entrainment.store import tables
from entrainment.store.schema import ABLATION, NULL_DRAWS, SIDE_EFFECTS
from tasks.cache import files_hash, key_fn, manifest, write_timings
from tasks.inputs import model_key, relation_rows, rows_hash, shard_name
from tasks.means import reference
from tasks.progress import progress_bar

SHARDS = Path("shards") / "ablation"


def masks_of(cfg: Config) -> list[masks.LearnedMask]:
    """This model's masks in heads.parquet: each seed's search, the stable set, and the per-fold masks of the
    cross-fitted verdict (``fold`` set)."""
    spec = sources.resolve(cfg.model).spec
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
    hs = ablate.head_set(mask_relation, heads)
    return cfg.out / SHARDS / shard_name(spec) / f"{shard_name(hs.id)}.{shard_name(relation)}"


def side_path(cfg: Config, spec: str, mask_relation: str, heads: tuple) -> Path:
    """Where one head set's side effects are stored."""
    hs = ablate.head_set(mask_relation, heads)
    return cfg.out / SHARDS / shard_name(spec) / f"{shard_name(hs.id)}.side.parquet"


def _progress(stack: ExitStack, description: str) -> Callable[[str, int, int], None]:
    """The ablate stage's progress: a rich bar over the rows scored (every pass of every head set and method, then
    the null), opened on the first report; each new head set / method / null group is logged once."""
    bar: list[Callable[[float], None]] = []
    shown = [0]
    seen: set[str] = set()
    logger = get_run_logger()

    def report(what: str, done: int, total: int) -> None:
        if not bar:
            bar.append(stack.enter_context(progress_bar(description, total)))
        bar[0](done - shown[0])
        shown[0] = done
        if what not in seen:
            seen.add(what)
            logger.info("%s: %s (%d of %d rows scored)", description, what, done, total)

    return report


@task(name="ablate", tags=["gpu"], cache_key_fn=key_fn("ablate", __name__, _inputs_eval))
def ablate_relation(cfg: Config, mask_relation: str, heads_sets: tuple, relation: str) -> dict:
    """Every distinct head set of one mask relation on one relation's test split (the intact passes shared)."""
    t0 = time.perf_counter()
    loaded = loading.load(cfg.model, cfg.device, cfg.dtype)
    needed = bool(set(cfg.methods()) - {"zero"})
    get_run_logger().info(
        "ablation: %d head sets of %s (%s heads) on %s, %d random draws",
        len(heads_sets),
        mask_relation,
        "/".join(str(len(h)) for h in heads_sets),
        relation,
        cfg.random_draws,
    )
    with ExitStack() as stack:
        done = ablate.evaluate_relation(
            loaded,
            tables.read_table(cfg.out, "prompts"),
            mask_relation,
            list(heads_sets),
            relation,
            cfg,
            _mean(cfg, loaded, mask_relation, needed),
            _progress(stack, f"ablate {mask_relation} on {relation}"),
        )
    paths = []
    for heads, (df, draws, items) in zip(heads_sets, done):
        stem = eval_stem(cfg, loaded.info.spec, mask_relation, heads, relation)
        paths += [
            tables.write_parquet(df, stem.with_name(stem.name + ".eval.parquet"), ABLATION),
            tables.write_parquet(draws, stem.with_name(stem.name + ".null.parquet"), NULL_DRAWS),
            tables.write_parquet(items, stem.with_name(stem.name + ".items.parquet")),
        ]
    return manifest(paths, seconds=time.perf_counter() - t0)


def _inputs_side(cfg: Config, mask_relation: str, heads_sets: tuple) -> dict:
    files = relations.relation_files(cfg.data_dir) + sorted(ICL_DIR.glob("*.json"))
    return {
        "model": model_key(cfg),
        "heads": [mask_relation, [list(h) for h in heads_sets]],
        "data": files_hash(files),
        "knobs": [cfg.side_items, cfg.side_relations, cfg.side_icl_items, cfg.side_random_draws],
        "train": rows_hash(relation_rows(cfg.out, source_relations(cfg, mask_relation))),
    }


@task(name="side-effects", tags=["gpu"], cache_key_fn=key_fn("ablate", __name__, _inputs_side))
def side_effects_task(cfg: Config, mask_relation: str, heads_sets: tuple) -> dict:
    """The side effects of every distinct head set of one mask relation (the intact passes shared)."""
    t0 = time.perf_counter()
    loaded = loading.load(cfg.model, cfg.device, cfg.dtype)
    methods = cfg.methods() if cfg.compare_everywhere else (cfg.ablation_method,)
    needed = any(m != "zero" for m in methods)
    get_run_logger().info("side effects of %d head sets of %s", len(heads_sets), mask_relation)
    frames = ablate.side_effect_rows(
        loaded, mask_relation, list(heads_sets), cfg, ICL_DIR, _mean(cfg, loaded, mask_relation, needed)
    )
    paths = [
        tables.write_parquet(df, side_path(cfg, loaded.info.spec, mask_relation, heads), SIDE_EFFECTS)
        for heads, df in zip(heads_sets, frames)
    ]
    return manifest(paths, seconds=time.perf_counter() - t0)


def _inputs_crossfit(cfg: Config, relation: str, folds: tuple) -> dict:
    return {
        "model": model_key(cfg),
        "relation": relation,
        "folds": [[f, [list(h) for h in hs]] for f, hs in folds],
        "rows": rows_hash(relation_rows(cfg.out, relation)),
    }


@task(name="crossfit-verdict", tags=["gpu"], cache_key_fn=key_fn("ablate", __name__, _inputs_crossfit))
def crossfit_task(cfg: Config, relation: str, folds: tuple) -> dict:
    """The cross-fitted verdict of one relation: each fold's mask on its fold's subjects, and the null."""
    t0 = time.perf_counter()
    loaded = loading.load(cfg.model, cfg.device, cfg.dtype)
    get_run_logger().info(
        "cross-fitted verdict: %s, %d folds (%s heads), %d random draws",
        relation,
        len(folds),
        "/".join(str(len(h)) for _, h in folds),
        cfg.crossfit_draws,
    )
    mean = _mean(cfg, loaded, relation, cfg.ablation_method != "zero")
    rows, facts = crossfit.evaluate(loaded, tables.read_table(cfg.out, "prompts"), relation, list(folds), cfg, mean)
    stem = cfg.out / SHARDS / shard_name(loaded.info.spec) / f"crossfit.{shard_name(relation)}"
    paths = crossfit.write_result(rows, facts, stem)
    return manifest(paths, model=loaded.info.spec, relation=relation, seconds=time.perf_counter() - t0)


def combine(
    cfg: Config,
    jobs: list[tuple[masks.LearnedMask, str, dict]],
    sides: list[tuple[masks.LearnedMask, dict]],
    crossfits: list[dict] | None = None,
) -> dict:
    """ablation, null_draws, side_effects, subject_gains and verdict: each mask's rows from the shard of its head
    set, labelled; the cross-fitted verdicts from their shards."""

    def read(m: dict, path: Path) -> pl.DataFrame:
        assert str(path) in m["outputs"], path
        return tables.read_parquet(path)

    evals = []
    for mask, relation, m in jobs:
        stem = eval_stem(cfg, mask.model, mask.relation, mask.head_set.heads, relation)
        evals.append(
            (
                mask,
                read(m, stem.with_name(stem.name + ".eval.parquet")),
                read(m, stem.with_name(stem.name + ".null.parquet")),
                read(m, stem.with_name(stem.name + ".items.parquet")),
            )
        )
    side = [(mask, read(m, side_path(cfg, mask.model, mask.relation, mask.head_set.heads))) for mask, m in sides]
    fits = [crossfit.read_result(Path(p)) for m in (crossfits or []) for p in m["outputs"] if p.endswith(".json")]
    t = ablate.tables(evals, side, cfg, fits)
    timed: dict[str, dict] = {}  # one row per distinct task (several masks share one)
    for stage, ms in (("ablate", [(j[0], j[2]) for j in jobs]), ("side-effects", sides)):
        for mask, m in ms:
            timed.setdefault(
                min(m["outputs"]),
                {
                    "model": mask.model,
                    "stage": stage,
                    "relation": mask.relation,
                    "seed": mask.seed,
                    "epoch": -1,
                    "seconds": m.get("seconds", float("nan")),
                },
            )
    for m in crossfits or []:
        timed.setdefault(
            min(m["outputs"]),
            {
                "model": m["model"],
                "stage": "crossfit",
                "relation": m["relation"],
                "seed": -1,
                "epoch": -1,
                "seconds": m.get("seconds", float("nan")),
            },
        )
    paths = [
        tables.write_table(t[name], cfg.out, name)
        for name in ("ablation", "side_effects", "null_draws", "subject_gains", "verdict")
    ]
    paths.append(write_timings(cfg, "ablate", pl.DataFrame(list(timed.values()))))
    return manifest(paths, summary=summary_lines(t["ablation"]) + verdict.lines(t["verdict"]))
