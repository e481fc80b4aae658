"""Many head masks in one forward pass: each batch row is (prompt, mask), the mask on the batch dimension.

``probe_logits(loaded, prompts, probes, masks)`` returns the next-token logits of a few probe tokens at the
last real token of every prompt under every mask, as an array ``[n_masks, n_prompts, n_probes]``.

How: prompts are taken in length-sorted chunks (left-padded, explicit ``position_ids``). For each chunk one
intact pass records every decoder layer's output. Zeroing heads whose lowest layer is l changes nothing
below l, so masks are grouped by their lowest zeroed layer and, for a group, layers below l *replay* the
recorded outputs instead of computing (no per-architecture code: the layers are swapped for a function
returning the recorded tensor). Rows of one group (mask-major blocks of the chunk's prompts) run in batches
of up to ``batch_size`` rows with the per-row scale ``[rows, n_layers, n_heads]`` in ``heads.scaled_heads``.
The single-head scan is the case "every single-head mask" (about half the layers replayed); a random k-head
set replays about 1/(k+1) of them. The final layer's MLP runs only at the last position and the LM head only
for the probe tokens (the logits read).
A group's masks are split into the fewest, evenly sized batches. On CUDA an out-of-memory error halves the batch.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from entrainment.heads import _layer_list, scaled_heads
from entrainment.models import Loaded
from entrainment.scoring import collate, forward_last, model_device

log = logging.getLogger(__name__)


def _repeat_rows(x, times: int):
    """Repeat the batch dimension of a tensor (or of the tensors in a tuple) `times` times, block-wise."""
    if times == 1:
        return x
    if isinstance(x, torch.Tensor):
        return x.repeat(times, *([1] * (x.dim() - 1)))
    if isinstance(x, tuple):
        return tuple(_repeat_rows(v, times) for v in x)
    return x


@contextmanager
def recorded(layers: Sequence[torch.nn.Module]) -> Iterator[list]:
    """Record each layer's output during the next forward pass."""
    outs: list = [None] * len(layers)
    handles = [layer.register_forward_hook(lambda _m, _a, out, i=i: outs.__setitem__(i, out))
               for i, layer in enumerate(layers)]
    try:
        yield outs
    finally:
        for h in handles:
            h.remove()


@contextmanager
def replayed(layers: Sequence[torch.nn.Module], outputs: list, below: int, times: int) -> Iterator[None]:
    """Layers below `below` return their recorded outputs instead of computing. Only the last of them feeds a
    computing layer, so only its output is repeated `times` times; the others return theirs as recorded (their
    value is passed to a replayed layer, which ignores it)."""
    patched = []
    try:
        for i in range(below):
            out = _repeat_rows(outputs[i], times) if i == below - 1 else outputs[i]
            layers[i].forward = lambda *a, _out=out, **k: _out
            patched.append(layers[i])
        yield
    finally:
        for layer in patched:
            del layer.forward


@contextmanager
def last_position_mlp(layer: torch.nn.Module) -> Iterator[None]:
    """The final layer's MLP computes only the last position, the only one whose logits are read (exact there:
    an MLP acts on each position alone; the other positions get a broadcast view of it, never read)."""
    mlp = getattr(layer, "mlp", None)
    if mlp is None:
        yield
        return

    def forward(x, *a, _full=mlp.forward, **k):
        y = _full(x[:, -1:], *a, **k)
        return y.expand(x.shape[0], x.shape[1], y.shape[-1]) if isinstance(y, torch.Tensor) else _full(x, *a, **k)

    mlp.forward = forward
    try:
        yield
    finally:
        del mlp.forward


@contextmanager
def probe_head(model: torch.nn.Module, probes: torch.Tensor) -> Iterator[None]:
    """The LM head computes only each row's probe logits ([rows, P] token ids): ``[rows, T, P]`` instead of
    ``[rows, T, vocab]`` (a 49k-262k vocabulary otherwise costs about a tenth of a forward pass here)."""
    head = model.get_output_embeddings()

    def forward(x, _w=head.weight, _b=getattr(head, "bias", None)):
        out = torch.einsum("rtd,rpd->rtp", x, _w[probes].to(x.dtype))
        return out if _b is None else out + _b[probes][:, None, :].to(out.dtype)

    head.forward = forward
    try:
        yield
    finally:
        del head.forward


def balanced(n: int, cap: int) -> int:
    """The batch size that splits n masks into the fewest batches of at most `cap`, as evenly as possible
    (9 masks with cap 8: 5 + 4, not 8 + 1 -- a batch of one mask would run at a fraction of the speed)."""
    batches = -(-n // cap)
    return -(-n // batches)


def lowest_layer(mask: torch.Tensor) -> int:
    """The lowest layer with a head scaled away from 1 (n_layers if none)."""
    changed = (mask != 1).any(dim=1).nonzero()
    return int(changed[0]) if len(changed) else mask.shape[0]


def probe_logits(loaded: Loaded, prompts: Sequence[Sequence[int]], probes: Sequence[Sequence[int]],
                 masks: torch.Tensor, batch_size: int = 64, chunk: int = 16,
                 progress: Callable[[int], None] | None = None, bf16: bool = False) -> np.ndarray:
    """Logits ``[M, N, P]`` of probes[n] after prompts[n] with heads scaled by masks[m] (``[M, L, H]``).

    ``bf16``: run the forward passes under bfloat16 autocast (about 2x faster on a CPU with AVX512-BF16; the
    search-side computations use it, reported evaluation rows stay float32)."""
    n_masks, n_prompts = masks.shape[0], len(prompts)
    width = len(probes[0]) if n_prompts else 0
    out = np.zeros((n_masks, n_prompts, width), dtype=np.float64)
    if not n_masks or not n_prompts:
        return out
    model = loaded.model
    device = model_device(model)
    layers = _layer_list(model, loaded.info.n_layers)
    groups: dict[int, list[int]] = {}
    for m in range(n_masks):
        groups.setdefault(lowest_layer(masks[m]), []).append(m)
    order = sorted(range(n_prompts), key=lambda i: (len(prompts[i]), i))
    chunk = max(1, min(chunk, batch_size))
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16), \
            last_position_mlp(layers[-1]):
        for lo in range(0, n_prompts, chunk):
            idx = order[lo:lo + chunk]
            c = len(idx)
            ids, attn = collate([prompts[i] for i in idx], loaded.tokenizer.pad_token_id, device)
            probe_t = torch.tensor([list(probes[i]) for i in idx], dtype=torch.long, device=device)
            with recorded(layers) as outs, probe_head(model, probe_t):
                intact = forward_last(model, ids, attn, 1)[:, -1].float()  # [c, P]
            for below, members in sorted(groups.items()):
                if below >= len(layers):  # no head changed: the intact pass is the answer
                    vals = intact.cpu().numpy()
                    for m in members:
                        out[m, idx] = vals
                    continue
                per_batch = max(1, batch_size // c)
                k = 0
                while k < len(members):
                    group = members[k:k + balanced(len(members) - k, per_batch)]
                    try:
                        rows = masks[group].repeat_interleave(c, dim=0).to(device)  # mask-major blocks of c rows
                        with replayed(layers, outs, below, len(group)), scaled_heads(model, rows), \
                                probe_head(model, probe_t.repeat(len(group), 1)):
                            lg = forward_last(model, ids.repeat(len(group), 1), attn.repeat(len(group), 1), 1)[:, -1].float()
                    except torch.OutOfMemoryError:
                        if per_batch == 1:
                            raise
                        per_batch = max(1, per_batch // 2)
                        log.warning("out of memory: %d masks per batch", per_batch)
                        if torch.cuda.is_available():
                            torch.cuda.empty_cache()
                        continue
                    vals = lg.cpu().numpy().reshape(len(group), c, width)
                    for j, m in enumerate(group):
                        out[m, idx] = vals[j]
                    k += len(group)
            if progress:
                progress(c)
    return out


def head_masks(sets: Sequence[Sequence[tuple[int, int]]], n_layers: int, n_heads: int) -> torch.Tensor:
    """Keep-masks ``[len(sets), L, H]``: 0 at each set's heads, 1 elsewhere."""
    m = torch.ones(len(sets), n_layers, n_heads)
    for i, heads in enumerate(sets):
        for layer, head in heads:
            m[i, layer, head] = 0.0
    return m


def single_head_masks(n_layers: int, n_heads: int) -> torch.Tensor:
    """Every single-head ablation, ``[L * H, L, H]`` in (layer, head) order."""
    return head_masks([((layer, head),) for layer in range(n_layers) for head in range(n_heads)], n_layers, n_heads)
