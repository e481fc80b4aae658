"""Batched, padding-safe next-token scoring: the one scoring path used by every stage.

A Request is a prompt (token ids) plus an optional continuation (the answer's ids). One forward pass
over ``prompt + continuation[:-1]`` yields, at the **last real prompt token**, the logit, log-prob and
rank of any probe tokens, and the log-prob of the whole continuation. Requests are sorted by length
and left-padded with explicit ``position_ids`` (absolute-position models like GPT-2 need them), and
the LM head runs only on the last ``max(len(continuation))`` positions (``logits_to_keep``).
On CUDA an out-of-memory error halves the batch and retries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    prompt: tuple[int, ...]
    cont: tuple[int, ...] = ()


@dataclass
class Result:
    probe_logit: list[float]
    probe_logprob: list[float]
    probe_rank: list[int]
    seq_logprob: float            # sum of log-probs of the continuation (nan if none)
    dist: torch.Tensor | None     # log-probs [V] at the last prompt token, if asked for


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def forward_last(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int,
                 padding_side: str = "left") -> torch.Tensor:
    """Logits [B, keep, V] of the last `keep` real positions of each row.

    Left padding aligns every row's end, so the LM head runs on `keep` positions only; right padding
    (kept for cross-checks) computes all positions and gathers each row's window.
    """
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                logits_to_keep=keep if padding_side == "left" else 0, use_cache=False)
    if padding_side == "left":
        return out.logits[:, -keep:]
    end = attention_mask.sum(-1)
    pos = (end[:, None] - keep + torch.arange(keep, device=end.device)[None, :]).clamp(min=0)
    return out.logits.gather(1, pos[:, :, None].expand(-1, -1, out.logits.shape[-1]))


def collate(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device,
            padding_side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists into (input_ids, attention_mask)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        where = slice(width - len(s), width) if padding_side == "left" else slice(0, len(s))
        ids[i, where] = torch.tensor(s, dtype=torch.long)
        mask[i, where] = 1
    return ids.to(device), mask.to(device)


def _score_batch(model, reqs: list[Request], probes: list[Sequence[int]], pad_id: int, keep_dist: bool,
                 padding_side: str = "left") -> list[Result]:
    device = model_device(model)
    keep = max(1, max(len(r.cont) for r in reqs))
    ids, mask = collate([r.prompt + r.cont[:-1] for r in reqs], pad_id, device, padding_side)
    logits = forward_last(model, ids, mask, keep, padding_side).float()   # [B, keep, V]
    logp = torch.log_softmax(logits, dim=-1)
    out = []
    for b, r in enumerate(reqs):
        j0 = keep - max(1, len(r.cont))                               # window index of the last prompt token
        lg, lp = logits[b, j0], logp[b, j0]
        pr = torch.tensor(list(probes[b]), dtype=torch.long, device=device)
        p_logit = lg[pr]
        ranks = (lg[None, :] > p_logit[:, None]).sum(-1) + 1
        if r.cont:
            tgt = torch.tensor(r.cont, dtype=torch.long, device=device)
            seq = logp[b, j0:j0 + len(r.cont)].gather(-1, tgt[:, None]).sum().item()
        else:
            seq = float("nan")
        out.append(Result(p_logit.tolist(), lp[pr].tolist(), ranks.tolist(), seq,
                          lp.detach().to("cpu", copy=True) if keep_dist else None))
    return out


def score(model, requests: Sequence[Request], probes: Sequence[Sequence[int]], pad_id: int, batch_size: int = 32,
          keep_dist: bool = False, progress: Callable[[int], None] | None = None,
          padding_side: str = "left") -> list[Result]:
    """Score every request (in the order given); probes[i] are the tokens reported for request i."""
    order = sorted(range(len(requests)), key=lambda i: (len(requests[i].prompt) + len(requests[i].cont), len(requests[i].cont)))
    results: list[Result | None] = [None] * len(requests)
    bs, i = batch_size, 0
    with torch.inference_mode():
        while i < len(order):
            idx = order[i:i + bs]
            try:
                batch = _score_batch(model, [requests[j] for j in idx], [probes[j] for j in idx], pad_id, keep_dist,
                                     padding_side)
            except torch.OutOfMemoryError:
                if bs == 1:
                    raise
                bs = max(1, bs // 2)
                log.warning("out of memory: batch size halved to %d", bs)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            for j, res in zip(idx, batch):
                results[j] = res
            i += len(idx)
            if progress:
                progress(len(idx))
    return results  # type: ignore[return-value]
