"""Head-importance maps: the exhaustive single-head scan and attribution patching (AtP).

Both score every attention head (layer, head) by the effect of zero-ablating it alone on the mean
Δ = ℓ(gold) − ℓ(distractor) (first-token logits at the last real token, with context) over a set of items;
positive = removing the head raises Δ (an entrainment head). Rank 1 = highest score.

- ``scan_scores``: exact. Every single-head mask through ``multimask.probe_logits``: masks on the batch
  dimension of the head scale, and since zeroing a head in layer l changes nothing below l, the layers below
  l replay outputs recorded in one intact pass instead of computing. That skips about half of the work of a
  naive scan and needs no per-architecture code.
- ``atp_scores``: first order. One forward and one backward per batch with every head scale at 1 gives
  ∂Δ/∂scale; the estimated effect of scale 1 → 0 is −∂Δ/∂scale. Known failure modes (Kramár et al., AtP*,
  arXiv 2403.00745): attention saturation (a softmax far from linear) and cancellation between paths;
  exact for a model that is linear in the head scale.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from entrainment.heads import scaled_heads
from entrainment.models import Loaded
from entrainment.multimask import probe_logits, single_head_masks
from entrainment.scoring import collate, forward_last, model_device


def _deltas(logits: torch.Tensor, gold: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, gold[:, None])[:, 0] - logits.gather(1, dist[:, None])[:, 0]


def scan_scores(loaded: Loaded, prompts: Sequence[Sequence[int]], gold: Sequence[int], dist: Sequence[int],
                batch_size: int = 64, progress: Callable[[int], None] | None = None, bf16: bool = False) -> np.ndarray:
    """[L, H] mean over items of Δ(head zeroed) − Δ(intact): every single-head mask in batched multi-mask passes
    that replay the layers below the zeroed head (multimask.probe_logits); `bf16`: under bfloat16 autocast."""
    n_layers, n_heads = loaded.info.n_layers, loaded.info.n_heads
    masks = torch.cat([torch.ones(1, n_layers, n_heads), single_head_masks(n_layers, n_heads)])
    logits = probe_logits(loaded, prompts, list(zip(gold, dist)), masks, batch_size, progress=progress, bf16=bf16)
    delta = logits[..., 0] - logits[..., 1]                # [1 + L*H, N]
    return (delta[1:] - delta[0]).mean(axis=1).reshape(n_layers, n_heads)


def naive_scan_scores(loaded: Loaded, prompts: Sequence[Sequence[int]], gold: Sequence[int], dist: Sequence[int],
                      batch_size: int = 32) -> np.ndarray:
    """The reference: one full forward over all items per head, one head at a time (benchmarks, tests)."""
    from entrainment.ablate import run_pass

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


def atp_scores(loaded: Loaded, prompts: Sequence[Sequence[int]], gold: Sequence[int], dist: Sequence[int],
               batch_size: int = 16, bf16: bool = False) -> np.ndarray:
    """[L, H] attribution-patching estimate of the same quantity: −∂ mean Δ / ∂ scale at scale = 1."""
    info, model = loaded.info, loaded.model
    device = model_device(model)
    scale = torch.ones(info.n_layers, info.n_heads, device=device, requires_grad=True)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    with torch.enable_grad():
        for lo in range(0, len(order), batch_size):
            idx = order[lo:lo + batch_size]
            ids, attn = collate([prompts[i] for i in idx], loaded.tokenizer.pad_token_id, device)
            g = torch.tensor([gold[i] for i in idx], device=device)
            d = torch.tensor([dist[i] for i in idx], device=device)
            with scaled_heads(model, scale), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                lg = forward_last(model, ids, attn, 1)[:, -1].float()
            (_deltas(lg, g, d).sum() / len(prompts)).backward()
    return -scale.grad.detach().cpu().numpy().astype(np.float64)


def ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of every head (1 = highest score; ties broken by (layer, head) order)."""
    flat = scores.ravel()
    order = np.lexsort((np.arange(flat.size), -flat))
    out = np.empty(flat.size, dtype=np.int64)
    out[order] = np.arange(1, flat.size + 1)
    return out.reshape(scores.shape)
