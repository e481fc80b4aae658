"""Many head masks in one forward pass: each batch row is (prompt, mask), the mask on the batch dimension.

``probe_logits(loaded, prompts, probes, masks)`` returns the next-token logits of a few probe tokens at the
last real token of every prompt under every mask, as an array ``[n_masks, n_prompts, n_probes]``.

How: prompts are taken in length-sorted chunks (left-padded, explicit ``position_ids``). For each chunk one
intact pass records every decoder layer's output. Zeroing heads whose lowest layer is l changes nothing
below l, so masks are grouped by their lowest zeroed layer and, for a group, layers below l *replay* the
recorded outputs instead of computing (no per-architecture code: the layers are swapped for a function
returning the recorded tensor). Rows of one group (mask-major blocks of the chunk's prompts) run in batches
of up to ``batch_size`` rows with the per-row scale ``[rows, n_layers, n_heads]`` in ``hooks.scaled_heads``.
The single-head scan is the case "every single-head mask" (about half the layers replayed); a random k-head
set replays about 1/(k+1) of them. The final layer's MLP runs only at the last position and the LM head only
for the probe tokens (the logits read).
A group's masks are split into the fewest, evenly sized batches. On CUDA an out-of-memory error halves the batch.

Any ablation method (``hooks.Ablation``): mean replaces a removed head by its reference mean; resample appends the
chunk's donor prompts as extra intact rows -- once per batch, whatever the number of masks in it -- whose slices
replace the removed heads of the rows they donate to. Layer replay stays exact (no replacement in a layer changes
anything below it) and nothing is stored per item.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from entrainment.model.hooks import ZERO, Ablation, decoder_layers, intervened
from entrainment.model.loading import Loaded
from entrainment.model.oom import halving
from entrainment.model.scoring import collate, forward_last, model_device


def _take_rows(x, rows: torch.Tensor):
    """Rows `rows` of a tensor's batch dimension (or of the tensors in a tuple)."""
    if isinstance(x, torch.Tensor):
        return x.index_select(0, rows.to(x.device))
    if isinstance(x, tuple):
        return tuple(_take_rows(v, rows) for v in x)
    return x


@contextmanager
def recorded(layers: Sequence[torch.nn.Module]) -> Iterator[list]:
    """Record each layer's output during the next forward pass."""
    outs: list = [None] * len(layers)
    handles = [
        layer.register_forward_hook(lambda _m, _a, out, i=i: outs.__setitem__(i, out)) for i, layer in enumerate(layers)
    ]
    try:
        yield outs
    finally:
        for h in handles:
            h.remove()


@contextmanager
def replayed(layers: Sequence[torch.nn.Module], outputs: list, below: int, rows: torch.Tensor) -> Iterator[None]:
    """Layers below `below` return their recorded outputs instead of computing. Only the last of them feeds a
    computing layer, so only its output is laid out as this batch's rows (`rows` indexes the recorded batch); the
    others return theirs as recorded (their value is passed to a replayed layer, which ignores it)."""
    patched = []
    try:
        for i in range(below):
            out = _take_rows(outputs[i], rows) if i == below - 1 else outputs[i]
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


def probe_logits(
    loaded: Loaded,
    prompts: Sequence[Sequence[int]],
    probes: Sequence[Sequence[int]],
    masks: torch.Tensor,
    batch_size: int = 64,
    chunk: int = 16,
    progress: Callable[[int], None] | None = None,
    bf16: bool = False,
    ablation: Ablation = ZERO,
) -> np.ndarray:
    """Logits ``[M, N, P]`` of probes[n] after prompts[n] with heads removed by masks[m] (``[M, L, H]``).

    Args:
        loaded: the model.
        prompts: token ids per item.
        probes: the token ids read per item (same count for every item).
        masks: keep-masks, one per head set.
        batch_size: rows per forward pass (halved on out-of-memory).
        chunk: items per intact recording pass.
        progress: called with the number of items finished.
        bf16: run under bfloat16 autocast (search-side passes only; reported rows stay float32).
        ablation: how removed heads are replaced (zero, mean, resample with donors keyed by prompt).
    Returns:
        float64 array [n_masks, n_prompts, n_probes].
    """
    n_masks, n_prompts = masks.shape[0], len(prompts)
    width = len(probes[0]) if n_prompts else 0
    out = np.zeros((n_masks, n_prompts, width), dtype=np.float64)
    if not n_masks or not n_prompts:
        return out
    model = loaded.model
    device = model_device(model)
    layers = decoder_layers(model, loaded.info.n_layers)
    groups: dict[int, list[int]] = {}
    for m in range(n_masks):
        groups.setdefault(lowest_layer(masks[m]), []).append(m)
    order = sorted(range(n_prompts), key=lambda i: (len(prompts[i]), i))
    chunk = max(1, min(chunk, batch_size))
    ones = torch.ones(1, *masks.shape[1:])
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16),
        last_position_mlp(layers[-1]),
        intervened(model, ones[0], ablation) as hook,
    ):
        for lo in range(0, n_prompts, chunk):
            idx = order[lo : lo + chunk]
            c = len(idx)
            items = [tuple(prompts[i]) for i in idx]
            extra = (
                list(dict.fromkeys(d for d in (ablation.donors.get(p) for p in items) if d is not None))
                if ablation.resample
                else []
            )
            e = len(extra)
            ids, attn = collate(items + extra, loaded.tokenizer.pad_token_id, device)
            probe_t = torch.tensor(
                [list(probes[i]) for i in idx] + [list(probes[idx[0]])] * e, dtype=torch.long, device=device
            )
            donor_of = [
                c + extra.index(ablation.donors[p]) if ablation.resample and p in ablation.donors else -1 for p in items
            ]
            hook.scale, hook.donor = None, None  # the intact recording pass: no head touched
            with recorded(layers) as outs, probe_head(model, probe_t):
                intact = forward_last(model, ids, attn, 1)[:c, -1].float()  # [c, P]
            for below, members in sorted(groups.items()):
                if below >= len(layers):  # no head changed: the intact pass is the answer
                    vals = intact.cpu().numpy()
                    for m in members:
                        out[m, idx] = vals
                    continue
                k = 0
                per_batch = max(1, batch_size // c)
                while k < len(members):

                    def attempt(b: int) -> list[int]:
                        group = members[k : k + balanced(len(members) - k, b)]
                        g = len(group)
                        rows = torch.cat([torch.arange(c).repeat(g), torch.arange(c, c + e)])
                        hook.scale = torch.cat([masks[group].repeat_interleave(c, dim=0), ones.expand(e, -1, -1)])
                        if ablation.resample:
                            d = torch.tensor(
                                [
                                    (g * c + donor_of[i] - c) if donor_of[i] >= 0 else -1
                                    for _ in range(g)
                                    for i in range(c)
                                ]
                                + [-1] * e,
                                device=device,
                            )
                            hook.donor, hook.donor_ok = d, attn[rows.to(device)][d.clamp(min=0)].bool()
                        with replayed(layers, outs, below, rows), probe_head(model, probe_t[rows.to(device)]):
                            lg = forward_last(model, ids[rows.to(device)], attn[rows.to(device)], 1)[: g * c, -1]
                        vals = lg.float().cpu().numpy().reshape(g, c, width)
                        for j, m in enumerate(group):
                            out[m, idx] = vals[j]
                        return group

                    group, per_batch = halving(per_batch, attempt, "masks per batch")
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
