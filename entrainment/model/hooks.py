"""The one hook vocabulary for every head intervention: remove heads by zero, mean or resample ablation.

A forward pre-hook on each layer's attention output projection (``o_proj`` for Llama/SmolLM2, Gemma-3, Qwen2/3;
``c_proj`` for GPT-2; ``dense`` for GPT-NeoX/Pythia) sees the head-major concatenation ``z`` of shape
``[batch, seq, n_heads * head_dim]`` (TransformerLens' ``hook_z``; per query head, so grouped-query attention
needs nothing special; any attention backend). It is reshaped to ``[batch, seq, n_heads, head_dim]`` and each
head's slice becomes

    z' = m * z + (1 - m) * r        m = the keep value of (row, layer, head); r = the replacement

with ``r`` = 0 (**zero**), the head's mean slice ``mu[layer, head]`` over a reference set (**mean**), or the same
head's slice of a donor row of the same batch (**resample**; the donor rows run intact, positions are aligned
from the last real token -- left padding already aligns them -- and positions the donor does not have take
the mean). ``m`` is a fixed 0/1 mask, or a differentiable tensor (the mask search passes a straight-through
Gumbel-sigmoid sample), ``[n_layers, n_heads]`` for the whole batch or ``[batch, n_layers, n_heads]`` for one
mask per row (many head sets in one forward pass). The projection's bias is kept. ``m = 1`` leaves a head
intact; a zero-method hook with ``m = 1`` everywhere is bit-identical to no hook.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping

import torch
from torch import nn

from entrainment.vocabulary import ABLATION_METHODS

__all__ = [
    "Ablation",
    "ZERO",
    "HeadScaler",
    "scaled_heads",
    "intervened",
    "donor_rows",
    "set_batch",
    "recorded_z",
    "out_projections",
    "decoder_layers",
]

# (attention module, output projection) attribute names, tried in order.
_OUT_PROJ = (
    ("self_attn", "o_proj"),
    ("attn", "c_proj"),
    ("attention", "dense"),
    ("self_attention", "dense"),
    ("self_attn", "out_proj"),
    ("attn", "out_proj"),
    ("self_attn", "dense"),
    ("attn", "o_proj"),
)


def decoder_layers(model: nn.Module, n_layers: int) -> nn.ModuleList:
    """The decoder's list of layers: the first ModuleList of length n_layers whose items hold attention."""
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            first = module[0]
            if any(getattr(getattr(first, a, None), o, None) is not None for a, o in _OUT_PROJ):
                return module
    raise NotImplementedError(
        f"cannot find the decoder layers of {type(model).__name__} "
        f"(looked for a ModuleList of {n_layers} layers with one of {_OUT_PROJ})"
    )


def out_projections(model: nn.Module) -> tuple[list[nn.Module], int, int]:
    """The attention output projection of every layer, plus (n_heads, head_dim)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n_heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    projs = []
    for i, layer in enumerate(decoder_layers(model, cfg.num_hidden_layers)):
        proj = next(
            (
                getattr(getattr(layer, a, None), o)
                for a, o in _OUT_PROJ
                if getattr(getattr(layer, a, None), o, None) is not None
            ),
            None,
        )
        if proj is None:
            raise NotImplementedError(f"layer {i} of {type(model).__name__} has no known attention output projection")
        in_features = getattr(proj, "in_features", None) or getattr(proj, "nx", None) or proj.weight.shape[0]
        if in_features != n_heads * head_dim:
            raise NotImplementedError(
                f"{type(model).__name__} layer {i}: output projection takes {in_features} "
                f"features, expected n_heads*head_dim = {n_heads}*{head_dim}"
            )
        projs.append(proj)
    return projs, n_heads, head_dim


@dataclass(frozen=True)
class Ablation:
    """How removed heads are replaced: the argument every scoring path takes beside its keep-mask.

    Attributes:
        method: zero | mean | resample.
        mean: ``[n_layers, n_heads, head_dim]`` reference means (mean; resample's fallback where the donor has no
            position). Required unless method is zero.
        donors: resample only: prompt token ids -> the donor prompt's token ids (``donors.donor_map``).
    """

    method: str = "zero"
    mean: torch.Tensor | None = None
    donors: Mapping[tuple[int, ...], tuple[int, ...]] | None = None

    def __post_init__(self) -> None:
        if self.method not in ABLATION_METHODS:
            raise ValueError(f"unknown ablation method {self.method!r} (expected one of {', '.join(ABLATION_METHODS)})")
        if self.method != "zero" and self.mean is None:
            raise ValueError(f"{self.method} ablation needs the reference means (mean=)")
        if self.method == "resample" and self.donors is None:
            raise ValueError("resample ablation needs donors (donors=)")

    @property
    def resample(self) -> bool:
        return self.method == "resample"


ZERO = Ablation()


class HeadScaler:
    """Installs the pre-hooks. Set ``.scale`` (and, for resample, ``.donor`` / ``.donor_ok``) before a forward
    pass; call ``.remove()`` at the end (or use ``intervened``).

    Per-batch state: ``scale`` ``[L, H]`` or ``[B, L, H]``; ``donor`` ``[B]`` long, the row of the same batch whose
    slice replaces this row's removed heads (-1: none, take the mean); ``donor_ok`` ``[B, T]`` bool, where the
    donor row has a real token (else the mean). With ``donor`` None a resample hook uses the mean everywhere.
    """

    def __init__(
        self,
        model: nn.Module,
        scale: torch.Tensor | None = None,
        method: str = "zero",
        mean: torch.Tensor | None = None,
    ):
        self.projs, self.n_heads, self.head_dim = out_projections(model)
        self.scale = scale
        self.method = method
        self.mean = mean
        self.donor: torch.Tensor | None = None
        self.donor_ok: torch.Tensor | None = None
        self.handles = [p.register_forward_pre_hook(self._hook(i)) for i, p in enumerate(self.projs)]

    def _hook(self, layer: int):
        def hook(_module: nn.Module, args: tuple) -> tuple | None:
            if self.scale is None:
                return None
            x = args[0]
            z = x.unflatten(-1, (self.n_heads, self.head_dim))  # [B, T, H, D]
            if self.scale.dim() == 3:  # one mask per batch row: [B, H] -> [B, 1, H, 1]
                s = self.scale[:, layer].to(device=x.device, dtype=x.dtype)[:, None, :, None]
            else:  # [H] -> [H, 1], broadcast over batch and positions
                s = self.scale[layer].to(device=x.device, dtype=x.dtype)[:, None]
            if self.method == "zero":
                z = z * s
            else:
                r = self.mean[layer].to(device=x.device, dtype=x.dtype)  # [H, D]
                if self.method == "resample" and self.donor is not None:
                    d = z[self.donor.clamp(min=0)]  # [B, T, H, D]: donors' slices
                    ok = (self.donor >= 0)[:, None] & self.donor_ok  # [B, T]
                    r = torch.where(ok[:, :, None, None], d, r)
                z = s * z + (1 - s) * r
            return (z.flatten(-2),) + tuple(args[1:])

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def donor_rows(ablation: Ablation, prompts: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Resample: the distinct donor prompts of a batch, to run as extra intact rows after its prompts ([] else)."""
    if not ablation.resample:
        return []
    return list(dict.fromkeys(d for d in (ablation.donors.get(p) for p in prompts) if d is not None))


def set_batch(
    hook: HeadScaler,
    keep: torch.Tensor,
    prompts: list[tuple[int, ...]],
    extra: list[tuple[int, ...]],
    ablation: Ablation,
    attention_mask: torch.Tensor,
) -> None:
    """Resample, one batch of ``prompts + extra`` rows: the prompts' rows under `keep` (``[L, H]`` for all of them or
    ``[len(prompts), L, H]`` one per row; may carry gradients), the donor rows intact, and each prompt row's donor
    row (-1: none, the mean)."""
    n, e = len(prompts), len(extra)
    where = {d: n + k for k, d in enumerate(extra)}
    donor = torch.tensor(
        [where.get(ablation.donors.get(p), -1) for p in prompts] + [-1] * e, device=attention_mask.device
    )
    shape = keep.shape[-2:]
    hook.scale = torch.cat([keep.expand(n, *shape), torch.ones(e, *shape, dtype=keep.dtype, device=keep.device)])
    hook.donor = donor
    hook.donor_ok = attention_mask[donor.clamp(min=0)].bool()


@contextmanager
def scaled_heads(model: nn.Module, scale: torch.Tensor | None) -> Iterator[HeadScaler | None]:
    """Zero ablation: ``with scaled_heads(model, mask): ...`` -- the hooks are gone after the block, even on error.
    ``scale=None`` means the intact model: no hook is installed at all."""
    if scale is None:
        yield None
        return
    scaler = HeadScaler(model, scale)
    try:
        yield scaler
    finally:
        scaler.remove()


@contextmanager
def intervened(model: nn.Module, keep: torch.Tensor | None, ablation: Ablation = ZERO) -> Iterator[HeadScaler | None]:
    """``with intervened(model, keep, Ablation("mean", mu)) as h: ...``; keep None = the intact model (no hook).
    For resample the caller sets ``h.scale``, ``h.donor`` and ``h.donor_ok`` per batch (``scoring.score`` does)."""
    if keep is None:
        yield None
        return
    scaler = HeadScaler(model, keep, ablation.method, ablation.mean)
    try:
        yield scaler
    finally:
        scaler.remove()


@contextmanager
def recorded_z(model: nn.Module) -> Iterator[list[torch.Tensor | None]]:
    """Record every layer's ``z`` (the output projection's input, ``[B, T, n_heads * head_dim]``) during the next
    forward pass."""
    projs, _, _ = out_projections(model)
    outs: list[torch.Tensor | None] = [None] * len(projs)

    def grab(i: int):
        def hook(_m: nn.Module, args: tuple) -> None:
            outs[i] = args[0].detach()

        return hook

    handles = [p.register_forward_pre_hook(grab(i)) for i, p in enumerate(projs)]
    try:
        yield outs
    finally:
        for h in handles:
            h.remove()
