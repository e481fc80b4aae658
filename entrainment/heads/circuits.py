"""Per-head weights read straight from a transformers model: each head's OV circuit, its copying and copy-suppression
scores, and the linearised norms the direct logit attribution goes through.

Conventions are TransformerLens' (row vectors): ``W_E`` [vocab, d_model], ``W_V`` [d_model, d_head], ``W_O``
[d_head, d_model], ``W_U`` [d_model, vocab]. The OV circuit of a head through the embedding and unembedding is
``W_E W_V W_O W_U`` [vocab, vocab] (row = the attended token, column = the logit it writes to). Its nonzero
eigenvalues equal those of the d_head-sized ``W_O (W_U W_E) W_V`` (the nonzero eigenvalues of AB and BA are equal),
so ``W_U W_E`` [d_model, d_model] is formed once per model and every head costs a d_head x d_head eigenproblem --
a 262k-token vocabulary (Gemma 3) never needs a vocab x vocab matrix.

Norms are folded as TransformerLens' ``fold_ln`` does with their per-dimension gains only: the attention block's
input norm into ``W_V``, the final norm into ``W_U``, and Gemma-style post-attention norms (applied to the attention
output before the residual add) into ``W_O``; Gemma's RMSNorm gain is ``1 + weight``. The per-token 1/RMS factor is
a positive scalar and leaves the signs the scores measure unchanged; LayerNorm centering and biases are not folded.
Grouped-query attention: query head h reads key/value head ``h // (n_heads / n_kv_heads)``.
Layouts: ``self_attn.{v_proj, o_proj}`` (Llama, SmolLM2, Gemma 3, Qwen 2/3, Mistral), GPT-2's ``attn.{c_attn,
c_proj}``, GPT-NeoX's ``attention.{query_key_value, dense}``; anything else is a NotImplementedError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from entrainment.model.hooks import decoder_layers

_FINAL_NORMS = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.final_layernorm")


@dataclass(frozen=True)
class LayerOV:
    """One layer's value and output weights, unfolded: ``v`` [n_kv_heads, d_model, d_head], ``o`` [n_heads,
    d_head, d_model]; ``pre`` the attention block's input norm, ``post`` a post-attention norm (Gemma) or None."""

    v: torch.Tensor
    o: torch.Tensor
    pre: nn.Module | None
    post: nn.Module | None


def norm_gain(module: nn.Module | None, d_model: int) -> torch.Tensor:
    """The per-dimension gain of a LayerNorm / RMSNorm (``1 + weight`` for Gemma's RMSNorm); ones without one."""
    w = getattr(module, "weight", None) if module is not None else None
    if w is None:
        return torch.ones(d_model)
    w = w.detach().float().cpu()
    return 1.0 + w if type(module).__name__.startswith("Gemma") else w


def norm_eps(module: nn.Module) -> float:
    return float(getattr(module, "variance_epsilon", None) or getattr(module, "eps", None) or 1e-6)


def is_layernorm(module: nn.Module) -> bool:
    """LayerNorm (centres, then scales) rather than RMSNorm (scales only)."""
    return isinstance(module, nn.LayerNorm)


def linear_norm(module: nn.Module | None, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """A norm linearised at its input ``x`` [..., d] and applied to a component ``c`` [..., k, d] of that input:
    what c contributes to the norm's output with the input's scale held fixed (the standard direct logit
    attribution). No norm: c itself."""
    if module is None:
        return c
    d = x.shape[-1]
    g = norm_gain(module, d).to(c.device)
    eps = norm_eps(module)
    x = x.float()[..., None, :]
    if is_layernorm(module):
        scale = torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
        return g * (c - c.mean(-1, keepdim=True)) * scale
    return g * c * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def final_norm(model: nn.Module) -> nn.Module | None:
    """The norm between the last layer and the unembedding (None if the model has none)."""
    for path in _FINAL_NORMS:
        m: object = model
        for part in path.split("."):
            m = getattr(m, part, None)
        if isinstance(m, nn.Module):
            return None if isinstance(m, nn.Identity) else m
    return None


def layer_ov(layer: nn.Module, n_heads: int, n_kv: int, head_dim: int) -> LayerOV:
    """The value/output weights of one decoder layer, in TransformerLens' orientation (see the module docstring)."""
    attn = getattr(layer, "self_attn", None)
    if attn is not None and hasattr(attn, "v_proj") and hasattr(attn, "o_proj"):
        wv = attn.v_proj.weight.detach().float().cpu()  # [n_kv * D, d]
        wo = attn.o_proj.weight.detach().float().cpu()  # [d, n_heads * D]
        d = wv.shape[1]
        post = layer.post_attention_layernorm if hasattr(layer, "pre_feedforward_layernorm") else None
        return LayerOV(
            wv.view(n_kv, head_dim, d).transpose(1, 2),
            wo.view(d, n_heads, head_dim).permute(1, 2, 0),
            getattr(layer, "input_layernorm", None),
            post,
        )
    attn = getattr(layer, "attn", None)
    if attn is not None and hasattr(attn, "c_attn"):  # GPT-2 Conv1D: y = x @ W
        w = attn.c_attn.weight.detach().float().cpu()  # [d, 3d]
        d = w.shape[0]
        v = w[:, 2 * d :].view(d, n_heads, head_dim).permute(1, 0, 2)
        o = attn.c_proj.weight.detach().float().cpu().view(n_heads, head_dim, d)
        return LayerOV(v, o, getattr(layer, "ln_1", None), None)
    attn = getattr(layer, "attention", None)
    if attn is not None and hasattr(attn, "query_key_value"):  # GPT-NeoX: rows [head, (q, k, v), D]
        w = attn.query_key_value.weight.detach().float().cpu()  # [3d, d]
        d = w.shape[1]
        v = w.view(n_heads, 3, head_dim, d)[:, 2].transpose(1, 2)
        o = attn.dense.weight.detach().float().cpu().view(d, n_heads, head_dim).permute(1, 2, 0)
        return LayerOV(v, o, getattr(layer, "input_layernorm", None), None)
    raise NotImplementedError(f"no known value/output projections in {type(layer).__name__}")


def all_ov(loaded) -> list[LayerOV]:
    """layer_ov of every decoder layer."""
    info = loaded.info
    return [
        layer_ov(layer, info.n_heads, info.n_kv_heads, info.head_dim)
        for layer in decoder_layers(loaded.model, info.n_layers)
    ]


def kv_head(head: int, n_heads: int, n_kv: int) -> int:
    """The key/value head a query head reads under grouped-query attention."""
    return head // (n_heads // n_kv)


def folded(ov: LayerOV, d_model: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_V with the input norm's gain folded in, W_O with a post-attention norm's gain folded in)."""
    v = norm_gain(ov.pre, d_model)[None, :, None] * ov.v
    o = ov.o * norm_gain(ov.post, d_model)[None, None, :] if ov.post is not None else ov.o
    return v, o


def embed_unembed(loaded) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_E [vocab, d], W_U [d, vocab] with the final norm's gain folded in), float32 on the CPU."""
    model = loaded.model
    e = model.get_input_embeddings().weight.detach().float().cpu()
    u = model.get_output_embeddings().weight.detach().float().cpu()  # [vocab, d]: logits = x @ u.T
    g = norm_gain(final_norm(model), e.shape[1])
    n = min(e.shape[0], u.shape[0])
    return e[:n], (u[:n] * g).T


def positivity(eig: torch.Tensor) -> float:
    """Σ Re λ / Σ |λ|: 1 for a pure copying circuit (positive eigenvalues), −1 for pure suppression."""
    total = eig.abs().sum()
    return float(eig.real.sum() / total) if total > 0 else float("nan")


def copying_scores(loaded) -> np.ndarray:
    """[L, H] OV-circuit eigenvalue positivity of every head, from the d_head-sized form ``W_O (W_U W_E) W_V``.

    Args:
        loaded: the model.
    Returns:
        float64 array [n_layers, n_heads] in [−1, 1].
    """
    info = loaded.info
    e, u = embed_unembed(loaded)
    c = (u @ e).double()  # W_U W_E [d, d]: the only vocabulary-sized product, once per model
    out = np.zeros((info.n_layers, info.n_heads))
    for layer, ov in enumerate(all_ov(loaded)):
        v, o = folded(ov, e.shape[1])
        for h in range(info.n_heads):
            k = o[h].double() @ c @ v[kv_head(h, info.n_heads, info.n_kv_heads)].double()
            out[layer, h] = positivity(torch.linalg.eigvals(k))
    return out


def full_ov(loaded, layer: int, head: int, tokens: Sequence[int] | None = None) -> torch.Tensor:
    """The vocabulary-sized OV circuit ``W_E W_V W_O W_U`` of one head (rows and columns restricted to `tokens`),
    with the same folding as copying_scores: the reference the d_head form is tested against, and the matrix the
    copy-suppression score reads."""
    info = loaded.info
    e, u = embed_unembed(loaded)
    if tokens is not None:
        idx = torch.tensor(list(tokens), dtype=torch.long)
        e, u = e[idx], u[:, idx]
    v, o = folded(all_ov(loaded)[layer], e.shape[1])
    return (e @ v[kv_head(head, info.n_heads, info.n_kv_heads)]) @ (o[head] @ u)


def suppression_scores(loaded, tokens: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per head, on a token subset S: the share of tokens whose own logit is the *lowest* of their row of the OV
    circuit restricted to S (copy suppression: attending to a token lowers that very token; McDougall et al. 2023,
    arXiv 2310.04625, count a token when it is among its row's most negative logits), and the share whose own logit
    is the highest (copying, top-1).

    Args:
        loaded: the model.
        tokens: the subset S (token ids).
    Returns:
        (copy_suppression [L, H], copying_top1 [L, H]), shares in [0, 1].
    """
    info = loaded.info
    e, u = embed_unembed(loaded)
    idx = torch.tensor(list(tokens), dtype=torch.long)
    e, u = e[idx], u[:, idx]
    diag = torch.arange(len(idx))
    sup, cop = np.zeros((info.n_layers, info.n_heads)), np.zeros((info.n_layers, info.n_heads))
    for layer, ov in enumerate(all_ov(loaded)):
        v, o = folded(ov, e.shape[1])
        for h in range(info.n_heads):
            m = (e @ v[kv_head(h, info.n_heads, info.n_kv_heads)]) @ (o[h] @ u)  # [S, S]
            sup[layer, h] = float((m.argmin(dim=1) == diag).float().mean())
            cop[layer, h] = float((m.argmax(dim=1) == diag).float().mean())
    return sup, cop
