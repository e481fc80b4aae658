"""Batched, padding-safe next-token scoring: the one scoring path used by every stage.

A Request is a prompt (token ids) plus an optional continuation (the answer's ids). Each distinct
prompt runs once: at its **last real token** we read the logit, log-prob and rank of any probe
tokens and the first answer token's log-prob; the remaining answer tokens run on top of the prompt's
KV cache, so several answers to one prompt never recompute it. Prompts are sorted by length and
left-padded with explicit ``position_ids`` (absolute-position models like GPT-2 need them), and the
LM head runs only on the positions read (``logits_to_keep``). On CUDA an out-of-memory error halves
the batch and retries (``oom.halving``).

Heads can be removed by any method (``hooks.Ablation``): ``keep`` is the keep-mask; for resample each batch
also runs the donors of its prompts, intact, as extra rows whose outputs are discarded (one extra row per
distinct donor), and the continuation tokens of multi-token answers -- positions no donor has -- take the mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from entrainment.model.hooks import ZERO, Ablation, HeadScaler, donor_rows, intervened, set_batch
from entrainment.model.loading import Loaded
from entrainment.model.oom import halving


@dataclass(frozen=True)
class Request:
    prompt: tuple[int, ...]
    cont: tuple[int, ...] = ()


@dataclass
class Result:
    probe_logit: list[float]
    probe_logprob: list[float]
    probe_rank: list[int]
    seq_logprob: float  # sum of log-probs of the continuation (nan if none)
    dist: torch.Tensor | None  # log-probs [V] at the last prompt token, if asked for


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def forward_last(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int) -> torch.Tensor:
    """Logits [B, keep, V] of the last `keep` positions of a left-padded batch (every row ends there)."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        logits_to_keep=keep,
        use_cache=False,
    )
    return out.logits[:, -keep:]


def collate(
    seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device, padding_side: str = "left"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists into (input_ids, attention_mask)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        where = slice(width - len(s), width) if padding_side == "left" else slice(0, len(s))
        ids[i, where] = torch.tensor(s, dtype=torch.long)
        mask[i, where] = 1
    return ids.to(device), mask.to(device)


def _score_batch(
    model,
    prompts: list[tuple[int, ...]],
    groups: list[list[int]],
    requests: Sequence[Request],
    probes: Sequence[Sequence[int]],
    pad_id: int,
    keep_dist: bool,
    padding_side: str = "left",
    hook: HeadScaler | None = None,
    keep: torch.Tensor | None = None,
    ablation: Ablation = ZERO,
) -> dict[int, Result]:
    """Score every request whose prompt is in `prompts` (groups[b] = indices of the requests of prompts[b]).

    Phase 1 runs each distinct prompt once (plus, for resample, the donors) and reads the last real token.
    Phase 2 runs only the continuation tokens of multi-token answers on top of phase 1's KV cache (rows repeated
    per answer), so a prompt shared by several answers is never recomputed.
    """
    device = model_device(model)
    conts = [(b, j) for b, g in enumerate(groups) for j in g if len(requests[j].cont) > 1]
    extra = donor_rows(ablation, list(prompts)) if hook is not None else []
    ids, mask = collate(list(prompts) + extra, pad_id, device, padding_side)
    if extra:
        set_batch(hook, keep, list(prompts), extra, ablation, mask)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    try:
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids,
            logits_to_keep=1 if padding_side == "left" else 0,
            use_cache=bool(conts),
        )
    finally:
        if extra:  # back to the batch-wide mask; phase 2's positions have no donor (the mean)
            hook.scale, hook.donor, hook.donor_ok = keep, None, None
    n = len(prompts)
    if padding_side == "left":
        last = out.logits[:n, -1].float()
    else:
        last = out.logits[torch.arange(n, device=device), mask[:n].sum(-1) - 1].float()
    logp = torch.log_softmax(last, dim=-1)

    tail: dict[int, float] = {}  # log-prob of cont[1:] given the prompt and cont[:-1]
    if conts:
        rows = torch.tensor([b for b, _ in conts], device=device)
        cache = out.past_key_values
        cache.reorder_cache(rows)
        inputs = [requests[j].cont[:-1] for _, j in conts]
        width = max(len(c) for c in inputs)
        cids, cmask = collate(inputs, pad_id, device, "left")
        full = torch.cat([mask[rows], cmask], dim=1)
        pos = (full.cumsum(-1) - 1).clamp(min=0)[:, -width:]
        w0 = ids.shape[1]
        o2 = model(
            input_ids=cids,
            attention_mask=full,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            cache_position=torch.arange(w0, w0 + width, device=device),
            logits_to_keep=width,
        )
        lp2 = torch.log_softmax(o2.logits[:, -width:].float(), dim=-1)
        for r, (_, j) in enumerate(conts):
            cont = requests[j].cont
            tgt = torch.tensor(cont[1:], dtype=torch.long, device=device)
            tail[j] = lp2[r, width - len(tgt) :].gather(-1, tgt[:, None]).sum().item()

    results: dict[int, Result] = {}
    for b, g in enumerate(groups):
        lg, lp = last[b], logp[b]
        dist = lp.detach().to("cpu", copy=True) if keep_dist else None
        for j in g:
            pr = torch.tensor(list(probes[j]), dtype=torch.long, device=device)
            p_logit = lg[pr]
            ranks = (lg[None, :] > p_logit[:, None]).sum(-1) + 1
            cont = requests[j].cont
            seq = lp[cont[0]].item() + tail.get(j, 0.0) if cont else float("nan")
            results[j] = Result(p_logit.tolist(), lp[pr].tolist(), ranks.tolist(), seq, dist)
    return results


def score(
    model,
    requests: Sequence[Request],
    probes: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 32,
    keep_dist: bool = False,
    progress: Callable[[int], None] | None = None,
    padding_side: str = "left",
    keep: torch.Tensor | None = None,
    ablation: Ablation = ZERO,
) -> list[Result]:
    """Score every request (in the order given); probes[i] are the tokens reported for request i.

    Args:
        model: a causal LM.
        requests: prompts (+ continuations).
        probes: the token ids reported for each request.
        pad_id: the padding token id.
        batch_size: distinct prompts per forward pass (halved on out-of-memory).
        keep_dist: also return each prompt's next-token log-probs.
        progress: called with the number of requests finished.
        padding_side: left (default; right only for tests).
        keep: keep-mask [L, H] of the heads (None = intact model).
        ablation: how removed heads are replaced (hooks.Ablation; zero by default).
    Returns:
        One Result per request, in order.
    """
    if keep is not None and ablation.resample and padding_side != "left":
        raise ValueError("resample ablation aligns positions from the end: left padding only")
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(r.prompt, []).append(i)
    order = sorted(groups, key=len)
    results: list[Result | None] = [None] * len(requests)
    bs, i = batch_size, 0
    with torch.inference_mode(), intervened(model, keep, ablation) as hook:
        while i < len(order):

            def attempt(b: int) -> tuple[int, dict[int, Result]]:
                chunk = order[i : i + b]
                return len(chunk), _score_batch(
                    model,
                    chunk,
                    [groups[p] for p in chunk],
                    requests,
                    probes,
                    pad_id,
                    keep_dist,
                    padding_side,
                    hook,
                    keep,
                    ablation,
                )

            (taken, done), bs = halving(bs, attempt)
            for j, res in done.items():
                results[j] = res
            i += taken
            if progress:
                progress(len(done))
    return results  # type: ignore[return-value]


def top_tokens(loaded, row: dict, tokens, k: int = 10) -> dict:
    """The paper's Figure 1 for one prompt row: the top-k next tokens (text, probability) with and without context,
    and p(gold), p(distractor) in both arms. `tokens` (tokens.Tokens) fixes the --bos convention."""
    g, d = tokens.answer(row["text_base"], row["gold"])[0], tokens.answer(row["text_base"], row["distractor"])[0]
    reqs = [Request(tokens.prompt(row["text_base"])), Request(tokens.prompt(row["text_ctx"]))]
    res = score(loaded.model, reqs, [(g, d), (g, d)], loaded.tokenizer.pad_token_id, keep_dist=True)
    out = {key: row[key] for key in ("text_ctx", "text_base", "gold", "distractor")}
    out["p_gold"], out["p_distractor"] = {}, {}
    for arm, r in zip(("base", "ctx"), res):
        p, idx = torch.topk(r.dist.exp(), k)
        out[arm] = [(loaded.tokenizer.decode([int(i)]), float(v)) for v, i in zip(p, idx)]
        out["p_gold"][arm], out["p_distractor"][arm] = (float(torch.tensor(x).exp()) for x in r.probe_logprob)
    return out


@dataclass
class Scored:
    """Per-item first-token results of one pass."""

    gold: np.ndarray  # logit of the gold first token
    distractor: np.ndarray  # logit of the distractor first token
    rank: np.ndarray  # rank of the distractor first token (1 = top)
    gold_rank: np.ndarray  # rank of the gold first token
    dist: list[torch.Tensor] | None  # log-probs [V] per item


def run_pass(
    loaded: Loaded,
    prompts: list[tuple[int, ...]],
    gold: list[int],
    distractor: list[int],
    mask: torch.Tensor | None,
    batch_size: int,
    keep_dist: bool = False,
    ablation: Ablation = ZERO,
) -> Scored:
    """Score prompts at their last token with heads removed by `mask` (None = intact) the `ablation` way."""
    reqs = [Request(p) for p in prompts]
    res = score(
        loaded.model,
        reqs,
        [(g, d) for g, d in zip(gold, distractor)],
        loaded.tokenizer.pad_token_id,
        batch_size,
        keep_dist=keep_dist,
        keep=mask,
        ablation=ablation,
    )
    return Scored(
        np.array([r.probe_logit[0] for r in res]),
        np.array([r.probe_logit[1] for r in res]),
        np.array([r.probe_rank[1] for r in res]),
        np.array([r.probe_rank[0] for r in res]),
        [r.dist for r in res] if keep_dist else None,
    )


def kl(p_log: list[torch.Tensor], q_log: list[torch.Tensor]) -> np.ndarray:
    """KL(p || q) per item from log-probs."""
    return np.array([float((a.exp() * (a - b)).sum()) for a, b in zip(p_log, q_log)])
