"""Entrainment-head discovery: learn a binary keep-mask over all attention heads (weights frozen).

Per step (the paper's recipe, with its code's conventions):
  m    = hard(sigmoid((l + g) / tau))   g ~ Logistic(0, 1), hard 0/1 at 0.5 forward, soft gradient backward
  loss = CE([logit_gold, logit_distractor], target = gold)  -  lambda * mean(sigmoid(l))
The 2-way CE is read at the last *real* token of each left-padded prompt. Only the mask logits
``l`` ([n_layers, n_heads]) have gradients and optimizer state. A head is removed iff ``l <= 0``.

After every epoch the deterministic mask is evaluated on the dev split (dev delta = mean gold minus
distractor logit, pairwise accuracy, heads removed) and logged. **Selection rule**: among epochs
>= 1, and the intact model (epoch 0 when it removes no head), whose dev delta is within 5% of the
best dev delta, take the one removing the fewest heads (ties -> the earliest). A search that never
beats the intact model on dev therefore selects no heads. Every epoch's mask is kept so the rule can
be applied afterwards.

Searches: every seed runs on the full training split (resample 0) and on ``resamples - 1`` seeded bootstrap
resamples of it (``bootstrap``); ``entrainment.stability`` turns them into inclusion frequencies and the stable
set. Early stopping (``patience``): a search ends once the selection rule's pick has not changed for `patience`
epochs, counted from the first epoch whose mask removes a head (``early_stop_epoch``); since the rule only looks
back, the pick is the one the full budget would give whenever the pick is fixed that early.

Removal method (``heads.Ablation``): the sampled mask interpolates ``z' = m z + (1 - m) r`` with r = 0, the head's
reference mean or a donor's slice (resample runs each batch's donors as extra intact rows), so a search under
mean or resample learns heads under that method.

Start value: ``init`` is the mean of the initial mask logits (std 0.01). The paper's N(0, 0.01)
(``init = 0``) starts with about half of the heads dropped in each sampled mask; we default to
``init = 3`` (all heads kept, about 5% dropped per sample) -- see README for the measured reasons.
AdamW's weight decay defaults to 0 here (the paper's code left PyTorch's 0.01, which with lr 1.0
drags every logit toward 0, the 50/50 point).

Longer than 300 lines on purpose: the search, its loss, its selection rule and early stopping are one algorithm and
stay in one place (the selection rule and early stopping read the same log rows).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from entrainment.config import default
from entrainment.heads import ZERO, Ablation, donor_rows, intervened, set_batch
from entrainment.models import Loaded
from entrainment.scoring import Request, collate, forward_last, score
from entrainment.tokens import Tokens

log = logging.getLogger(__name__)

WITHIN = 0.05  # the selection rule's tolerance on dev delta
SHARED = "shared"  # the mask_relation of a mask trained on the union of the discovery relations' items


@dataclass(frozen=True)
class SearchParams:
    """Search hyper-parameters; defaults are the pipeline's (entrainment.config.Config)."""

    epochs: int = default("epochs")
    batch_size: int = default("discover_batch_size")
    lr: float = default("lr")
    lam: float = default("lam")
    tau: float = default("tau")
    weight_decay: float = default("weight_decay")
    init: float = default("init")
    seed: int = 0
    bf16: bool | None = None  # bf16 autocast for the training forward; None = on CUDA only (evaluation stays float32)
    patience: int = 0  # early stopping (0 = off; the pipeline passes Config.early_stop_patience)


@dataclass(frozen=True)
class Item:
    prompt: tuple[int, ...]
    gold: int
    distractor: int


def items_from(prompts: pl.DataFrame, tk: Tokens) -> list[Item]:
    """(prompt ids, gold first token, distractor first token); collisions (equal first tokens) dropped."""
    return [it for it, _ in items_with_rows(prompts, tk)]


def items_with_rows(prompts: pl.DataFrame, tk: Tokens) -> list[tuple[Item, dict]]:
    """items_from's items, each with its prompt row (for groups, templates, donors)."""
    out = []
    for r in prompts.iter_rows(named=True):
        g = tk.answer(r["text_base"], r["gold"])[0]
        d = tk.answer(r["text_base"], r["distractor"])[0]
        if g != d:
            out.append((Item(tk.prompt(r["text_ctx"]), g, d), r))
    return out


def bootstrap(items: list[Item], resample: int, seed: int) -> list[Item]:
    """Resample 0: the items themselves; r >= 1: a seeded bootstrap resample (same size, with replacement)."""
    if resample == 0:
        return list(items)
    rng = random.Random(f"bootstrap|{seed}|{resample}")
    return [items[rng.randrange(len(items))] for _ in items]


def gumbel_sigmoid_st(logits: torch.Tensor, tau: float, generator: torch.Generator, eps: float = 1e-10) -> torch.Tensor:
    """Hard 0/1 sample forward, soft sigmoid gradient backward (logistic noise = difference of Gumbels)."""
    u = torch.rand((2,) + tuple(logits.shape), generator=generator, device=logits.device, dtype=logits.dtype)
    noise = -torch.log(torch.log(u[1] + eps) / torch.log(u[0] + eps) + eps)
    soft = torch.sigmoid((logits + noise) / tau)
    return (soft > 0.5).to(soft.dtype) - soft.detach() + soft


def make_batches(items: list[Item], batch_size: int, rng: random.Random) -> list[list[Item]]:
    """Length-bucketed batches (little padding), visited in a seeded random order."""
    order = sorted(range(len(items)), key=lambda i: (len(items[i].prompt), i))
    batches = [[items[i] for i in order[k : k + batch_size]] for k in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def step_loss(
    loaded: Loaded,
    batch: list[Item],
    scale: torch.Tensor,
    mask_logits: torch.Tensor,
    lam: float,
    bf16: bool | None = None,
    ablation: Ablation = ZERO,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, effect term) for one batch under one sampled mask, heads removed by `ablation`'s method."""
    model = loaded.model
    device = mask_logits.device
    prompts = [it.prompt for it in batch]
    extra = donor_rows(ablation, prompts)
    ids, attn = collate(prompts + extra, loaded.tokenizer.pad_token_id, device)
    use_bf16 = device.type == "cuda" if bf16 is None else bf16
    with (
        intervened(model, scale, ablation) as hook,
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16),
    ):
        if extra:
            set_batch(hook, scale, prompts, extra, ablation, attn)
        lg = forward_last(model, ids, attn, 1)[: len(batch), -1].float()
    b = torch.arange(len(batch), device=device)
    pair = torch.stack(
        [
            lg[b, torch.tensor([i.gold for i in batch], device=device)],
            lg[b, torch.tensor([i.distractor for i in batch], device=device)],
        ],
        -1,
    )
    effect = F.cross_entropy(pair, torch.zeros(len(batch), dtype=torch.long, device=device))
    return effect - lam * torch.sigmoid(mask_logits).mean(), effect


def evaluate_items(
    loaded: Loaded, items: list[Item], keep: torch.Tensor | None, batch_size: int = 32, ablation: Ablation = ZERO
) -> np.ndarray:
    """Per-item gold - distractor logit with heads removed by `keep` (None = intact), in item order."""
    if not items:
        return np.zeros(0)
    reqs = [Request(it.prompt) for it in items]
    res = score(
        loaded.model,
        reqs,
        [(it.gold, it.distractor) for it in items],
        loaded.tokenizer.pad_token_id,
        batch_size,
        keep=keep,
        ablation=ablation,
    )
    return np.array([r.probe_logit[0] - r.probe_logit[1] for r in res])


def evaluate(
    loaded: Loaded, items: list[Item], keep: torch.Tensor | None, batch_size: int = 32, ablation: Ablation = ZERO
) -> tuple[float, float]:
    """(mean gold - distractor logit, share with gold > distractor) with heads removed by `keep`."""
    if not items:
        return float("nan"), float("nan")
    deltas = evaluate_items(loaded, items, keep, batch_size, ablation)
    return float(deltas.mean()), float((deltas > 0).mean())


def select_epoch(log_rows: list[dict], within: float = WITHIN) -> int:
    """The selection rule (see module docstring) over rows with keys epoch, dev_delta, n_removed.

    The intact model (epoch 0 when it removes no head) is a candidate too: a search that never beats it on dev
    selects no heads rather than a mask that makes dev Δ worse."""
    rows = [r for r in log_rows if (r["epoch"] >= 1 or r["n_removed"] == 0) and r["dev_delta"] == r["dev_delta"]]
    if not rows:
        return 0
    best = max(r["dev_delta"] for r in rows)
    ok = [r for r in rows if best - r["dev_delta"] <= within * abs(best)]
    return min(ok, key=lambda r: (r["n_removed"], r["epoch"]))["epoch"]


def _stopped_at(log_rows: list[dict], patience: int, within: float = WITHIN) -> int | None:
    """The epoch at which early stopping ends the search (see early_stop_epoch), or None if it does not."""
    if patience <= 0:
        return None
    pick, still = None, 0
    for i, r in enumerate(log_rows):
        now = select_epoch(log_rows[: i + 1], within)
        found = log_rows[now]["n_removed"] > 0 if now < len(log_rows) else False
        still = still + 1 if found and now == pick else 0
        pick = now
        if still >= patience:
            return r["epoch"]
    return None


def early_stop_epoch(log_rows: list[dict], patience: int, within: float = WITHIN) -> int:
    """The epoch after which early stopping ends a search: the first epoch e at which the selection rule's pick
    (over epochs 0..e) is a mask that removes heads and has stayed the same for `patience` epochs. While the pick
    is still the intact model the search has found nothing yet and goes on. The last epoch if that never happens;
    patience 0 never stops early."""
    stop = _stopped_at(log_rows, patience, within)
    return log_rows[-1]["epoch"] if stop is None else stop


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def search(
    loaded: Loaded,
    train: list[Item],
    dev: list[Item],
    params: SearchParams,
    checkpoint: Path | None = None,
    progress: Callable[[dict], None] | None = None,
    ablation: Ablation = ZERO,
) -> tuple[list[dict], list[torch.Tensor]]:
    """Run the mask search; returns (one log row per epoch incl. epoch 0, the mask logits after each epoch).

    Args:
        loaded: the model (weights frozen).
        train: training items (a bootstrap resample may repeat items).
        dev: dev items (the selection rule's Δ).
        params: hyper-parameters, seed, bf16, early-stopping patience.
        checkpoint: state saved after every epoch; a rerun resumes from it and equals an uninterrupted run with
            the same seed (all randomness comes from seeded generators saved in the checkpoint).
        progress: called with each epoch's log row.
        ablation: how removed heads are replaced while training and on dev.
    Returns:
        (log rows, mask logits after each epoch); fewer than params.epochs + 1 when early stopping ended it.
    """
    info = loaded.info
    device = next(loaded.model.parameters()).device
    if not train:
        raise ValueError("no training items (check --train-conditions and the train split)")
    torch.manual_seed(params.seed)
    gen = torch.Generator(device=device).manual_seed(params.seed)
    init_gen = torch.Generator().manual_seed(params.seed)
    mask_logits = torch.nn.Parameter(
        (params.init + 0.01 * torch.randn(info.n_layers, info.n_heads, generator=init_gen)).to(device)
    )
    opt = torch.optim.AdamW([mask_logits], lr=params.lr, weight_decay=params.weight_decay)
    rng = random.Random(f"batches|{params.seed}")
    rows: list[dict] = []
    history: list[torch.Tensor] = []
    start = 1
    if checkpoint is not None and checkpoint.exists():
        st = torch.load(checkpoint, weights_only=False)
        if st["params"] == asdict(params) and st["n_train"] == len(train):
            with torch.no_grad():
                mask_logits.copy_(st["mask_logits"].to(device))
            opt.load_state_dict(st["opt"])
            gen.set_state(st["gen"])
            rng.setstate(st["rng"])
            rows, history, start = st["rows"], st["history"], st["epoch"] + 1
            log.info("resumed mask search from %s at epoch %d", checkpoint, start)
    if start == 1:
        d, a = evaluate(loaded, dev, (mask_logits.detach() > 0).float(), ablation=ablation)
        rows.append(
            {
                "epoch": 0,
                "loss": float("nan"),
                "effect_loss": float("nan"),
                "sparsity": torch.sigmoid(mask_logits).mean().item(),
                "n_removed": int((mask_logits <= 0).sum()),
                "dev_delta": d,
                "dev_acc": a,
                "seconds": 0.0,
            }
        )
        history.append(mask_logits.detach().cpu().clone())
    for epoch in range(start, params.epochs + 1):
        if _stopped_at(rows, params.patience) is not None:
            break
        t0 = time.perf_counter()
        losses, effects = [], []
        for batch in make_batches(train, params.batch_size, rng):
            scale = gumbel_sigmoid_st(mask_logits, params.tau, gen)
            loss, effect = step_loss(loaded, batch, scale, mask_logits, params.lam, params.bf16, ablation)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            effects.append(effect.item())
        keep = (mask_logits.detach() > 0).float()
        d, a = evaluate(loaded, dev, keep, ablation=ablation)
        row = {
            "epoch": epoch,
            "loss": sum(losses) / len(losses),
            "effect_loss": sum(effects) / len(effects),
            "sparsity": torch.sigmoid(mask_logits).mean().item(),
            "n_removed": int((keep == 0).sum()),
            "dev_delta": d,
            "dev_acc": a,
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        history.append(mask_logits.detach().cpu().clone())
        if checkpoint is not None:
            _save(
                checkpoint,
                {
                    "params": asdict(params),
                    "n_train": len(train),
                    "epoch": epoch,
                    "mask_logits": mask_logits.detach().cpu(),
                    "opt": opt.state_dict(),
                    "gen": gen.get_state(),
                    "rng": rng.getstate(),
                    "rows": rows,
                    "history": history,
                },
            )
        if progress:
            progress(row)
    return rows, history


def removed_heads(logits: torch.Tensor) -> tuple[tuple[int, int], ...]:
    """The heads a deterministic mask removes (keep logit <= 0), sorted."""
    return tuple(sorted((int(a), int(b)) for a, b in (logits <= 0).nonzero().tolist()))
