"""Per-head scaling of attention output, before the output projection.

A forward pre-hook on each layer's attention output projection (``o_proj`` for Llama/SmolLM2,
Gemma-3, Qwen2/3; ``c_proj`` for GPT-2; ``dense`` for GPT-NeoX/Pythia) sees the head-major
concatenation ``[batch, seq, n_heads * head_dim]``; it is reshaped to ``[..., n_heads, head_dim]``
and multiplied by ``scale[layer][:, None]``: one reshape and one multiply per layer. This is
TransformerLens' ``hook_z`` masking; it works with grouped-query attention (z is per query head)
and with any attention backend. The projection's bias is kept.

``scale`` is an ``[n_layers, n_heads]`` tensor: a fixed 0/1 mask, or a differentiable tensor (the
discovery stage passes a straight-through Gumbel-sigmoid sample). ``None`` leaves the model intact.
A ``[batch, n_layers, n_heads]`` scale gives every row of the batch its own mask, so many head sets
(random-head draws, the single-head scan) run in one forward pass.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from entrainment.errors import InputError

# (attention module, output projection) attribute names, tried in order.
_OUT_PROJ = (("self_attn", "o_proj"), ("attn", "c_proj"), ("attention", "dense"), ("self_attention", "dense"),
             ("self_attn", "out_proj"), ("attn", "out_proj"), ("self_attn", "dense"), ("attn", "o_proj"))


def _layer_list(model: nn.Module, n_layers: int) -> nn.ModuleList:
    """The decoder's list of layers: the first ModuleList of length n_layers whose items hold attention."""
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            first = module[0]
            if any(getattr(getattr(first, a, None), o, None) is not None for a, o in _OUT_PROJ):
                return module
    raise NotImplementedError(f"cannot find the decoder layers of {type(model).__name__} "
                              f"(looked for a ModuleList of {n_layers} layers with one of {_OUT_PROJ})")


def out_projections(model: nn.Module) -> tuple[list[nn.Module], int, int]:
    """The attention output projection of every layer, plus (n_heads, head_dim)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n_heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    projs = []
    for i, layer in enumerate(_layer_list(model, cfg.num_hidden_layers)):
        proj = next((getattr(getattr(layer, a, None), o) for a, o in _OUT_PROJ
                     if getattr(getattr(layer, a, None), o, None) is not None), None)
        if proj is None:
            raise NotImplementedError(f"layer {i} of {type(model).__name__} has no known attention output projection")
        in_features = getattr(proj, "in_features", None) or getattr(proj, "nx", None) or proj.weight.shape[0]
        if in_features != n_heads * head_dim:
            raise NotImplementedError(f"{type(model).__name__} layer {i}: output projection takes {in_features} "
                                      f"features, expected n_heads*head_dim = {n_heads}*{head_dim}")
        projs.append(proj)
    return projs, n_heads, head_dim


class HeadScaler:
    """Installs the pre-hooks; set ``.scale`` before a forward pass, call ``.remove()`` at the end."""

    def __init__(self, model: nn.Module, scale: torch.Tensor | None = None):
        self.projs, self.n_heads, self.head_dim = out_projections(model)
        self.scale = scale
        self.handles = [p.register_forward_pre_hook(self._hook(i)) for i, p in enumerate(self.projs)]

    def _hook(self, layer: int):
        def hook(_module: nn.Module, args: tuple) -> tuple | None:
            if self.scale is None:
                return None
            x = args[0]
            if self.scale.dim() == 3:  # one mask per batch row: [B, H] -> broadcast over positions and head_dim
                s = self.scale[:, layer].to(device=x.device, dtype=x.dtype)[:, None, :, None]
            else:
                s = self.scale[layer].to(device=x.device, dtype=x.dtype)[:, None]
            x = (x.unflatten(-1, (self.n_heads, self.head_dim)) * s).flatten(-2)
            return (x,) + tuple(args[1:])

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


@contextmanager
def scaled_heads(model: nn.Module, scale: torch.Tensor | None) -> Iterator[HeadScaler | None]:
    """``with scaled_heads(model, mask): ...`` -- the hooks are gone after the block, even on error.
    ``scale=None`` means the intact model: no hook is installed at all."""
    if scale is None:
        yield None
        return
    scaler = HeadScaler(model, scale)
    try:
        yield scaler
    finally:
        scaler.remove()


@dataclass(frozen=True)
class HeadSet:
    """A named set of heads to remove: ``id`` goes into the `ablation` column and identifies the heads
    (a mask's id ends in a hash of its sorted head list); ``label`` is the readable name."""

    id: str
    heads: tuple[tuple[int, int], ...]
    label: str = ""

    def mask(self, n_layers: int, n_heads: int) -> torch.Tensor:
        """A keep-mask [n_layers, n_heads]: 0 for removed heads, 1 elsewhere."""
        m = torch.ones(n_layers, n_heads)
        for layer, head in self.heads:
            if not (0 <= layer < n_layers and 0 <= head < n_heads):
                raise InputError("--ablation-heads", "head", f"{layer}.{head}",
                                 f"outside the model's {n_layers} layers x {n_heads} heads")
            m[layer, head] = 0.0
        return m


def parse_head_list(text: str) -> HeadSet:
    """``"3.4,10.7"`` -> HeadSet("heads-3.4,10.7", ((3, 4), (10, 7)))."""
    heads = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            layer, head = (int(x) for x in part.split("."))
        except ValueError:
            raise InputError("--ablation-heads", "head", part, "expected layer.head, e.g. 3.4") from None
        if layer < 0 or head < 0:
            raise InputError("--ablation-heads", "head", part, "layer and head indices start at 0")
        heads.append((layer, head))
    if not heads:
        raise InputError("--ablation-heads", "heads", text, "no heads given")
    heads = sorted(set(heads))
    name = "heads-" + ",".join(f"{a}.{b}" for a, b in heads)
    return HeadSet(name, tuple(heads), name)


def head_sets_from_parquet(path: Path, model: str | None = None) -> list[HeadSet]:
    """One HeadSet per (relation, seed) mask in a heads.parquet (optionally for one model)."""
    import polars as pl

    from entrainment.tables import read_parquet
    from entrainment.schema import HEADS

    df = read_parquet(path, HEADS)
    if model is not None:
        if model not in set(df["model"]):
            found = ", ".join(sorted(set(df["model"]))) or "none"
            raise InputError(path, "model", model, f"no mask for this model in the file (masks for: {found})")
        df = df.filter(pl.col("model") == model)
    out = []
    for (relation, seed), g in sorted(df.group_by("relation", "seed"), key=lambda kv: (kv[0][0], kv[0][1])):
        removed = g.filter(pl.col("removed")).sort("layer", "head")
        out.append(mask_set(relation, seed, tuple(zip(removed["layer"].to_list(), removed["head"].to_list()))))
    if not out:
        raise InputError(path, "heads", 0, "no masks in this heads.parquet")
    return out


def mask_label(relation: str, seed: int) -> str:
    """The readable name of a learned mask (the `ablation_label` column)."""
    return f"mask:{relation}:seed{seed}"


def mask_set(relation: str, seed: int, heads: tuple[tuple[int, int], ...]) -> HeadSet:
    """A learned mask as a HeadSet whose id identifies its heads: ``mask:<relation>:seed<N>:<sha1 of heads>``."""
    heads = tuple(sorted(heads))
    digest = hashlib.sha1(",".join(f"{a}.{b}" for a, b in heads).encode()).hexdigest()[:8]
    return HeadSet(f"{mask_label(relation, seed)}:{digest}", heads, mask_label(relation, seed))


def parse_ablation(text: str | None, model: str | None = None) -> list[HeadSet]:
    """--ablation-heads: a heads.parquet path or a layer.head list; None -> []."""
    if not text:
        return []
    if text.endswith(".parquet") or Path(text).is_file():
        return head_sets_from_parquet(Path(text), model)
    return [parse_head_list(text)]
