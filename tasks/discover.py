"""Tasks: one mask search per (model, relation, seed, resample), cached; the discovery tables from all of them.

The work is ``entrainment.stages.discover`` (shared with the Python API); a task adds the cache key, a resume
checkpoint, a progress bar and the shard files.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from entrainment.config import Config
from entrainment.heads import masks
from entrainment.model import loading
from entrainment.stages import crossfit, discover
from entrainment.store import tables
from entrainment.store.schema import DISCOVERY_MASKS, HEADS
from tasks.cache import key_fn, manifest, stage_key, write_timings
from tasks.inputs import model_key, relation_rows, rows_hash, shard_name
from tasks.means import reference

SHARDS = Path("shards") / "discovery"
source_relations = masks.source_relations


def _inputs(cfg: Config, relation: str, seed: int, resample: int) -> dict:
    return {
        "model": model_key(cfg),
        "relation": relation,
        "seed": seed,
        "resample": resample,
        "rows": rows_hash(relation_rows(cfg.out, source_relations(cfg, relation))),
    }


def _search_inputs(cfg: Config, relation: str) -> tuple:
    """What a mask relation's searches read: the model, its source relations' prompt rows, the reference means
    (mean and resample ablation; None under zero)."""
    loaded = loading.load(cfg.model, cfg.device, cfg.dtype)
    source = source_relations(cfg, relation)
    mean = reference(cfg, loaded, source) if cfg.ablation_method != "zero" else None
    return loaded, relation_rows(cfg.out, source), mean


@task(name="discover", tags=["gpu"], cache_key_fn=key_fn("discover", __name__, _inputs))
def discover_shard(cfg: Config, relation: str, seed: int, resample: int = 0) -> dict:
    t0 = time.perf_counter()
    logger = get_run_logger()
    loaded, rows, mean = _search_inputs(cfg, relation)
    work = stage_key("discover", __name__, cfg, _inputs(cfg, relation, seed, resample))[:16]
    what = f"{relation} s{seed}" + (f" r{resample}" if resample else "")
    logger.info(
        "mask search: %s / %s, seed %d, resample %d, %d heads, <= %d steps / %d epochs, %s, %s",
        loaded.info.spec,
        relation,
        seed,
        resample,
        loaded.info.n_total_heads,
        cfg.max_steps,
        cfg.epochs,
        "bfloat16" if loading.search_bf16(cfg.search_dtype, loaded.info.device) else "float32",
        cfg.ablation_method,
    )
    with Progress(
        TextColumn(f"discover {what}"),
        BarColumn(),
        TextColumn("epoch {task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ) as bar:
        tid = bar.add_task("", total=cfg.epochs, status="")

        def on_epoch(r: dict) -> None:
            status = f"loss {r['loss']:.3f}  dev delta {r['dev_delta']:.2f}  removed {r['n_removed']}"
            bar.update(tid, completed=r["epoch"], status=status)
            logger.info("epoch %d: %s (%.1f s)", r["epoch"], status, r["seconds"])

        ckpt = cfg.out / SHARDS / ".ckpt" / f"{work}.pt"
        s = discover.one_search(loaded, rows, relation, seed, resample, cfg, mean, ckpt, on_epoch)
    m = _shard(cfg, loaded.info.spec, relation, s, time.perf_counter() - t0)
    ckpt.unlink(missing_ok=True)
    return m


def _shard(cfg: Config, spec: str, relation: str, s: discover.Search, seconds: float) -> dict:
    """Write one search's shard files; its manifest (the facts logged too)."""
    seed, resample = s.facts["seed"], s.facts["resample"]
    folder, stem = cfg.out / SHARDS / shard_name(spec), f"{shard_name(relation)}.seed{seed}.r{resample}"
    paths = [
        tables.write_parquet(s.log, folder / f"{stem}.log.parquet"),  # with `seconds` (split off in combine)
        tables.write_parquet(s.masks, folder / f"{stem}.masks.parquet", DISCOVERY_MASKS),
        tables.write_parquet(s.heads, folder / f"{stem}.heads.parquet", HEADS),
    ]
    f = s.facts
    get_run_logger().info(
        "%s s%d r%d: selected epoch %d: %d heads removed, dev delta %.2f -> %.2f (%d epochs, %d steps run, %s)",
        relation,
        seed,
        resample,
        f["epoch"],
        f["n_removed"],
        f["dev_delta_start"],
        f["dev_delta"],
        f["epochs_run"],
        f["steps_run"],
        "converged" if f["converged"] else "not converged",
    )
    return manifest(paths, **f, seconds=seconds)


def _inputs_pass(cfg: Config, relation: str, searches: tuple) -> dict:
    return {
        "model": model_key(cfg),
        "relation": relation,
        "searches": [list(j) for j in searches],
        "rows": rows_hash(relation_rows(cfg.out, source_relations(cfg, relation))),
    }


@task(name="discover-pass", tags=["gpu"], cache_key_fn=key_fn("discover", __name__, _inputs_pass))
def discover_pass(cfg: Config, relation: str, searches: tuple) -> dict:
    """Several searches of one relation, ((seed, resample), ...), in one batched pass
    (entrainment.stages.discover.many_searches); each writes the shard files discover_shard writes. Returns one
    manifest of every output, with each search's own manifest under `searches` (its seconds: the pass's share)."""
    t0 = time.perf_counter()
    loaded, rows, mean = _search_inputs(cfg, relation)
    work = stage_key("discover", __name__, cfg, _inputs_pass(cfg, relation, searches))[:16]
    logger = get_run_logger()
    logger.info("mask searches in one pass: %s / %s, (seed, resample) %s", loaded.info.spec, relation, list(searches))

    def on_epoch(i: int, r: dict) -> None:
        seed, resample = searches[i]
        logger.info(
            "s%d r%d epoch %d: loss %.3f, dev delta %.2f, removed %d",
            seed,
            resample,
            r["epoch"],
            r["loss"],
            r["dev_delta"],
            r["n_removed"],
        )

    ckpt = cfg.out / SHARDS / ".ckpt" / f"{work}.pt"
    found = discover.many_searches(loaded, rows, relation, list(searches), cfg, mean, ckpt, on_epoch)
    share = (time.perf_counter() - t0) / len(found)
    each = [_shard(cfg, loaded.info.spec, relation, s, share) for s in found]
    ckpt.unlink(missing_ok=True)
    return {"outputs": {p: h for m in each for p, h in m["outputs"].items()}, "searches": each}


def _inputs_fold(cfg: Config, relation: str, fold: int) -> dict:
    return {
        "model": model_key(cfg),
        "relation": relation,
        "fold": fold,
        "rows": rows_hash(relation_rows(cfg.out, relation)),
    }


@task(name="crossfit-search", tags=["gpu"], cache_key_fn=key_fn("discover", __name__, _inputs_fold))
def crossfit_shard(cfg: Config, relation: str, fold: int) -> dict:
    """One fold's search of the cross-fitted verdict (entrainment.stages.crossfit.fold_search): trained and selected
    on the other folds' subjects only."""
    t0 = time.perf_counter()
    loaded = loading.load(cfg.model, cfg.device, cfg.dtype)
    rows = relation_rows(cfg.out, relation)
    mean = reference(cfg, loaded, relation) if cfg.ablation_method != "zero" else None
    work = stage_key("discover", __name__, cfg, _inputs_fold(cfg, relation, fold))[:16]
    get_run_logger().info("cross-fitting: %s / %s, fold %d of %d", loaded.info.spec, relation, fold, cfg.crossfit_folds)
    ckpt = cfg.out / SHARDS / ".ckpt" / f"{work}.pt"
    s = crossfit.fold_search(loaded, rows, relation, fold, cfg, mean, ckpt)
    folder, stem = cfg.out / SHARDS / shard_name(loaded.info.spec), f"{shard_name(relation)}.fold{fold}"
    paths = [tables.write_parquet(s.heads, folder / f"{stem}.heads.parquet", HEADS)]
    ckpt.unlink(missing_ok=True)
    return manifest(paths, **s.facts, seconds=time.perf_counter() - t0)


def _search(m: dict) -> discover.Search:
    read = {p.rsplit(".", 2)[-2]: tables.read_parquet(Path(p)) for p in m["outputs"]}
    return discover.Search(read["log"], read["masks"], read["heads"], m)


def combine(cfg: Config, shard_manifests: list[dict]) -> dict:
    """Every discovery table from this run's shards (entrainment.stages.discover.tables); the cross-fitting folds' masks
    (manifests with a `fold`) are added to heads.parquet."""
    folds = [m for m in shard_manifests if m.get("fold") is not None]
    shard_manifests = [m for m in shard_manifests if m.get("fold") is None]
    t = discover.tables([_search(m) for m in shard_manifests], cfg)
    t["heads"] = crossfit.with_fold_heads(
        t["heads"], [tables.read_parquet(Path(p)) for m in folds for p in m["outputs"]]
    )
    timings = pl.concat(
        [
            t["timings"],
            pl.DataFrame(
                [
                    {
                        "model": m["model"],
                        "stage": "search",
                        "relation": m["relation"],
                        "seed": m["seed"],
                        "epoch": -1,
                        "seconds": m["seconds"],
                    }
                    for m in shard_manifests
                ]
            ),
        ]
    )
    paths = [
        tables.write_table(t[name], cfg.out, name)
        for name in ("heads", "discovery", "discovery_masks", "head_overlap", "head_disagreement", "head_stability")
    ]
    paths.append(write_timings(cfg, "discover", timings))
    if len(t["head_overlap"]):
        create_table_artifact(
            key="head-overlap",
            table=t["head_overlap"].to_dicts(),
            description="Jaccard overlap of removed heads across searches",
        )
    return manifest(
        paths,
        summary=discover.summary(shard_manifests, t["head_overlap"], t["head_stability"])
        + discover.disagreement_lines(t["head_disagreement"])
        + crossfit.summary(folds),
    )
