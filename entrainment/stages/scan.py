"""The scan stage as library functions: head-importance tables per (relation, ablation method), their agreement with
the learned mask, and the agreement between methods.

``score_heads`` -> head_scores rows (+ the per-item effects the bootstrap CIs come from); ``agreement_rows`` ->
head_agreement rows (k-curves with CIs, faithfulness); ``method_table`` -> method_agreement rows. The Prefect tasks
(tasks/scan.py) and the Python API call the same functions.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import polars as pl

from entrainment.ablation import donors
from entrainment.config import Config
from entrainment.heads import agreement, maps, masks
from entrainment.heads.random_heads import null_subsample
from entrainment.model import loading, tokens
from entrainment.model.loading import Loaded, model_prefix
from entrainment.model.tokens import Tokens
from entrainment.store.schema import HEAD_AGREEMENT, HEAD_SCORES, METHOD_AGREEMENT

log = logging.getLogger(__name__)


def jobs(cfg: Config, relations: list[str]) -> list[tuple[str, str]]:
    """The scan stage's fan-out: (relation, ablation method) for each scanned relation and compared method.

    Args:
        cfg: the run's Config (compare_methods, ablation_method).
        relations: the relations scanned (the discovery relations).
    Returns:
        The jobs, relation-major.
    """
    return [(rel, method) for rel in relations for method in cfg.methods()]


def items(rows: pl.DataFrame, split: str, cfg: Config, tk: Tokens) -> list[tuple[tokens.Item, dict]]:
    """The split's training-condition items of these prompt rows, with their rows (search.items_with_rows)."""
    rows = rows.filter((pl.col("split") == split) & pl.col("condition").is_in(list(cfg.train_conditions)))
    return tokens.items_with_rows(rows, tk)


def ablation(cfg: Config, method: str, mean, relation: str, pairs: list[tuple[tokens.Item, dict]]):
    """The Ablation of a method over these items (donors within relation and condition)."""
    return donors.ablation_for(
        method,
        mean,
        [it.prompt for it, _ in pairs],
        [(r["relation"], r["condition"]) for _, r in pairs],
        f"donors|{cfg.seed}|{relation}",
    )


def score_heads(
    loaded: Loaded,
    rows: pl.DataFrame,
    relation: str,
    method: str,
    cfg: Config,
    mean=None,
    progress: Callable[[float], None] | None = None,
) -> tuple[pl.DataFrame, np.ndarray, dict]:
    """head_scores rows of one relation under one ablation method: the exhaustive scan (with bootstrap CIs and rank
    intervals over the dev items) and AtP.

    Args:
        loaded: the model.
        rows: the relation's prompt rows.
        relation: its name.
        method: zero | mean | resample.
        cfg: scan_items, seed, bos, train_conditions, search_dtype, discover_batch_size.
        mean: reference means [L, H, D] (mean, resample).
        progress: called with the fraction of the scan's items just finished (the scan is most of the time).
    Returns:
        (head_scores rows, per-item effects [L*H, N], seconds of the scan and of AtP).
    """
    import time

    tk = Tokens(loaded.tokenizer, cfg.bos)
    pairs = items(rows, "dev", cfg, tk)
    if cfg.scan_items:
        keep = null_subsample(np.arange(len(pairs)), cfg.scan_items, f"scan|{cfg.seed}|{relation}")
        pairs = [pairs[i] for i in keep]
    prompts, gold, dist = (
        [it.prompt for it, _ in pairs],
        [it.gold for it, _ in pairs],
        [it.distractor for it, _ in pairs],
    )
    info = loaded.info
    how = ablation(cfg, method, mean, relation, pairs)
    bf16 = loading.search_bf16(cfg.search_dtype, info.device)
    t0 = time.perf_counter()
    done = (lambda c: progress(c / max(len(prompts), 1))) if progress else None
    effects = maps.scan_effects(loaded, prompts, gold, dist, progress=done, bf16=bf16, ablation=how)  # [L*H, N]
    t1 = time.perf_counter()
    a = maps.atp_scores(loaded, prompts, gold, dist, cfg.discover_batch_size, bf16=bf16, ablation=how)
    t2 = time.perf_counter()
    s = effects.mean(axis=1).reshape(info.n_layers, info.n_heads)
    boot = maps.bootstrap_ranks(effects, seed=cfg.seed)  # prompt-level
    subjects = np.array([str(r["subject"]) for _, r in pairs])
    n_subjects = len(set(subjects))
    nan = np.full(info.n_layers * info.n_heads, float("nan"))
    by_subject = (
        maps.bootstrap_ranks(effects, seed=cfg.seed, groups=subjects)
        if n_subjects >= 2
        else {"score_ci_low": nan, "score_ci_high": nan}
    )
    out = []
    for name, scores in (("scan", s), ("atp", a)):
        r = maps.ranks(scores)
        for layer in range(info.n_layers):
            for head in range(info.n_heads):
                i = layer * info.n_heads + head
                ci = (
                    {k: boot[k][i] for k in boot}
                    | {
                        "subject_ci_low": by_subject["score_ci_low"][i],
                        "subject_ci_high": by_subject["score_ci_high"][i],
                    }
                    if name == "scan"
                    else {
                        "score_ci_low": float("nan"),
                        "score_ci_high": float("nan"),
                        "rank_low": -1,
                        "rank_high": -1,
                        "subject_ci_low": float("nan"),
                        "subject_ci_high": float("nan"),
                    }
                )
                out.append(
                    {
                        "model": info.spec,
                        "relation": relation,
                        "ablation_method": method,
                        "method": name,
                        "layer": layer,
                        "head": head,
                        "score": float(scores[layer, head]),
                        "rank": int(r[layer, head]),
                        "n": len(prompts),
                        "n_subjects": n_subjects,
                    }
                    | ci
                )
    return pl.DataFrame(out, schema=HEAD_SCORES.polars_schema()), effects, {"scan": t1 - t0, "atp": t2 - t1}


def learned_mask(heads: pl.DataFrame | None, model: str, relation: str) -> masks.LearnedMask | None:
    """The first seed's learned mask of the relation (the stable set is not a ranking), if any."""
    if heads is None or heads.is_empty():
        return None
    found = [
        m
        for m in masks.learned_masks(heads)
        if m.model == model and m.relation == relation and m.seed >= 0 and m.fold is None
    ]
    return found[0] if found else None


def agreement_rows(
    loaded: Loaded,
    rows: pl.DataFrame,
    relation: str,
    method: str,
    scores: pl.DataFrame,
    heads: pl.DataFrame | None,
    cfg: Config,
    mean=None,
) -> pl.DataFrame:
    """head_agreement rows of one relation and method: k-curves on the test subsample for scan, AtP, the learned
    mask and random heads, with CIs and the faithfulness f(k), plus the agreement summary."""
    info = loaded.info
    scores = scores.filter((pl.col("relation") == relation) & (pl.col("ablation_method") == method))
    grid = {
        name: scores.filter(pl.col("method") == name)
        .sort("layer", "head")["score"]
        .to_numpy()
        .reshape(info.n_layers, info.n_heads)
        for name in ("scan", "atp")
    }
    mask = learned_mask(heads, info.spec, relation)
    rankings = dict(grid)
    if mask:
        rankings["mask"] = -mask.logits  # lowest keep-logit = removed first
    tk = Tokens(loaded.tokenizer, cfg.bos)
    pairs = items(rows, "test", cfg, tk)
    sub = null_subsample(np.arange(len(pairs)), cfg.null_items, f"kcurve|{cfg.seed}|{relation}")
    pairs = [pairs[i] for i in sub]
    if not pairs:  # own items: a relation may have no test items
        log.info("no test items of %s: no k-curves", relation)
        return pl.DataFrame(schema=HEAD_AGREEMENT.polars_schema())
    curves = agreement.k_curves(
        loaded,
        [it.prompt for it, _ in pairs],
        [it.gold for it, _ in pairs],
        [it.distractor for it, _ in pairs],
        rankings,
        cfg.scan_k,
        cfg.random_draws,
        cfg.seed,
        max(cfg.batch_size, 64),
        loading.search_bf16(cfg.search_dtype, info.device),
        ablation(cfg, method, mean, relation, pairs),
        base_prompts=[tk.prompt(r["text_base"]) for _, r in pairs],
        subjects=[r["subject"] for _, r in pairs],
    )
    summ = agreement.summary(grid["scan"], grid["atp"], mask.head_set.heads if mask else ())
    out = [
        {"model": info.spec, "relation": relation, "ablation_method": method, "mask_seed": mask.seed if mask else -1}
        | r
        | summ
        for r in curves
    ]
    return pl.DataFrame(out, schema=HEAD_AGREEMENT.polars_schema())


def method_table(scores: pl.DataFrame) -> pl.DataFrame:
    """method_agreement rows: per (model, relation), every pair of ablation methods' scans."""
    out = []
    for (model, relation), g in sorted(
        scores.filter(pl.col("method") == "scan").group_by("model", "relation"), key=lambda kv: kv[0]
    ):
        n_l, n_h = int(g["layer"].max()) + 1, int(g["head"].max()) + 1
        scans = {
            m: x.sort("layer", "head")["score"].to_numpy().reshape(n_l, n_h)
            for (m,), x in sorted(g.group_by("ablation_method"), key=lambda kv: kv[0])
        }
        out += [{"model": model, "relation": relation} | r for r in agreement.method_rows(scans)]
    return pl.DataFrame(out, schema=METHOD_AGREEMENT.polars_schema())


def summary(agree: pl.DataFrame, methods: pl.DataFrame) -> list[str]:
    """The lines `scan` and `run` print: per relation and method the agreement and faithfulness; between methods."""
    out = []
    multi = agree["model"].n_unique() > 1
    for (model, relation, method), g in sorted(
        agree.group_by("model", "relation", "ablation_method"), key=lambda kv: kv[0]
    ):
        r = g.row(0, named=True)
        k = max(1, r["mask_heads"])
        at = {m: g.filter((pl.col("method") == m) & (pl.col("k") == k)) for m in ("scan", "atp", "mask", "random")}
        gains = ", ".join(f"{m} {at[m]['gain'][0]:+.2f}" for m in at if len(at[m]))
        areas = ", ".join(
            f"{m} {x['gap_closed_area'][0]:.2f}" for (m,), x in sorted(g.group_by("method"), key=lambda kv: kv[0])
        )
        out.append(
            f"{model_prefix(model, multi)}{relation} [{method}]: Spearman(atp, scan) "
            f"{r['spearman_atp_scan']:.2f}; learned heads' scan ranks [{r['mask_ranks']}]; test gain at k = {k}: "
            f"{gains}; gap closed (area over k = 0..{int(g['k'].max())}): {areas}"
        )
    for r in methods.iter_rows(named=True):
        out.append(
            f"{model_prefix(r['model'], multi)}{r['relation']}: scan {r['method_a']} vs {r['method_b']}: "
            f"Spearman {r['spearman']:.2f}, top-5 Jaccard {r['jaccard_top5']:.2f} "
            f"({r['top5_a']} | {r['top5_b']})"
        )
    return out
