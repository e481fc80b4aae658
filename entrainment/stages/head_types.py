"""What the entrainment heads are: head-type scores for every head (head_types.parquet) and their agreement with
entrainment importance (head_type_agreement.parquet, ``head_dissociation``).

Attention-pattern scores, on a seeded batch of repeated random tokens ``[BOS] r1..rT r1..rT`` (no token repeats
within a half; BOS where the tokenizer has one; special and added tokens never drawn). Each is TransformerLens'
``detect_head`` score with ``error_measure="mul"`` (transformer_lens/head_detector.py; Nanda et al.'s induction-head
tutorial): the attention a query puts on the key the head type predicts, with BOS and the current token not
excluded -- averaged here over the query positions that *have* an expected key (TransformerLens divides by every
query position, which scales the duplicate and induction scores by about one half):

- ``prev_token``: query t on key t − 1 (every t ≥ 1);
- ``duplicate_token``: a second-half query on its token's first occurrence (t − T);
- ``induction``: a second-half query on the token after its first occurrence (t − T + 1).

The probabilities come from the model's own attention with ``attn_implementation="eager"`` (set for the pass and
restored after it; SDPA does not return them), so every architecture, mask and sliding window is the model's own.

OV scores (``head_circuits``): ``copying`` = Σ Re λ / Σ |λ| of W_E W_V W_O W_U in its d_head-sized form;
``copy_suppression`` / ``copying_top1`` on a frequent-token subset: the tokens of the discovery relation's prompts,
then the lowest non-special token ids (BPE ids are in merge order, roughly by frequency).

Entrainment readings, on the scan's dev items of the discovery relation (training condition, the same seeded
subsample as the scan): ``distractor_attention`` = the attention from the final position to the distractor's tokens
in the context (summed over its tokens, mean over items), with context; ``dla_distractor`` = the head's direct logit
attribution to ℓ(distractor) − ℓ(gold) at the final position (its output through a post-attention norm where the
architecture has one and the final norm, each linearised at the pass's own residual), with context minus without,
mean over items.

Longer than 320 lines because the stage's three readings (attention scores, OV scores, entrainment readings) are
computed on one seeded batch and kept in one place.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import polars as pl
import torch

from entrainment.heads import circuits
from entrainment.model.hooks import recorded_z
from entrainment.model.loading import Loaded
from entrainment.model.scoring import collate, model_device

SCORES = (
    "prev_token",
    "duplicate_token",
    "induction",
    "copying",
    "copy_suppression",
    "distractor_attention",
    "dla_distractor",
)


@contextmanager
def eager_attention(model) -> Iterator[None]:
    """The model computes attention eagerly (so it can return the probabilities) inside the block."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def ordinary_tokens(tokenizer, vocab: int) -> np.ndarray:
    """Token ids below `vocab` that are neither special nor added tokens."""
    skip = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    return np.array([i for i in range(min(vocab, len(tokenizer))) if i not in skip], dtype=np.int64)


def repeated_tokens(tokenizer, vocab: int, n_seqs: int, length: int, seed: int) -> tuple[torch.Tensor, int]:
    """(``[n_seqs, bos + 2T]`` ids ``[BOS] r1..rT r1..rT``, bos = 1 if a BOS leads them else 0); seeded."""
    pool = ordinary_tokens(tokenizer, vocab)
    if len(pool) < length:
        raise ValueError(f"the vocabulary has {len(pool)} ordinary tokens, fewer than T = {length}")
    rng = np.random.default_rng(seed)
    half = np.stack([rng.choice(pool, size=length, replace=False) for _ in range(n_seqs)])
    ids = np.concatenate([half, half], axis=1)
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        ids = np.concatenate([np.full((n_seqs, 1), bos), ids], axis=1)
    return torch.tensor(ids, dtype=torch.long), int(bos is not None)


def pattern_scores(loaded: Loaded, seqs: torch.Tensor, bos: int) -> dict[str, np.ndarray]:
    """prev_token, duplicate_token and induction scores [L, H] of every head on repeated random tokens.

    Args:
        loaded: the model.
        seqs: [B, bos + 2T] ids from repeated_tokens.
        bos: 1 if the sequences start with BOS.
    Returns:
        {score name: float64 [n_layers, n_heads]}.
    """
    model = loaded.model
    length = (seqs.shape[1] - bos) // 2
    with torch.inference_mode(), eager_attention(model):
        out = model(input_ids=seqs.to(model_device(model)), output_attentions=True, use_cache=False)
    att = torch.stack([a.float().cpu() for a in out.attentions])  # [L, B, H, S, S]
    s = seqs.shape[1]
    q_all = torch.arange(1, s)
    q_two = torch.arange(bos + length, s)
    pick = lambda q, k: att[:, :, :, q, k].mean(dim=(1, 3)).numpy().astype(np.float64)  # noqa: E731
    return {
        "prev_token": pick(q_all, q_all - 1),
        "duplicate_token": pick(q_two, q_two - length),
        "induction": pick(q_two, q_two - length + 1),
    }


def distractor_positions(tokenizer, ids: Sequence[int], text: str, context: str, distractor: str) -> list[int]:
    """Positions in `ids` (the model input of `text` = context + query) of the tokens that spell the distractor's
    last occurrence in the context ([] if it does not occur there)."""
    start = context.rfind(distractor)
    if start < 0 or not text.startswith(context):
        return []
    end = start + len(distractor)
    enc = tokenizer(text, return_offsets_mapping=True)
    shift = len(ids) - len(enc.input_ids)  # a BOS added (--bos always) or dropped (never)
    return [
        i + shift
        for i, (a, b) in enumerate(enc.offset_mapping)
        if b > a and a < end and b > start and 0 <= i + shift < len(ids)
    ]


def _last_position_pass(loaded: Loaded, prompts: list[tuple[int, ...]], attend: bool):
    """One forward of left-padded prompts: (attention rows of the last position [L, B, H, S] or None, z at the last
    position [L, B, H, D], attention-output-norm inputs at the last position [L, B, d] or None, final-norm input at
    the last position [B, d], pad offsets [B])."""
    model, info = loaded.model, loaded.info
    device = model_device(model)
    ids, mask = collate(prompts, loaded.tokenizer.pad_token_id, device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    ovs = circuits.all_ov(loaded)
    posts: list = [None] * info.n_layers
    fin: list = [None]
    hooks = [
        ov.post.register_forward_pre_hook(lambda _m, a, i=i: posts.__setitem__(i, a[0][:, -1].float().cpu()))
        for i, ov in enumerate(ovs)
        if ov.post is not None
    ]
    norm = circuits.final_norm(model)
    if norm is not None:
        hooks.append(norm.register_forward_pre_hook(lambda _m, a: fin.__setitem__(0, a[0][:, -1].float().cpu())))
    try:
        with torch.inference_mode(), recorded_z(model) as zs, eager_attention(model) if attend else _nothing():
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                output_attentions=attend,
                use_cache=False,
                output_hidden_states=norm is None,
                logits_to_keep=1,
            )
    finally:
        for h in hooks:
            h.remove()
    z = torch.stack([t[:, -1].float().cpu().unflatten(-1, (info.n_heads, info.head_dim)) for t in zs])
    att = torch.stack([a[:, :, -1].float().cpu() for a in out.attentions]) if attend else None
    resid = fin[0] if norm is not None else out.hidden_states[-1][:, -1].float().cpu()
    post = torch.stack(posts) if any(p is not None for p in posts) else None
    return att, z, post, resid, (ids.shape[1] - mask.sum(-1)).cpu()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def head_dla(
    loaded: Loaded, z: torch.Tensor, post: torch.Tensor | None, resid: torch.Tensor, direction: torch.Tensor
) -> torch.Tensor:
    """[B, L, H] direct logit attribution of every head's output at the last position onto `direction` [B, d] (a
    difference of unembedding rows), through a post-attention norm (if any) and the final norm, linearised."""
    ovs = circuits.all_ov(loaded)
    norm = circuits.final_norm(loaded.model)
    out = []
    for layer, ov in enumerate(ovs):
        c = torch.einsum("bhk,hkd->bhd", z[layer], ov.o)  # [B, H, d]: each head's write, before any norm
        if ov.post is not None and post is not None:
            c = circuits.linear_norm(ov.post, post[layer], c)
        c = circuits.linear_norm(norm, resid, c)
        out.append(torch.einsum("bhd,bd->bh", c, direction))
    return torch.stack(out, dim=1)


def entrainment_readings(
    loaded: Loaded,
    ctx: list[tuple[int, ...]],
    base: list[tuple[int, ...]],
    positions: list[list[int]],
    gold: list[int],
    dist: list[int],
    batch_size: int = 16,
) -> dict[str, np.ndarray]:
    """distractor_attention and dla_distractor [L, H] over items (module docstring).

    Args:
        loaded: the model.
        ctx, base: each item's prompt ids with and without context.
        positions: the distractor's token positions in each ctx prompt (items with none give no attention reading).
        gold, dist: first-token ids of each item's gold and distractor.
        batch_size: items per forward pass.
    Returns:
        {"distractor_attention": [L, H], "dla_distractor": [L, H]} (NaN without items).
    """
    info = loaded.info
    u = loaded.model.get_output_embeddings().weight.detach().float().cpu()
    att_sum, att_n, dla = np.zeros((info.n_layers, info.n_heads)), 0, []
    for lo in range(0, len(ctx), batch_size):
        sl = slice(lo, lo + batch_size)
        direction = u[dist[sl]] - u[gold[sl]]
        per_arm = []
        for arm, prompts in (("ctx", ctx[sl]), ("base", base[sl])):
            att, z, post, resid, pad = _last_position_pass(loaded, list(prompts), arm == "ctx")
            per_arm.append(head_dla(loaded, z, post, resid, direction))
            if att is not None:
                for b, where in enumerate(positions[sl]):
                    if where:
                        keys = torch.tensor(where) + int(pad[b])
                        att_sum += att[:, b][:, :, keys].sum(-1).numpy()
                        att_n += 1
        dla.append((per_arm[0] - per_arm[1]).numpy())
    nan = np.full((info.n_layers, info.n_heads), np.nan)
    return {
        "distractor_attention": att_sum / att_n if att_n else nan,
        "dla_distractor": np.concatenate(dla).mean(axis=0) if dla else nan,
    }


def frame(
    loaded: Loaded, scores: dict[str, np.ndarray], relation: str | None, n_seqs: int, n_items: int, n_tokens: int
) -> pl.DataFrame:
    """head_types rows: one per (layer, head) of the model."""
    from entrainment.store.schema import HEAD_TYPES

    info = loaded.info
    rows = [
        {
            "model": info.spec,
            "layer": layer,
            "head": head,
            "kv_head": circuits.kv_head(head, info.n_heads, info.n_kv_heads),
        }
        | {name: float(scores[name][layer, head]) for name in SCORES + ("copying_top1",)}
        | {"relation": relation, "n_seqs": n_seqs, "n_items": n_items, "n_tokens": n_tokens}
        for layer in range(info.n_layers)
        for head in range(info.n_heads)
    ]
    return pl.DataFrame(rows, schema=HEAD_TYPES.polars_schema())


def token_subset(tokenizer, vocab: int, prompts: Sequence[Sequence[int]], n: int) -> list[int]:
    """The copy-suppression subset: the prompts' ordinary tokens, then the lowest ordinary ids, n in all (at
    least the prompts' tokens)."""
    pool = ordinary_tokens(tokenizer, vocab)
    ok = set(pool.tolist())
    seen = list(dict.fromkeys(t for p in prompts for t in p if t in ok))
    fill = [int(t) for t in pool if t not in set(seen)]
    return seen + fill[: max(0, n - len(seen))]


def compute(
    loaded: Loaded,
    rows: pl.DataFrame | None,
    relation: str | None,
    cfg,
    heads=None,
    head_scores=None,
    stability=None,
    progress=None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """head_types and head_type_agreement rows of one model: the entry function of the task and the API.

    Args:
        loaded: the model.
        rows: the discovery relation's prompt rows (None: no entrainment readings, no gains).
        relation: that relation's name.
        cfg: seed, bos, train_conditions, scan_items, null_items, batch_size, ablation_method, head_types_k,
            head_types_seqs, head_types_len, head_types_tokens, head_types_draws.
        heads, head_scores, stability: heads / head_scores / head_stability frames when present (else None).
        progress: called with a short label after each step.
    Returns:
        (head_types frame, head_type_agreement frame).
    """
    from entrainment.heads import dissociation
    from entrainment.heads.random_heads import null_subsample
    from entrainment.model.tokens import Tokens, context_window
    from entrainment.stages import scan
    from entrainment.store.schema import HEAD_TYPE_AGREEMENT

    info, tok = loaded.info, loaded.tokenizer
    step = progress or (lambda _label: None)
    vocab = min(len(tok), loaded.model.get_input_embeddings().weight.shape[0])
    seqs, bos = repeated_tokens(tok, vocab, cfg.head_types_seqs, cfg.head_types_len, cfg.seed)
    scores = pattern_scores(loaded, seqs, bos)
    step("attention patterns")
    scores["copying"] = circuits.copying_scores(loaded)
    tk = Tokens(tok, cfg.bos, max_len=context_window(loaded.model))
    dev, test = [], []
    if rows is not None and not rows.is_empty():
        dev = scan.items(rows, "dev", cfg, tk)
        if cfg.scan_items:
            dev = [dev[i] for i in null_subsample(np.arange(len(dev)), cfg.scan_items, f"scan|{cfg.seed}|{relation}")]
        test = scan.items(rows, "test", cfg, tk)
        test = [test[i] for i in null_subsample(np.arange(len(test)), cfg.null_items, f"kcurve|{cfg.seed}|{relation}")]
    subset = token_subset(tok, vocab, [it.prompt for it, _ in dev + test], cfg.head_types_tokens)
    scores["copy_suppression"], scores["copying_top1"] = circuits.suppression_scores(loaded, subset)
    step("OV circuits")
    scores |= entrainment_readings(
        loaded,
        [it.prompt for it, _ in dev],
        [tk.prompt(r["text_base"]) for _, r in dev],
        [distractor_positions(tok, it.prompt, r["text_ctx"], r["context"], r["distractor"]) for it, r in dev],
        [it.gold for it, _ in dev],
        [it.distractor for it, _ in dev],
    )
    step("entrainment readings")
    types = frame(loaded, scores, relation, len(seqs), len(dev), len(subset))
    grids = {name: scores[name] for name in SCORES}
    ranks = dissociation.rankings(
        info.spec, info.n_layers, info.n_heads, cfg.ablation_method, cfg.head_types_k, head_scores, stability
    )
    out = dissociation.agreement_rows(info.spec, grids, ranks, cfg.head_types_k, cfg.seed)
    entr, source = dissociation.entrainment_heads(
        relation or "", heads, {key: g for key, (g, _) in ranks.items()}, info.spec, cfg.head_types_k
    )
    if entr:
        items = ([it.prompt for it, _ in test], [it.gold for it, _ in test], [it.distractor for it, _ in test])
        out += dissociation.dissociation_rows(
            loaded,
            grids,
            entr,
            source,
            relation or "",
            cfg.head_types_k,
            items,
            seqs,
            bos,
            cfg.head_types_draws,
            cfg.seed,
            max(cfg.batch_size, 64),
        )
    step("agreement and dissociation")
    schema = HEAD_TYPE_AGREEMENT.polars_schema()
    agree = (
        pl.DataFrame([{c: r.get(c) for c in schema} for r in out], schema=schema)
        if out
        else pl.DataFrame(schema=schema)
    )
    return types, agree.sort("model", "relation", "kind", "score", "ranking", "removed", nulls_last=True)
