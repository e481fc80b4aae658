"""Entrainment-head discovery: learn a binary keep-mask over all attention heads (weights frozen).

Per optimiser step (the paper's recipe, with its code's conventions), for every row b of the batch:
  m_b  = hard(sigmoid((l + g_b) / tau))   g_b ~ Logistic(0, 1) drawn for that row; hard 0/1 at 0.5 forward,
                                          soft gradient backward
  loss = mean_b CE([logit_gold, logit_distractor], target = gold)  -  lambda * mean(sigmoid(l))
The 2-way CE is read at the last *real* token of each left-padded prompt. Only the mask logits ``l``
([n_layers, n_heads]) have gradients and optimizer state. A head is removed iff ``l <= 0``. Each row has its own
Gumbel sample (the head hook takes ``[B, L, H]``), so one step averages the gradient over B sampled masks instead
of one, and every batch has exactly ``batch_size`` rows: an epoch's remainder is filled up with the first items of
that epoch's seeded permutation (``make_batches``), so no step is driven by a handful of items.

**Budget and convergence.** A search runs at most ``max_steps`` optimiser steps (and at most ``epochs`` passes over
its training sample). It has **converged** once the deterministic mask (l <= 0) has not changed for
``converge_steps`` consecutive steps, counted only after it first differs from the starting mask (a start that keeps
every head is not a converged mask); a converged search stops there. ``converged`` and ``step`` are reported per
search. The old patience rule (stop once the selection rule's pick has not changed for P epochs) is gone: the
project's 100-epoch run showed it does not return the pick of the full budget (docs/benchmarks.md).

**Dev evaluation and the selection rule.** After every epoch (and at the last step) the deterministic mask is
evaluated on the dev split: dev delta (mean gold minus distractor logit), pairwise accuracy, heads removed, and
``dev_se``, the standard error of dev delta from a bootstrap over the dev *subjects* (the unit of a claim about new
subjects; fixed seeded resamples). The rule is fixed in advance (``selection_rule``):
- ``one_se`` (default): among epochs >= 1, and the intact model (epoch 0 when it removes no head), take those whose
  dev delta is within one standard error (``dev_se`` of the best epoch) of the best dev delta, and of them the one
  removing the fewest heads (ties -> the earliest);
- ``within_5pct`` (the previous rule): the same with a tolerance of 5% of the best dev delta.
A search that never beats the intact model on dev beyond the noise therefore selects no heads. Every epoch's mask is
kept so any rule can be applied afterwards.

Training samples (``resample_items``): resample 0 is the full training split; r >= 1 is a subject-level
half-sample (``half``: the training subjects split at random into two disjoint halves without replacement; odd r
takes the first half of split (r + 1) // 2, even r its complement, as complementary pairs) or a seeded bootstrap of
the items (``bootstrap``). ``entrainment.heads.stability`` turns the searches into inclusion frequencies and the
stable set.

**Many searches in one pass** (``search_many``): several searches (seeds, half-samples) share each forward and
backward pass, their rows stacked on the batch axis, each row under its own search's sampled mask, each search with
its own logits, AdamW state, Gumbel generator and batch order. A search's gradient comes from its own rows only, so
its trajectory is that of the search run alone (up to floating-point summation order).

Removal method (``hooks.Ablation``): the sampled mask interpolates ``z' = m z + (1 - m) r`` with r = 0, the head's
reference mean or a donor's slice (resample runs each batch's donors as extra intact rows), so a search under
mean or resample learns heads under that method.

Start value: ``init`` is the mean of the initial mask logits (std 0.01); the paper: 0, with AdamW's weight decay
0.01 (the ``paper`` preset, configs/search-paper.toml); the defaults: init 3, weight decay 0. Step size: AdamW at
``lr``, optionally after a linear warm-up (``warmup_steps``, ``step_lr``; default none): Adam's first steps move every
logit by about the rate whatever its gradient, which is where seeds on the same data part (docs/searches.md).

Longer than 300 lines on purpose: the search, its loss, its budget, its convergence test and its selection rule are
one algorithm and stay in one place (the selection rule and the convergence test read the same log rows).
"""

from __future__ import annotations

import io
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from entrainment.config import default
from entrainment.model.hooks import ZERO, Ablation, donor_rows, intervened, set_batch
from entrainment.model.loading import Loaded
from entrainment.model.scoring import Request, collate, forward_last, score
from entrainment.model.tokens import Item, Tokens, items_with_rows
from entrainment.store import files

log = logging.getLogger(__name__)

WITHIN = 0.05  # the within_5pct rule's tolerance on dev delta

ONE_SE = "one_se"
WITHIN_5PCT = "within_5pct"
SELECTION_RULES = (ONE_SE, WITHIN_5PCT)
SE_DRAWS = 200  # bootstrap resamples of the dev subjects behind dev_se
# Named search settings (Config fields). `paper`: the released head-search code's setting -- logits started at
# N(0, 0.01) (init 0, std 0.01), AdamW lr 1 with PyTorch's default weight decay 0.01, lambda 1, tau 1, the 2-way CE
# -- the faithful reference arm (configs/search-paper.toml runs it to convergence).
PRESETS: dict[str, dict[str, float]] = {
    "paper": {"init": 0.0, "weight_decay": 0.01, "lr": 1.0, "lam": 1.0, "tau": 1.0},
}


@dataclass(frozen=True)
class SearchParams:
    """Search hyper-parameters; defaults are the pipeline's (entrainment.config.Config)."""

    epochs: int = default("epochs")
    batch_size: int = default("discover_batch_size")
    lr: float = default("lr")
    warmup_steps: int = default("warmup_steps")  # linear lr warm-up over this many steps (0 = none)
    lam: float = default("lam")
    tau: float = default("tau")
    weight_decay: float = default("weight_decay")
    init: float = default("init")
    seed: int = 0
    bf16: bool | None = None  # bf16 autocast for the training forward; None = on CUDA only (evaluation stays float32)
    max_steps: int = default("max_steps")  # the budget in optimiser steps
    converge_steps: int = default("converge_steps")  # converged: the mask unchanged for this many steps
    selection_rule: str = default("selection_rule")


def items_from(prompts: pl.DataFrame, tk: Tokens) -> list[Item]:
    """(prompt ids, gold first token, distractor first token); collisions (equal first tokens) dropped."""
    return [it for it, _ in items_with_rows(prompts, tk)]


def units(items: Sequence[Item]) -> list[str]:
    """Each item's resampling unit: its subject, or the item itself when it has none."""
    return [it.subject or f"#item{i}" for i, it in enumerate(items)]


def bootstrap(items: list[Item], resample: int, seed: int) -> list[Item]:
    """Resample 0: the items themselves; r >= 1: a seeded bootstrap resample (same size, with replacement)."""
    if resample == 0:
        return list(items)
    rng = random.Random(f"bootstrap|{seed}|{resample}")
    return [items[rng.randrange(len(items))] for _ in items]


def half_sample(items: list[Item], resample: int, seed: int) -> list[Item]:
    """Resample 0: the items themselves; r >= 1: a subject-level half-sample drawn without replacement. The
    subjects are split at random (seeded by seed and (r + 1) // 2) into two disjoint halves; odd r keeps the items
    of the first half, even r those of its complement (complementary pairs, Shah & Samworth 2013)."""
    if resample == 0:
        return list(items)
    us = units(items)
    subjects = sorted(set(us))
    random.Random(f"half|{seed}|{(resample + 1) // 2}").shuffle(subjects)
    first = set(subjects[: len(subjects) // 2])
    keep = (lambda u: u in first) if resample % 2 else (lambda u: u not in first)
    return [it for it, u in zip(items, us) if keep(u)]


def resample_items(items: list[Item], resample: int, seed: int, scheme: str = "half") -> list[Item]:
    """The training sample of search (seed, resample) under `scheme` (half | bootstrap)."""
    if scheme == "half":
        return half_sample(items, resample, seed)
    if scheme == "bootstrap":
        return bootstrap(items, resample, seed)
    raise ValueError(f"unknown resampling scheme {scheme!r} (expected half or bootstrap)")


def gumbel_sigmoid_st(
    logits: torch.Tensor, tau: float, generator: torch.Generator, rows: int | None = None, eps: float = 1e-10
) -> torch.Tensor:
    """Hard 0/1 sample forward, soft sigmoid gradient backward (logistic noise = difference of Gumbels).

    Args:
        logits: keep logits [L, H].
        tau: temperature.
        generator: the search's seeded generator (samples are reproducible from its seed).
        rows: None -> one sample [L, H]; an int -> one independent sample per batch row, [rows, L, H].
    Returns:
        The straight-through sample."""
    shape = tuple(logits.shape) if rows is None else (rows,) + tuple(logits.shape)
    u = torch.rand((2,) + shape, generator=generator, device=logits.device, dtype=logits.dtype)
    noise = -torch.log(torch.log(u[1] + eps) / torch.log(u[0] + eps) + eps)
    soft = torch.sigmoid((logits + noise) / tau)
    return (soft > 0.5).to(soft.dtype) - soft.detach() + soft


def make_batches(items: list[Item], batch_size: int, rng: random.Random) -> list[list[Item]]:
    """One epoch's batches, all of exactly min(batch_size, len(items)) rows: the items in a seeded random order,
    the remainder filled up with the first items of that order (each item at least once per epoch, a few twice),
    then length-bucketed (little padding) and visited in a seeded random order."""
    n = len(items)
    b = min(batch_size, n)
    n_batches = -(-n // b)
    perm = list(range(n))
    rng.shuffle(perm)
    full = perm + perm[: n_batches * b - n]
    order = sorted(range(len(full)), key=lambda k: (len(items[full[k]].prompt), full[k], k))
    batches = [[items[full[k]] for k in order[j : j + b]] for j in range(0, len(order), b)]
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
    """(loss, effect term) for one batch under sampled masks (`scale` [L, H] shared, or [B, L, H] one per row),
    heads removed by `ablation`'s method."""
    losses, effects = step_losses(loaded, [batch], [scale], [mask_logits], [lam], bf16, ablation)
    return losses[0], effects[0]


def step_losses(
    loaded: Loaded,
    batches: Sequence[list[Item]],
    scales: Sequence[torch.Tensor],
    mask_logits: Sequence[torch.Tensor],
    lams: Sequence[float],
    bf16: bool | None = None,
    ablation: Ablation = ZERO,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per search s: (loss, effect term) of batches[s] under scales[s], all searches in one forward pass (their
    rows stacked on the batch axis, each row under its own search's sampled mask)."""
    model = loaded.model
    device = mask_logits[0].device
    n_layers, n_heads = mask_logits[0].shape
    rows = [(s if s.dim() == 3 else s.expand(len(b), n_layers, n_heads)).to(device) for s, b in zip(scales, batches)]
    keep = torch.cat(rows)
    prompts = [it.prompt for b in batches for it in b]
    extra = donor_rows(ablation, prompts)
    ids, attn = collate(prompts + extra, loaded.tokenizer.pad_token_id, device)
    use_bf16 = device.type == "cuda" if bf16 is None else bf16
    with (
        intervened(model, keep, ablation) as hook,
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16),
    ):
        if extra:
            set_batch(hook, keep, prompts, extra, ablation, attn)
        lg = forward_last(model, ids, attn, 1)[: len(prompts), -1].float()
    items = [it for b in batches for it in b]
    r = torch.arange(len(items), device=device)
    pair = torch.stack(
        [
            lg[r, torch.tensor([i.gold for i in items], device=device)],
            lg[r, torch.tensor([i.distractor for i in items], device=device)],
        ],
        -1,
    )
    ce = F.cross_entropy(pair, torch.zeros(len(items), dtype=torch.long, device=device), reduction="none")
    losses, effects, at = [], [], 0
    for b, logits, lam in zip(batches, mask_logits, lams):
        effect = ce[at : at + len(b)].mean()
        at += len(b)
        effects.append(effect)
        losses.append(effect - lam * torch.sigmoid(logits).mean())
    return losses, effects


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


def subject_se(values: np.ndarray, groups: Sequence[str], draws: int = SE_DRAWS, key: str = "dev-se") -> float:
    """Standard error of the mean of `values` from a bootstrap over their groups (subjects): the groups are drawn
    with replacement (fixed seeded draws), the mean taken over the items of the drawn groups; NaN with < 2 groups."""
    names = sorted(set(groups))
    if len(names) < 2 or len(values) == 0:
        return float("nan")
    index = {g: i for i, g in enumerate(names)}
    gi = np.array([index[g] for g in groups])
    sums = np.bincount(gi, weights=np.asarray(values, dtype=float), minlength=len(names))
    counts = np.bincount(gi, minlength=len(names)).astype(float)
    rng = np.random.default_rng(int.from_bytes(key.encode()[:8].ljust(8, b"\0"), "little"))
    pick = rng.integers(0, len(names), size=(draws, len(names)))
    means = sums[pick].sum(1) / counts[pick].sum(1)
    return float(means.std(ddof=1))


def _candidates(log_rows: list[dict]) -> list[dict]:
    return [r for r in log_rows if (r["epoch"] >= 1 or r["n_removed"] == 0) and r["dev_delta"] == r["dev_delta"]]


def select_epoch(log_rows: list[dict], within: float = WITHIN, rule: str = ONE_SE) -> int:
    """The selection rule (see module docstring) over rows with keys epoch, dev_delta, n_removed (and dev_se for
    one_se; a missing or NaN dev_se counts as 0, i.e. the best epoch's size).

    Args:
        log_rows: the search's log rows.
        within: the within_5pct rule's relative tolerance.
        rule: one_se | within_5pct.
    Returns:
        The selected epoch (0 = the intact model when no candidate beats it)."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r} (expected one of {', '.join(SELECTION_RULES)})")
    rows = _candidates(log_rows)
    if not rows:
        return 0
    best = max(rows, key=lambda r: (r["dev_delta"], -r["epoch"]))
    if rule == ONE_SE:
        se = best.get("dev_se", 0.0)
        tol = se if se == se else 0.0
    else:
        tol = within * abs(best["dev_delta"])
    ok = [r for r in rows if best["dev_delta"] - r["dev_delta"] <= tol + 1e-12]
    return min(ok, key=lambda r: (r["n_removed"], r["epoch"]))["epoch"]


def step_lr(p: SearchParams, step: int) -> float:
    """The learning rate of optimiser step `step` (1-based): lr after a linear warm-up of p.warmup_steps steps."""
    return p.lr * min(1.0, step / p.warmup_steps) if p.warmup_steps > 0 else p.lr


def converged_at(masks: Sequence[torch.Tensor], converge_steps: int) -> int | None:
    """The convergence test on a sequence of deterministic masks (masks[0] = the start, masks[t] = after step t):
    the first step t at which the mask has not changed for `converge_steps` steps, counted only once it first
    differs from the start; None if that never happens."""
    still, moved = 0, False
    for t in range(1, len(masks)):
        same = torch.equal(masks[t], masks[t - 1])
        moved = moved or not torch.equal(masks[t], masks[0])
        still = still + 1 if same and moved else 0
        if moved and still >= converge_steps:
            return t
    return None


def _save(path: Path, state: dict) -> None:
    """A resume checkpoint, written atomically (files.atomic_write_bytes: unique temp file, fsync, rename)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    files.atomic_write_bytes(path, buf.getvalue())


@dataclass
class _Run:
    """One search's state inside search_many."""

    params: SearchParams
    train: list[Item]
    logits: torch.nn.Parameter
    opt: torch.optim.Optimizer
    gen: torch.Generator
    rng: random.Random
    rows: list[dict] = field(default_factory=list)
    history: list[torch.Tensor] = field(default_factory=list)
    queue: list[list[Item]] = field(default_factory=list)
    step: int = 0
    epoch: int = 0
    start: torch.Tensor | None = None  # the starting deterministic mask
    last: torch.Tensor | None = None  # the deterministic mask after the last step
    still: int = 0
    moved: bool = False
    converged: bool = False
    done: bool = False
    losses: list[float] = field(default_factory=list)
    effects: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def state(self) -> dict:
        keys = (
            "rows",
            "history",
            "queue",
            "step",
            "epoch",
            "start",
            "last",
            "still",
            "moved",
            "converged",
            "done",
            "losses",
            "effects",
            "seconds",
        )
        return {k: getattr(self, k) for k in keys} | {
            "mask_logits": self.logits.detach().cpu(),
            "opt": self.opt.state_dict(),
            "gen": self.gen.get_state(),
            "rng": self.rng.getstate(),
        }

    def restore(self, st: dict) -> None:
        with torch.no_grad():
            self.logits.copy_(st["mask_logits"].to(self.logits.device))
        self.opt.load_state_dict(st["opt"])
        self.gen.set_state(st["gen"])
        self.rng.setstate(st["rng"])
        for k in (
            "rows",
            "history",
            "queue",
            "step",
            "epoch",
            "start",
            "last",
            "still",
            "moved",
            "converged",
            "done",
            "losses",
            "effects",
            "seconds",
        ):
            setattr(self, k, st[k])


def _new_run(p: SearchParams, train: list[Item], info, device: torch.device) -> _Run:
    gen = torch.Generator(device=device).manual_seed(p.seed)
    init_gen = torch.Generator().manual_seed(p.seed)
    start = p.init + 0.01 * torch.randn(info.n_layers, info.n_heads, generator=init_gen)
    logits = torch.nn.Parameter(start.to(device))
    opt = torch.optim.AdamW([logits], lr=p.lr, weight_decay=p.weight_decay)
    return _Run(p, list(train), logits, opt, gen, random.Random(f"batches|{p.seed}"))


def _log_row(run: _Run, loaded: Loaded, dev: list[Item], ablation: Ablation, groups: list[str]) -> dict:
    keep = (run.logits.detach() > 0).float()
    deltas = evaluate_items(loaded, dev, keep, ablation=ablation)
    row = {
        "epoch": run.epoch,
        "step": run.step,
        "loss": sum(run.losses) / len(run.losses) if run.losses else float("nan"),
        "effect_loss": sum(run.effects) / len(run.effects) if run.effects else float("nan"),
        "sparsity": torch.sigmoid(run.logits.detach()).mean().item(),
        "n_removed": int((keep == 0).sum()),
        "dev_delta": float(deltas.mean()) if len(deltas) else float("nan"),
        "dev_acc": float((deltas > 0).mean()) if len(deltas) else float("nan"),
        "dev_se": subject_se(deltas, groups),
        "converged": run.converged,
        "seconds": run.seconds,
    }
    run.rows.append(row)
    run.history.append(run.logits.detach().cpu().clone())
    run.losses, run.effects, run.seconds = [], [], 0.0
    return row


def search_many(
    loaded: Loaded,
    trains: Sequence[list[Item]],
    dev: list[Item],
    params: Sequence[SearchParams],
    checkpoint: Path | None = None,
    progress: Callable[[int, dict], None] | None = None,
    ablation: Ablation = ZERO,
) -> list[tuple[list[dict], list[torch.Tensor]]]:
    """Run several mask searches in one pass (module docstring); search s trains on trains[s] with params[s].

    Args:
        loaded: the model (weights frozen).
        trains: each search's training items (a half-sample or a bootstrap resample of the split).
        dev: dev items (the selection rule's Δ and its subject-level standard error).
        params: each search's hyper-parameters and seed (bf16 is read from the first).
        checkpoint: state saved after every logged epoch; a rerun resumes from it and equals an uninterrupted
            run (all randomness comes from seeded generators saved in the checkpoint).
        progress: called with (search index, log row) after each logged epoch.
        ablation: how removed heads are replaced while training and on dev.
    Returns:
        Per search: (log rows, one per epoch incl. epoch 0; the mask logits after each of them).
    """
    if len(trains) != len(params):
        raise ValueError("one training sample per search")
    if any(not t for t in trains):
        raise ValueError("no training items (check --train-conditions and the train split)")
    info = loaded.info
    device = next(loaded.model.parameters()).device
    if params:
        torch.manual_seed(params[0].seed)
    runs = [_new_run(p, t, info, device) for p, t in zip(params, trains)]
    groups = units(dev)
    bf16 = params[0].bf16 if params else None
    resumed = False
    if checkpoint is not None and checkpoint.exists():
        st = torch.load(checkpoint, weights_only=False)
        if st.get("params") == [asdict(p) for p in params] and st.get("n_train") == [len(t) for t in trains]:
            for run, s in zip(runs, st["runs"]):
                run.restore(s)
            resumed = True
            log.info("resumed %d mask search(es) from %s", len(runs), checkpoint)
    if not resumed:
        for run in runs:
            run.start = run.last = (run.logits.detach() <= 0).cpu()
            _log_row(run, loaded, dev, ablation, groups)
    while True:
        active = [r for r in runs if not r.done]
        if not active:
            break
        for run in active:
            if not run.queue:
                run.queue = make_batches(run.train, run.params.batch_size, run.rng)
                run.epoch += 1
        t0 = time.perf_counter()
        batches = [run.queue.pop(0) for run in active]
        scales = [gumbel_sigmoid_st(run.logits, run.params.tau, run.gen, len(b)) for run, b in zip(active, batches)]
        losses, effects = step_losses(
            loaded, batches, scales, [r.logits for r in active], [r.params.lam for r in active], bf16, ablation
        )
        for run in active:
            run.opt.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        share = (time.perf_counter() - t0) / len(active)
        for run, loss, effect in zip(active, losses, effects):
            for group in run.opt.param_groups:
                group["lr"] = step_lr(run.params, run.step + 1)
            run.opt.step()
            run.step += 1
            run.losses.append(loss.item())
            run.effects.append(effect.item())
            run.seconds += share
            mask = (run.logits.detach() <= 0).cpu()
            run.moved = run.moved or not torch.equal(mask, run.start)
            run.still = run.still + 1 if run.moved and torch.equal(mask, run.last) else 0
            run.last = mask
            run.converged = run.moved and run.still >= run.params.converge_steps
            budget = run.step >= run.params.max_steps or (not run.queue and run.epoch >= run.params.epochs)
            run.done = run.converged or budget
        for i, run in enumerate(runs):
            if run in active and (run.done or not run.queue):
                t1 = time.perf_counter()
                run.queue = [] if run.done else run.queue
                row = _log_row(run, loaded, dev, ablation, groups)
                row["seconds"] += time.perf_counter() - t1
                if progress:
                    progress(i, row)
        if checkpoint is not None and any(run in active and not run.queue for run in runs):
            _save(
                checkpoint,
                {
                    "params": [asdict(p) for p in params],
                    "n_train": [len(t) for t in trains],
                    "epoch": min(r.epoch for r in runs),
                    "runs": [r.state() for r in runs],
                },
            )
    return [(r.rows, r.history) for r in runs]


def search(
    loaded: Loaded,
    train: list[Item],
    dev: list[Item],
    params: SearchParams,
    checkpoint: Path | None = None,
    progress: Callable[[dict], None] | None = None,
    ablation: Ablation = ZERO,
) -> tuple[list[dict], list[torch.Tensor]]:
    """Run one mask search; returns (one log row per epoch incl. epoch 0, the mask logits after each epoch).

    Args:
        loaded: the model (weights frozen).
        train: training items (a half-sample or bootstrap resample may be passed).
        dev: dev items (the selection rule's Δ and its standard error).
        params: hyper-parameters, seed, bf16, budget (max_steps, epochs), convergence test.
        checkpoint: state saved after every epoch; a rerun resumes from it and equals an uninterrupted run with
            the same seed (all randomness comes from seeded generators saved in the checkpoint).
        progress: called with each epoch's log row.
        ablation: how removed heads are replaced while training and on dev.
    Returns:
        (log rows, mask logits after each logged epoch); the last row's ``converged`` says whether the convergence
        test ended the search (else the budget did).
    """
    on_row = (lambda _i, row: progress(row)) if progress else None
    return search_many(loaded, [train], dev, [params], checkpoint, on_row, ablation)[0]


def removed_heads(logits: torch.Tensor) -> tuple[tuple[int, int], ...]:
    """The heads a deterministic mask removes (keep logit <= 0), sorted."""
    return tuple(sorted((int(a), int(b)) for a, b in (logits <= 0).nonzero().tolist()))
