"""Head-importance maps: the exhaustive single-head scan and attribution patching (AtP).

Both score every attention head (layer, head) by the effect of removing it alone (zero, mean or resample
ablation, ``hooks.Ablation``) on the mean
Δ = ℓ(gold) − ℓ(distractor) (first-token logits at the last real token, with context) over a set of items;
positive = removing the head raises Δ (an entrainment head). Rank 1 = highest score.

- ``scan_scores``: exact. Every single-head mask through ``multimask.probe_logits``: masks on the batch
  dimension of the head scale, and since zeroing a head in layer l changes nothing below l, the layers below
  l replay outputs recorded in one intact pass instead of computing. That skips about half of the work of a
  naive scan and needs no per-architecture code.
- ``atp_scores``: first order. One forward and one backward per batch with every head scale at 1 gives
  ∂Δ/∂scale; the estimated effect of scale 1 → 0 is −∂Δ/∂scale. Known failure modes (Kramár et al., AtP*,
  arXiv 2403.00745): attention saturation (a softmax far from linear) and cancellation between paths;
  exact for a model that is linear in the head scale. Under mean/resample the derivative is taken along the
  interpolation z' = s z + (1 - s) r, i.e. along z - r.

The scan keeps its per-item effects ([heads, items]), so a bootstrap over the items gives every score a 95% CI and
every head a rank interval without another forward pass (``bootstrap_ranks``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from entrainment.model.hooks import ZERO, Ablation, donor_rows, intervened, set_batch
from entrainment.model.loading import Loaded
from entrainment.model.multimask import probe_logits, single_head_masks
from entrainment.model.scoring import collate, forward_last, model_device


def _deltas(logits: torch.Tensor, gold: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, gold[:, None])[:, 0] - logits.gather(1, dist[:, None])[:, 0]


def scan_effects(
    loaded: Loaded,
    prompts: Sequence[Sequence[int]],
    gold: Sequence[int],
    dist: Sequence[int],
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    bf16: bool = False,
    ablation: Ablation = ZERO,
) -> np.ndarray:
    """[L * H, N] per-item effect Δ(head removed) − Δ(intact) of every single-head mask, in (layer, head) order:
    batched multi-mask passes that replay the layers below the removed head (multimask.probe_logits)."""
    n_layers, n_heads = loaded.info.n_layers, loaded.info.n_heads
    masks = torch.cat([torch.ones(1, n_layers, n_heads), single_head_masks(n_layers, n_heads)])
    logits = probe_logits(
        loaded, prompts, list(zip(gold, dist)), masks, batch_size, progress=progress, bf16=bf16, ablation=ablation
    )
    delta = logits[..., 0] - logits[..., 1]  # [1 + L*H, N]
    return delta[1:] - delta[0]


def scan_scores(
    loaded: Loaded,
    prompts: Sequence[Sequence[int]],
    gold: Sequence[int],
    dist: Sequence[int],
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    bf16: bool = False,
    ablation: Ablation = ZERO,
) -> np.ndarray:
    """[L, H] mean over items of Δ(head removed) − Δ(intact) (scan_effects averaged); `bf16`: bfloat16 autocast."""
    eff = scan_effects(loaded, prompts, gold, dist, batch_size, progress, bf16, ablation)
    return eff.mean(axis=1).reshape(loaded.info.n_layers, loaded.info.n_heads)


def bootstrap_ranks(
    effects: np.ndarray,
    draws: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Percentile-bootstrap CIs of each head's mean effect and its rank interval, resampling the items, or with
    `groups` the clusters (every item of a drawn cluster comes along: the cluster bootstrap of the item mean).

    Args:
        effects: [heads, items] per-item effects (scan_effects).
        draws: bootstrap resamples (with replacement).
        level: CI level.
        seed: numpy seed of the resamples.
        groups: [items] cluster label of each item (e.g. its query subject), or None = the items.
    Returns:
        score_ci_low, score_ci_high [heads] and rank_low, rank_high [heads] (rank 1 = highest score).
    """
    n_heads, n = effects.shape
    rng = np.random.default_rng(seed)
    if groups is None:
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=draws).T / n  # [items, draws]
    else:
        labels, codes = np.unique(groups, return_inverse=True)  # any labels -> 0 .. G-1
        g = len(labels)
        drawn = rng.multinomial(g, np.full(g, 1.0 / g), size=draws).T  # [clusters, draws] times each was drawn
        weights = drawn[codes].astype(float)  # [items, draws]: an item counts as often as its cluster
        weights /= weights.sum(axis=0, keepdims=True)
    boot = effects @ weights  # [heads, draws] resampled means
    order = np.argsort(-boot, axis=0, kind="stable")
    ranks = np.empty_like(order)
    ranks[order, np.arange(draws)] = np.arange(1, n_heads + 1)[:, None]
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    return {
        "score_ci_low": np.percentile(boot, lo, axis=1),
        "score_ci_high": np.percentile(boot, hi, axis=1),
        "rank_low": np.percentile(ranks, lo, axis=1, method="lower").astype(np.int64),
        "rank_high": np.percentile(ranks, hi, axis=1, method="higher").astype(np.int64),
    }


def naive_scan_scores(
    loaded: Loaded, prompts: Sequence[Sequence[int]], gold: Sequence[int], dist: Sequence[int], batch_size: int = 32
) -> np.ndarray:
    """The reference: one full forward over all items per head, one head at a time (benchmarks, tests)."""
    from entrainment.model.scoring import run_pass

    info = loaded.info
    base = run_pass(loaded, list(prompts), list(gold), list(dist), None, batch_size)
    out = np.zeros((info.n_layers, info.n_heads))
    for layer in range(info.n_layers):
        for head in range(info.n_heads):
            m = torch.ones(info.n_layers, info.n_heads)
            m[layer, head] = 0
            s = run_pass(loaded, list(prompts), list(gold), list(dist), m, batch_size)
            out[layer, head] = float(((s.gold - s.distractor) - (base.gold - base.distractor)).mean())
    return out


def atp_scores(
    loaded: Loaded,
    prompts: Sequence[Sequence[int]],
    gold: Sequence[int],
    dist: Sequence[int],
    batch_size: int = 16,
    bf16: bool = False,
    ablation: Ablation = ZERO,
) -> np.ndarray:
    """[L, H] attribution-patching estimate of the same quantity: −∂ mean Δ / ∂ scale at scale = 1."""
    info, model = loaded.info, loaded.model
    device = model_device(model)
    scale = torch.ones(info.n_layers, info.n_heads, device=device, requires_grad=True)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    with torch.enable_grad(), intervened(model, scale, ablation) as hook:
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            batch = [tuple(prompts[i]) for i in idx]
            extra = donor_rows(ablation, batch)
            ids, attn = collate(batch + extra, loaded.tokenizer.pad_token_id, device)
            hook.scale, hook.donor = scale, None
            if extra:
                set_batch(hook, scale, batch, extra, ablation, attn)
            g = torch.tensor([gold[i] for i in idx], device=device)
            d = torch.tensor([dist[i] for i in idx], device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                lg = forward_last(model, ids, attn, 1)[: len(idx), -1].float()
            (_deltas(lg, g, d).sum() / len(prompts)).backward()
    return -scale.grad.detach().cpu().numpy().astype(np.float64)


def ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of every head (1 = highest score; ties broken by (layer, head) order)."""
    flat = scores.ravel()
    order = np.lexsort((np.arange(flat.size), -flat))
    out = np.empty(flat.size, dtype=np.int64)
    out[order] = np.arange(1, flat.size + 1)
    return out.reshape(scores.shape)
