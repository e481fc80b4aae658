"""Tasks: head-importance maps (scan + AtP) per (model, relation), and their agreement with the learned mask."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from prefect import get_run_logger, task

from entrainment import ablate, agreement, discover, heads, models, multimask, scan, scoring, tables, tokens
from entrainment.config import Config
from entrainment.schema import HEAD_AGREEMENT, HEAD_SCORES
from tasks.cache import key_fn, manifest, merge_timings
from tasks.measure import model_key, relation_rows, rows_hash, slug

SHARDS = Path("shards") / "scan"
MODULES = (scan, multimask, discover, scoring, heads, models, tokens, tables, sys.modules[__name__])
AGREE_MODULES = (agreement, multimask, scan, ablate, discover, heads, models, tokens, tables, sys.modules[__name__])


def _items(cfg: Config, relation: str, split: str, tk: tokens.Tokens) -> tuple[list, list[int], list[int]]:
    """(prompts, gold ids, distractor ids) of the split's training-condition items (discover.items_from)."""
    rows = relation_rows(cfg.out, relation).filter((pl.col("split") == split)
                                                   & pl.col("condition").is_in(list(cfg.train_conditions)))
    items = discover.items_from(rows, tk)
    return [i.prompt for i in items], [i.gold for i in items], [i.distractor for i in items]


def _inputs_scan(cfg: Config, relation: str) -> dict:
    return {"model": model_key(cfg), "relation": relation, "rows": rows_hash(relation_rows(cfg.out, relation))}


@task(name="scan", tags=["gpu"], cache_key_fn=key_fn("scan", MODULES, _inputs_scan))
def scan_relation(cfg: Config, relation: str) -> dict:
    logger = get_run_logger()
    loaded = models.load(cfg.model, cfg.device, cfg.dtype)
    prompts, gold, dist = _items(cfg, relation, "dev", tokens.Tokens(loaded.tokenizer, cfg.bos))
    info = loaded.info
    t0 = time.perf_counter()
    bf16 = models.search_bf16(cfg.search_dtype, info.device)
    s = scan.scan_scores(loaded, prompts, gold, dist, bf16=bf16)
    t1 = time.perf_counter()
    a = scan.atp_scores(loaded, prompts, gold, dist, cfg.discover_batch_size, bf16=bf16)
    t2 = time.perf_counter()
    logger.info("head scan of %s / %s: %d heads x %d dev items in %.1f s; AtP in %.1f s", info.spec, relation,
                info.n_total_heads, len(prompts), t1 - t0, t2 - t1)
    rows = []
    for method, scores in (("scan", s), ("atp", a)):
        r = scan.ranks(scores)
        rows += [{"model": info.spec, "relation": relation, "method": method, "layer": layer, "head": head,
                  "score": float(scores[layer, head]), "rank": int(r[layer, head]), "n": len(prompts)}
                 for layer in range(info.n_layers) for head in range(info.n_heads)]
    folder = cfg.out / SHARDS / slug(info.spec)
    timing = pl.DataFrame({"model": [info.spec] * 2, "stage": ["scan", "atp"], "relation": [relation] * 2,
                           "seed": [-1, -1], "epoch": [-1, -1], "seconds": [t1 - t0, t2 - t1]})
    paths = [tables.write_parquet(pl.DataFrame(rows), folder / f"{slug(relation)}.scores.parquet", HEAD_SCORES),
             tables.write_parquet(timing, folder / f"{slug(relation)}.timing.parquet")]
    return manifest(paths, relation=relation)


def learned_mask(cfg: Config, relation: str) -> tuple[int, np.ndarray, heads.HeadSet] | None:
    """(seed, keep-logits [L, H], removed heads) of the first seed's learned mask for the relation, if any."""
    path = cfg.out / "heads.parquet"
    if not path.exists():
        return None
    df = tables.read_table(cfg.out, "heads").filter((pl.col("model") == models.resolve(cfg.model).spec)
                                                    & (pl.col("relation") == relation))
    if df.is_empty():
        return None
    seed = int(df["seed"].min())
    df = df.filter(pl.col("seed") == seed)
    logits = np.zeros((int(df["layer"].max()) + 1, int(df["head"].max()) + 1))
    for r in df.iter_rows(named=True):
        logits[r["layer"], r["head"]] = r["mask_logit"]
    removed = tuple(zip(*[df.filter(pl.col("removed"))[c].to_list() for c in ("layer", "head")]))
    return seed, logits, heads.mask_set(relation, seed, removed)


def _inputs_agree(cfg: Config, relation: str, scores_manifest: dict) -> dict:
    m = learned_mask(cfg, relation)
    return {"model": model_key(cfg), "relation": relation, "rows": rows_hash(relation_rows(cfg.out, relation)),
            "scores": sorted(scores_manifest["outputs"].values()), "mask": m[2].id if m else None,
            "k": cfg.scan_k, "draws": cfg.random_draws, "items": cfg.null_items}


@task(name="agreement", tags=["gpu"], cache_key_fn=key_fn("scan", AGREE_MODULES, _inputs_agree))
def agreement_relation(cfg: Config, relation: str, scores_manifest: dict) -> dict:
    loaded = models.load(cfg.model, cfg.device, cfg.dtype)
    info = loaded.info
    scores = pl.concat([tables.read_parquet(Path(p), HEAD_SCORES) for p in scores_manifest["outputs"]
                        if p.endswith(".scores.parquet")])
    grid = {}
    for method in ("scan", "atp"):
        g = scores.filter(pl.col("method") == method).sort("layer", "head")
        grid[method] = g["score"].to_numpy().reshape(info.n_layers, info.n_heads)
    mask = learned_mask(cfg, relation)
    rankings = dict(grid)
    if mask:
        rankings["mask"] = -mask[1]  # lowest keep-logit = removed first
    prompts, gold, dist = _items(cfg, relation, "test", tokens.Tokens(loaded.tokenizer, cfg.bos))
    sub = ablate.null_subsample(np.arange(len(prompts)), cfg.null_items, f"kcurve|{cfg.seed}|{relation}")
    curves = agreement.k_curves(loaded, [prompts[i] for i in sub], [gold[i] for i in sub], [dist[i] for i in sub],
                                rankings, cfg.scan_k, cfg.random_draws, cfg.seed, max(cfg.batch_size, 64),
                                models.search_bf16(cfg.search_dtype, info.device))
    summ = agreement.summary(grid["scan"], grid["atp"], mask[2].heads if mask else ())
    rows = [{"model": info.spec, "relation": relation, "mask_seed": mask[0] if mask else -1} | r | summ for r in curves]
    get_run_logger().info("agreement on %s: Spearman(atp, scan) = %.2f; learned heads' scan ranks %s",
                          relation, summ["spearman_atp_scan"], summ["mask_ranks"] or "(no learned heads)")
    path = tables.write_parquet(pl.DataFrame(rows), cfg.out / SHARDS / slug(info.spec) / f"{slug(relation)}.agreement.parquet",
                                HEAD_AGREEMENT)
    return manifest([path], relation=relation)


def combine(cfg: Config, score_manifests: list[dict], agree_manifests: list[dict]) -> dict:
    """head_scores.parquet and head_agreement.parquet from this run's shards (+ their timings)."""
    files = [Path(p) for m in score_manifests + agree_manifests for p in m["outputs"]]
    pick = lambda suffix: pl.concat([tables.read_parquet(p) for p in files if p.name.endswith(suffix)])  # noqa: E731
    scores = pick(".scores.parquet").sort("model", "relation", "method", "layer", "head")
    agree = pick(".agreement.parquet").sort("model", "relation", "method", "k")
    paths = [tables.write_table(scores, cfg.out, "head_scores"), tables.write_table(agree, cfg.out, "head_agreement"),
             merge_timings(cfg, pick(".timing.parquet"), ("scan", "atp"))]
    summary = []
    multi = agree["model"].n_unique() > 1
    for (model, relation), g in sorted(agree.group_by("model", "relation"), key=lambda kv: kv[0]):
        r = g.row(0, named=True)
        k = max(1, r["mask_heads"])
        at = {m: g.filter((pl.col("method") == m) & (pl.col("k") == k)) for m in ("scan", "atp", "mask", "random")}
        gains = ", ".join(f"{m} {at[m]['gain'][0]:+.2f}" for m in at if len(at[m]))
        summary.append(f"{ablate.model_prefix(model, multi)}{relation}: Spearman(atp, scan) {r['spearman_atp_scan']:.2f}; learned heads' scan ranks "
                       f"[{r['mask_ranks']}]; test gain at k = {k}: {gains}")
    return manifest(paths, summary=summary)
