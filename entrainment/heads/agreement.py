"""How well the three views of head importance agree: single-head scan, AtP and the learned mask.

For one (model, relation):
- Spearman correlation between the AtP and scan scores over all heads;
- where the learned mask's removed heads rank in the scan (median rank, and how many are in the scan's top-k
  for k = the mask's size);
- a faithfulness-style k-curve on test items: Δ after removing the top-k heads under each ranking (scan, atp,
  the learned mask's logits, ascending) for k = 1..K, beside the mean over random k-head sets.
All k-curve masks run as batched multi-mask passes (entrainment.model.multimask) on the same items, under any ablation
method. Each point carries the per-item paired gain's 95% CI and p, and the **faithfulness** of the ranking in the
spirit of MIB (arXiv 2504.13151), adapted to removing heads: the share of the entrainment gap closed,
f(k) = (Δ_k − Δ_ctx) / (Δ_noctx − Δ_ctx) (Δ_ctx: intact with context, Δ_noctx: intact without context, same items),
capped at 1 (the excess is ``overshoot``: pushing Δ past the no-context margin is not more faithfulness),
and its normalised area over k = 0..K (trapezoid rule / K). f is NaN when |Δ_noctx − Δ_ctx| < GAP_MIN logits: the
context barely moves Δ, so there is no gap to close.

``method_rows``: do the scan's verdicts survive a change of ablation method? Spearman between the methods' scans
and the Jaccard of their top-5 heads.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import stats as sps

from entrainment.heads.random_heads import random_sets
from entrainment.model.hooks import ZERO, Ablation
from entrainment.model.loading import Loaded
from entrainment.model.multimask import head_masks, probe_logits
from entrainment.statistics.null import paired_gain
from entrainment.statistics.verdict import subject_means, subject_t

GAP_MIN = 0.25  # logits: below this |Δ_noctx − Δ_ctx| the gap_closed ratio is not computed


def top_k(scores: np.ndarray, k: int) -> tuple[tuple[int, int], ...]:
    """The k heads with the highest scores (ties by (layer, head))."""
    flat = scores.ravel()
    order = np.lexsort((np.arange(flat.size), -flat))[:k]
    n_heads = scores.shape[1]
    return tuple(sorted((int(i) // n_heads, int(i) % n_heads) for i in order))


def capped(f: float) -> dict[str, float]:
    """gap_closed capped at 1 and the overshoot beyond it: removing heads can push Δ past the no-context margin,
    which is not more faithfulness (NaN stays NaN in both)."""
    if not np.isfinite(f):
        return {"gap_closed": f, "overshoot": f}
    return {"gap_closed": min(f, 1.0), "overshoot": max(0.0, f - 1.0)}


def _by_subject(gains: np.ndarray, subjects: list | None, k: int) -> dict[str, float]:
    """The subject-level gain columns of one k-curve point: per-subject means of the per-item gains, their mean and
    t CI over subjects (verdict.subject_t)."""
    if subjects is None:
        nan = float("nan")
        return {"n_subjects": 0, "subject_gain": nan, "subject_gain_ci_low": nan, "subject_gain_ci_high": nan,
                "subject_gain_p": nan}  # fmt: skip
    means = subject_means(subjects, gains)
    t = subject_t(means) if k else {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p": float("nan")}
    return {
        "n_subjects": len(means),
        "subject_gain": t["mean"],
        "subject_gain_ci_low": t["ci_low"],
        "subject_gain_ci_high": t["ci_high"],
        "subject_gain_p": t["p"],
    }


def k_curves(
    loaded: Loaded,
    prompts: list,
    gold: list[int],
    dist: list[int],
    rankings: dict[str, np.ndarray],
    max_k: int,
    random_draws: int,
    seed: int,
    batch_size: int = 64,
    bf16: bool = False,
    ablation: Ablation = ZERO,
    base_prompts: list | None = None,
    subjects: list | None = None,
) -> list[dict]:
    """Rows (method, k, n, delta, gain, gain CI and p, delta_context, delta_no_context, gap_closed, gap_closed_area)
    with k = 0 (intact) .. max_k; `rankings` maps method -> [L, H] scores (higher = removed first); method `random`
    is the mean over `random_draws` random k-sets (per item). k stops at the model's head count. `base_prompts`:
    the same items without context (for Δ_noctx; without them gap_closed is NaN). `subjects`: each item's query
    subject, for the subject-level gain and its t CI over subjects (without them those columns are NaN)."""
    info = loaded.info
    max_k = min(max_k, info.n_total_heads)
    sets: list[tuple[str, int, tuple]] = [("intact", 0, ())]
    for method, scores in rankings.items():
        sets += [(method, k, top_k(scores, k)) for k in range(1, max_k + 1)]
    for k in range(1, max_k + 1):
        sets += [
            ("random", k, s.heads)
            for s in random_sets(k, info.n_layers, info.n_heads, random_draws, seed, key=f"kcurve|{seed}|{k}")
        ]
    logits = probe_logits(
        loaded,
        prompts,
        list(zip(gold, dist)),
        head_masks([s for _, _, s in sets], info.n_layers, info.n_heads),
        batch_size,
        bf16=bf16,
        ablation=ablation,
    )
    delta = logits[..., 0] - logits[..., 1]  # [masks, items]
    base = delta[0]
    d_ctx = float(base.mean())
    d_noctx = float("nan")
    if base_prompts is not None:
        nc = probe_logits(
            loaded,
            base_prompts,
            list(zip(gold, dist)),
            head_masks([()], info.n_layers, info.n_heads),
            batch_size,
            bf16=bf16,
        )
        d_noctx = float((nc[0, :, 0] - nc[0, :, 1]).mean())
    gap = d_noctx - d_ctx
    closed = (lambda d: (d - d_ctx) / gap) if abs(gap) >= GAP_MIN else (lambda d: float("nan"))
    acc: dict[tuple[str, int], list[np.ndarray]] = {}
    for (method, k, _), d in zip(sets, delta):
        acc.setdefault((method, k), []).append(d)
    rows = []
    for m in [*rankings, "random"]:
        acc[(m, 0)] = [base]
    for (m, k), per in acc.items():
        if m == "intact":
            continue
        item = np.mean(per, axis=0)  # per-item Δ (random: mean over the draws)
        g = (
            paired_gain(item, base)
            if k
            else {"gain": 0.0, "gain_ci_low": 0.0, "gain_ci_high": 0.0, "gain_p": float("nan")}
        )
        g |= _by_subject(item - base, subjects, k)
        rows.append(
            {
                "method": m,
                "k": k,
                "n": len(prompts),
                "delta": float(item.mean()),
                **g,
                "delta_context": d_ctx,
                "delta_no_context": d_noctx,
                **capped(closed(float(item.mean()))),
            }
        )
    rows.sort(key=lambda r: (r["method"], r["k"]))
    for m in {r["method"] for r in rows}:
        curve = [r for r in rows if r["method"] == m]
        f = np.array([r["gap_closed"] for r in curve])
        area = float(np.trapezoid(f, [r["k"] for r in curve]) / max_k) if np.isfinite(f).all() else float("nan")
        for r in curve:
            r["gap_closed_area"] = area
    return rows


def method_rows(scans: dict[str, np.ndarray]) -> list[dict]:
    """Per pair of ablation methods: Spearman of their scans over all heads, their top-5 heads, Jaccard of those."""
    out = []
    names = lambda hs: ",".join(f"{a}.{b}" for a, b in hs)  # noqa: E731
    for a, b in itertools.combinations(scans, 2):
        rho, p = sps.spearmanr(scans[a].ravel(), scans[b].ravel())
        ta, tb = top_k_ranked(scans[a], 5), top_k_ranked(scans[b], 5)
        out.append(
            {
                "method_a": a,
                "method_b": b,
                "spearman": float(rho),
                "spearman_p": float(p),
                "top5_a": names(ta),
                "top5_b": names(tb),
                "jaccard_top5": len(set(ta) & set(tb)) / len(set(ta) | set(tb)),
            }
        )
    return out


def top_k_ranked(scores: np.ndarray, k: int) -> list[tuple[int, int]]:
    """The k highest-scoring heads in rank order (ties by (layer, head))."""
    flat = scores.ravel()
    order = np.lexsort((np.arange(flat.size), -flat))[:k]
    return [(int(i) // scores.shape[1], int(i) % scores.shape[1]) for i in order]


def summary(scan: np.ndarray, atp: np.ndarray, mask_heads: tuple[tuple[int, int], ...]) -> dict:
    """Spearman(atp, scan) and the learned heads' ranks in the scan."""
    from entrainment.heads.maps import ranks

    rho, p = sps.spearmanr(atp.ravel(), scan.ravel())
    r = ranks(scan)
    mask_ranks = sorted(int(r[layer, head]) for layer, head in mask_heads)
    k = len(mask_heads)
    return {
        "spearman_atp_scan": float(rho),
        "spearman_p": float(p),
        "mask_heads": k,
        "mask_rank_median": float(np.median(mask_ranks)) if mask_ranks else float("nan"),
        "mask_ranks": ",".join(map(str, mask_ranks)),
        "mask_in_scan_top_k": sum(x <= k for x in mask_ranks),
    }
