"""Task: one mask search per (model, relation, seed), cached on the relation's prompts, model, params, code."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from entrainment import ablate, discover, heads, models, scoring, tables, tokens
from entrainment.config import Config
from entrainment.schema import DISCOVERY_MASKS, HEADS, HEAD_OVERLAP
from tasks.cache import key_fn, manifest, merge_timings, stage_key
from tasks.measure import model_key, relation_rows, rows_hash, slug

SHARDS = Path("shards") / "discovery"
MODULES = (discover, scoring, heads, models, tokens, tables, sys.modules[__name__])


def source_relations(cfg: Config, relation: str) -> str | tuple[str, ...]:
    """The relation(s) whose items train a mask: itself, or every discovery relation for the shared mask."""
    return cfg.discover_relations if relation == discover.SHARED else relation


def _inputs(cfg: Config, relation: str, seed: int) -> dict:
    return {"model": model_key(cfg), "relation": relation, "seed": seed,
            "rows": rows_hash(relation_rows(cfg.out, source_relations(cfg, relation)))}


def params(cfg: Config, seed: int) -> discover.SearchParams:
    return discover.SearchParams(epochs=cfg.epochs, batch_size=cfg.discover_batch_size, lr=cfg.lr, lam=cfg.lam,
                                 tau=cfg.tau, weight_decay=cfg.weight_decay, init=cfg.init, seed=seed,
                                 bf16=models.search_bf16(cfg.search_dtype, models.pick_device(cfg.device)))


@task(name="discover", tags=["gpu"], cache_key_fn=key_fn("discover", MODULES, _inputs))
def discover_shard(cfg: Config, relation: str, seed: int) -> dict:
    logger = get_run_logger()
    loaded = models.load(cfg.model, cfg.device, cfg.dtype)
    rows = relation_rows(cfg.out, source_relations(cfg, relation)).filter(
        pl.col("condition").is_in(list(cfg.train_conditions)))
    tk = tokens.Tokens(loaded.tokenizer, cfg.bos)
    train = discover.items_from(rows.filter(pl.col("split") == "train"), tk)
    dev = discover.items_from(rows.filter(pl.col("split") == "dev"), tk)
    p = params(cfg, seed)
    work = stage_key("discover", MODULES, cfg, _inputs(cfg, relation, seed))[:16]
    ckpt = cfg.out / SHARDS / ".ckpt" / f"{work}.pt"
    logger.info("mask search: %s / %s, seed %d, %d train + %d dev items, %d heads, %d epochs",
                loaded.info.spec, relation, seed, len(train), len(dev), loaded.info.n_total_heads, p.epochs)
    with Progress(TextColumn(f"discover {relation} s{seed}"), BarColumn(), TextColumn("epoch {task.completed}/{task.total}"),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()) as bar:
        tid = bar.add_task("", total=p.epochs, status="")

        def on_epoch(r: dict) -> None:
            status = f"loss {r['loss']:.3f}  dev delta {r['dev_delta']:.2f}  removed {r['n_removed']}"
            bar.update(tid, completed=r["epoch"], status=status)
            logger.info("epoch %d: %s (%.1f s)", r["epoch"], status, r["seconds"])

        log_rows, history = discover.search(loaded, train, dev, p, ckpt, on_epoch)
    chosen = discover.select_epoch(log_rows)
    spec = loaded.info.spec
    log_df = pl.DataFrame([dict(r, model=spec, relation=relation, seed=seed, selected=r["epoch"] == chosen) for r in log_rows])
    masks = pl.DataFrame([{"model": spec, "relation": relation, "seed": seed, "epoch": e, "layer": l, "head": h,
                           "mask_logit": float(m[l, h]), "removed": bool(m[l, h] <= 0)}
                          for e, m in enumerate(history) for l in range(m.shape[0]) for h in range(m.shape[1])])
    sel = masks.filter(pl.col("epoch") == chosen).drop("epoch")
    folder, stem = cfg.out / SHARDS / slug(spec), f"{slug(relation)}.seed{seed}"
    paths = [tables.write_parquet(log_df, folder / f"{stem}.log.parquet"),  # with `seconds` (split off in combine)
             tables.write_parquet(masks, folder / f"{stem}.masks.parquet", DISCOVERY_MASKS),
             tables.write_parquet(sel, folder / f"{stem}.heads.parquet", HEADS)]
    ckpt.unlink(missing_ok=True)
    r0, rs = log_rows[0], log_rows[chosen]
    logger.info("selected epoch %d: %d heads removed, dev delta %.2f -> %.2f", chosen, rs["n_removed"],
                r0["dev_delta"], rs["dev_delta"])
    return manifest(paths, model=spec, relation=relation, seed=seed, epoch=chosen, n_removed=rs["n_removed"],
                    dev_delta_start=r0["dev_delta"], dev_delta=rs["dev_delta"])


def overlap(sel: pl.DataFrame) -> pl.DataFrame:
    """Pairwise Jaccard overlap of removed-head sets between seeds, per (model, relation)."""
    rows = []
    for (model, relation), g in sorted(sel.group_by("model", "relation"), key=lambda kv: kv[0]):
        sets = {s: set(zip(x["layer"], x["head"])) for (s,), x in g.filter(pl.col("removed")).group_by("seed")}
        for s in g["seed"].unique():
            sets.setdefault(s, set())
        for a, b in itertools.combinations(sorted(sets), 2):
            rows.append({"model": model, "relation": relation, "seed_a": a, "seed_b": b, "n_removed_a": len(sets[a]),
                         "n_removed_b": len(sets[b]), "n_shared": len(sets[a] & sets[b]),
                         "jaccard": discover.jaccard(sets[a], sets[b])})
    return pl.DataFrame(rows, schema=HEAD_OVERLAP.polars_schema())


def combine(cfg: Config, shard_manifests: list[dict]) -> dict:
    """heads.parquet, discovery.parquet, discovery_masks.parquet, head_overlap.parquet from this run's shards."""
    files = [Path(p) for m in shard_manifests for p in m["outputs"]]
    pick = lambda suffix: pl.concat([tables.read_parquet(p) for p in files if p.name.endswith(suffix)])  # noqa: E731
    sel = pick(".heads.parquet").sort("model", "relation", "seed", "layer", "head")
    ov = overlap(sel)
    log_df = pick(".log.parquet").sort("model", "relation", "seed", "epoch")
    timings = log_df.select("model", pl.lit("discover").alias("stage"), "relation", "seed", "epoch", "seconds")
    paths = [tables.write_table(sel, cfg.out, "heads"),
             tables.write_table(log_df.drop("seconds"), cfg.out, "discovery"),
             tables.write_table(pick(".masks.parquet").sort("model", "relation", "seed", "epoch", "layer", "head"),
                                cfg.out, "discovery_masks"),
             tables.write_table(ov, cfg.out, "head_overlap"),
             merge_timings(cfg, timings, ("discover",))]
    multi = sel["model"].n_unique() > 1
    summary = [f"{ablate.model_prefix(m.get('model', ''), multi)}{m['relation']} seed {m['seed']}: epoch {m['epoch']} removes {m['n_removed']} heads, "
               f"dev delta {m['dev_delta_start']:.2f} -> {m['dev_delta']:.2f}"
               + ("  (no head found: try more --epochs, a lower --lambda or a lower --init)" if m["n_removed"] == 0 else "")
               for m in shard_manifests]
    if len(ov):
        summary += [f"{ablate.model_prefix(r['model'], multi)}{r['relation']} seeds {r['seed_a']}/{r['seed_b']}: Jaccard {r['jaccard']:.2f} "
                    f"({r['n_shared']} shared of {r['n_removed_a']} and {r['n_removed_b']})" for r in ov.iter_rows(named=True)]
        create_table_artifact(key="head-overlap", table=ov.to_dicts(), description="Jaccard overlap of removed heads across seeds")
    return manifest(paths, summary=summary)
