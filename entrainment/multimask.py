"""Many head masks in one forward pass: each batch row is (prompt, mask), the mask on the batch dimension.

``probe_logits(loaded, prompts, probes, masks)`` returns the next-token logits of a few probe tokens at the
last real token of every prompt under every mask, as an array ``[n_masks, n_prompts, n_probes]``. Rows are
sorted by prompt length and left-padded (``scoring.collate`` with explicit ``position_ids``), and the
per-row scale goes to ``heads.scaled_heads`` as a ``[batch, n_layers, n_heads]`` tensor, so 100 random-head
draws or all single-head ablations run as a few large batches instead of a Python loop over masks. On CUDA
an out-of-memory error halves the batch.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch

from entrainment.heads import scaled_heads
from entrainment.models import Loaded
from entrainment.scoring import collate, forward_last, model_device

log = logging.getLogger(__name__)


def probe_logits(loaded: Loaded, prompts: Sequence[Sequence[int]], probes: Sequence[Sequence[int]],
                 masks: torch.Tensor, batch_size: int = 64,
                 progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Logits ``[M, N, P]`` of probes[n] after prompts[n] with heads scaled by masks[m] (``[M, L, H]``)."""
    n_masks, n_prompts = masks.shape[0], len(prompts)
    width = len(probes[0]) if n_prompts else 0
    out = np.zeros((n_masks, n_prompts, width), dtype=np.float64)
    if not n_masks or not n_prompts:
        return out
    device = model_device(loaded.model)
    probe_t = torch.tensor([list(p) for p in probes], dtype=torch.long, device=device)
    rows = sorted(((m, n) for m in range(n_masks) for n in range(n_prompts)), key=lambda r: (len(prompts[r[1]]), r[1], r[0]))
    bs, i = batch_size, 0
    with torch.inference_mode():
        while i < len(rows):
            chunk = rows[i:i + bs]
            m_idx = torch.tensor([m for m, _ in chunk])
            n_idx = torch.tensor([n for _, n in chunk], device=device)
            try:
                ids, attn = collate([prompts[n] for _, n in chunk], loaded.tokenizer.pad_token_id, device)
                with scaled_heads(loaded.model, masks[m_idx].to(device)):
                    last = forward_last(loaded.model, ids, attn, 1)[:, -1].float()
            except torch.OutOfMemoryError:
                if bs == 1:
                    raise
                bs = max(1, bs // 2)
                log.warning("out of memory: batch size halved to %d", bs)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            vals = last.gather(1, probe_t[n_idx]).cpu().numpy()
            out[m_idx.numpy(), n_idx.cpu().numpy()] = vals
            i += len(chunk)
            if progress:
                progress(len(chunk))
    return out


def head_masks(sets: Sequence[Sequence[tuple[int, int]]], n_layers: int, n_heads: int) -> torch.Tensor:
    """Keep-masks ``[len(sets), L, H]``: 0 at each set's heads, 1 elsewhere."""
    m = torch.ones(len(sets), n_layers, n_heads)
    for i, heads in enumerate(sets):
        for layer, head in heads:
            m[i, layer, head] = 0.0
    return m
