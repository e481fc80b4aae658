"""How well the three views of head importance agree: single-head scan, AtP and the learned mask.

For one (model, relation):
- Spearman correlation between the AtP and scan scores over all heads;
- where the learned mask's removed heads rank in the scan (median rank, and how many are in the scan's top-k
  for k = the mask's size);
- a faithfulness-style k-curve on test items: Δ after removing the top-k heads under each ranking (scan, atp,
  the learned mask's logits, ascending) for k = 1..K, beside the mean over random k-head sets.
All k-curve masks run as batched multi-mask passes (entrainment.multimask) on the same items.
"""

from __future__ import annotations

import random

import numpy as np
from scipy import stats as sps

from entrainment.models import Loaded
from entrainment.multimask import head_masks, probe_logits


def top_k(scores: np.ndarray, k: int) -> tuple[tuple[int, int], ...]:
    """The k heads with the highest scores (ties by (layer, head))."""
    flat = scores.ravel()
    order = np.lexsort((np.arange(flat.size), -flat))[:k]
    n_heads = scores.shape[1]
    return tuple(sorted((int(i) // n_heads, int(i) % n_heads) for i in order))


def random_k_sets(n_layers: int, n_heads: int, k: int, draws: int, key: str) -> list[tuple[tuple[int, int], ...]]:
    every = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    rng = random.Random(key)
    return [tuple(sorted(rng.sample(every, k))) for _ in range(draws)]


def k_curves(loaded: Loaded, prompts: list, gold: list[int], dist: list[int], rankings: dict[str, np.ndarray],
             max_k: int, random_draws: int, seed: int, batch_size: int = 64, bf16: bool = False) -> list[dict]:
    """Rows (method, k, n, delta, gain) with k = 0 (intact) .. max_k; `rankings` maps method -> [L, H] scores
    (higher = removed first); method `random` is the mean over `random_draws` random k-sets. k stops at the
    model's head count."""
    info = loaded.info
    max_k = min(max_k, info.n_total_heads)
    sets: list[tuple[str, int, tuple]] = [("intact", 0, ())]
    for method, scores in rankings.items():
        sets += [(method, k, top_k(scores, k)) for k in range(1, max_k + 1)]
    for k in range(1, max_k + 1):
        sets += [("random", k, s) for s in random_k_sets(info.n_layers, info.n_heads, k, random_draws, f"kcurve|{seed}|{k}")]
    logits = probe_logits(loaded, prompts, list(zip(gold, dist)), head_masks([s for _, _, s in sets], info.n_layers, info.n_heads),
                          batch_size, bf16=bf16)
    delta = (logits[..., 0] - logits[..., 1]).mean(axis=1)  # [masks]
    base = float(delta[0])
    acc: dict[tuple[str, int], list[float]] = {}
    for (method, k, _), d in zip(sets, delta):
        acc.setdefault((method, k), []).append(float(d))
    rows = [{"method": m, "k": 0, "n": len(prompts), "delta": base, "gain": 0.0} for m in [*rankings, "random"]]
    rows += [{"method": m, "k": k, "n": len(prompts), "delta": float(np.mean(v)), "gain": float(np.mean(v)) - base}
             for (m, k), v in acc.items() if m != "intact"]
    return sorted(rows, key=lambda r: (r["method"], r["k"]))


def summary(scan: np.ndarray, atp: np.ndarray, mask_heads: tuple[tuple[int, int], ...]) -> dict:
    """Spearman(atp, scan) and the learned heads' ranks in the scan."""
    from entrainment.scan import ranks

    rho, p = sps.spearmanr(atp.ravel(), scan.ravel())
    r = ranks(scan)
    mask_ranks = sorted(int(r[layer, head]) for layer, head in mask_heads)
    k = len(mask_heads)
    return {"spearman_atp_scan": float(rho), "spearman_p": float(p), "mask_heads": k,
            "mask_rank_median": float(np.median(mask_ranks)) if mask_ranks else float("nan"),
            "mask_ranks": ",".join(map(str, mask_ranks)),
            "mask_in_scan_top_k": sum(x <= k for x in mask_ranks)}
