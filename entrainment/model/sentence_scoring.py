"""Teacher-forced scoring of a whole sentence y after a prompt: log-probabilities of y's tokens only.

``encode`` tokenises ``prompt + " " + y`` once and finds y's tokens. The boundary check: the ids of the whole text
must equal the prompt's ids followed by the ids of ``" " + y`` (then y's tokens are exactly those); if a merge
crosses the boundary they differ, y's tokens are found from the character offsets (every token that ends after the
prompt's last character) and the row is flagged ``boundary_ok = False``. BOS follows the --bos convention
(``tokens.Tokens``).

``score`` runs the sequences in batches (sorted by length, padded on either side with explicit ``position_ids``, so
a batched score equals a one-at-a-time score), optionally with heads removed by zero ablation (``keep``), and returns
per sequence ``n_tokens``, ``sum_logprob``, ``mean_logprob`` (= sum / n) and ``first_logprob``. With left padding
(the default) the LM head runs only on the positions that predict y (``logits_to_keep``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from entrainment.model.hooks import intervened
from entrainment.model.oom import halving
from entrainment.model.scoring import collate, model_device
from entrainment.model.tokens import Tokens


@dataclass(frozen=True)
class Encoded:
    """One sequence to score: ``ids`` (prompt then sentence), ``start`` (index of the sentence's first token)."""

    ids: tuple[int, ...]
    start: int
    boundary_ok: bool


@dataclass(frozen=True)
class SentenceScore:
    n_tokens: int
    sum_logprob: float
    mean_logprob: float
    first_logprob: float


def encode(tokens: Tokens, prompt: str, sentence: str, sep: str = " ") -> Encoded:
    """The ids of ``prompt + sep + sentence`` and where the sentence starts, with the boundary check.

    Args:
        tokens: the model's Tokens front end (fixes the BOS convention).
        prompt: the text before the sentence.
        sentence: the scored sentence.
        sep: what joins them (a space; tests pass "" to build a merge across the boundary).
    Returns:
        Encoded(ids, start, boundary_ok).
    """
    tok = tokens.tokenizer
    head = tokens.prompt(prompt)
    tail = tuple(tok(sep + sentence, add_special_tokens=False).input_ids)
    text = prompt + sep + sentence
    full = tokens.prompt(text)
    if full == head + tail and tail:
        return Encoded(full, len(head), True)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    plain = list(enc.input_ids)
    n_special = len(full) - len(plain)  # BOS (or other special tokens) in front
    boundary = len(prompt)
    first = next((i for i, (_, end) in enumerate(enc.offset_mapping) if end > boundary), len(plain))
    if first == 0:  # the sentence would start at the first token: nothing predicts it
        first = 1
    return Encoded(full, n_special + first, False)


def _batch(model, seqs: Sequence[Encoded], pad_id: int, padding_side: str) -> list[SentenceScore]:
    device = model_device(model)
    ids, mask = collate([s.ids for s in seqs], pad_id, device, padding_side)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    width = ids.shape[1]
    if padding_side == "left":
        keep = max(len(s.ids) - s.start for s in seqs) + 1
        out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, logits_to_keep=keep, use_cache=False)
        logits, offset = out.logits, width - keep
    else:
        out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False)
        logits, offset = out.logits, 0
    res = []
    for b, s in enumerate(seqs):
        shift = width - len(s.ids) if padding_side == "left" else 0  # where the row's first token sits
        # logits at position p predict token p + 1: y's tokens start..end-1 are predicted at start-1..end-2
        rows = logits[b, shift + s.start - 1 - offset : shift + len(s.ids) - 1 - offset].float()
        tgt = torch.tensor(s.ids[s.start :], dtype=torch.long, device=device)
        lp = torch.log_softmax(rows, dim=-1).gather(-1, tgt[:, None])[:, 0].double().cpu()
        n = len(tgt)
        total = float(lp.sum())
        res.append(SentenceScore(n, total, total / n, float(lp[0])))
    return res


def score(
    model,
    seqs: Sequence[Encoded],
    pad_id: int,
    batch_size: int = 32,
    padding_side: str = "left",
    keep: torch.Tensor | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[SentenceScore]:
    """Score every sequence's sentence tokens (teacher-forced), in the order given.

    Args:
        model: a causal LM.
        seqs: from ``encode``.
        pad_id: the padding token id.
        batch_size: sequences per forward pass (halved on out-of-memory).
        padding_side: left (default) | right; both give the same scores.
        keep: keep-mask [L, H] (0 = head removed by zero ablation); None = the intact model.
        progress: called with the number of sequences finished.
    Returns:
        One SentenceScore per sequence.
    """
    for s in seqs:
        if not 0 < s.start < len(s.ids):
            raise ValueError(f"sentence start {s.start} outside 1..{len(s.ids) - 1}: no token predicts it")
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i].ids))
    out: list[SentenceScore | None] = [None] * len(seqs)
    bs, i = batch_size, 0
    with torch.inference_mode(), intervened(model, keep):
        while i < len(order):

            def attempt(b: int) -> tuple[list[int], list[SentenceScore]]:
                chunk = order[i : i + b]
                return chunk, _batch(model, [seqs[j] for j in chunk], pad_id, padding_side)

            (chunk, done), bs = halving(bs, attempt)
            for j, r in zip(chunk, done):
                out[j] = r
            i += len(chunk)
            if progress:
                progress(len(chunk))
    return out  # type: ignore[return-value]
