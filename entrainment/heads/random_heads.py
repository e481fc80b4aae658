"""The random-head control and null: head sets of a mask's size drawn at random, scored like the mask.

``random_head_sets`` draws seeded sets (never the selected set); ``null_subsample`` fixes the items the null is
scored on; ``null_gains_many`` scores the masks and every draw on them in batched multi-mask passes
(``multimask.probe_logits``), under any ablation method. The statistics of the comparison are in ``null``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from entrainment.heads.masks import HeadSet
from entrainment.model.hooks import ZERO, Ablation
from entrainment.model.loading import Loaded
from entrainment.model.multimask import head_masks, probe_logits


def random_sets(
    k: int,
    n_layers: int,
    n_heads: int,
    draws: int,
    seed: int,
    exclude: frozenset[tuple] = frozenset(),
    key: str | None = None,
) -> list[HeadSet]:
    """`draws` seeded sets of k heads drawn uniformly, none equal to a set in `exclude` (unless k is 0 or every head).
    Seeded by (seed, k) only, so every mask of one size is compared with the same draws; the first draws do not
    depend on `draws`. The one random-set generator of the project (the null, the random_heads rows, the k-curves'
    random arm): `key` replaces the RNG key ``random-heads|seed|k`` (the k-curves use ``kcurve|seed|k``)."""
    every = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    rng = random.Random(f"random-heads|{seed}|{k}" if key is None else key)
    out = []
    for i in range(draws):
        for _ in range(1000):
            pick = tuple(sorted(rng.sample(every, k)))
            if pick not in exclude or k in (0, len(every)):
                break
        out.append(HeadSet(f"random-{i}", pick))
    return out


def random_head_sets(selected: HeadSet, n_layers: int, n_heads: int, draws: int, seed: int) -> list[HeadSet]:
    """random_sets of the selected set's size, never the selected set itself."""
    return random_sets(len(selected.heads), n_layers, n_heads, draws, seed, frozenset({tuple(selected.heads)}))


@dataclass(frozen=True)
class NullPlan:
    """The random-head null: `draws` head sets of the mask's size, each scored on a fixed seeded subsample of
    up to `items` test items of each (own relation, condition in `conditions`) group; `bf16`: the null's passes
    (the draws and the observed mask on the same items) run under bfloat16 autocast."""

    draws: int = 100
    items: int = 64
    conditions: tuple[str, ...] = ("related",)
    bf16: bool = False


def null_subsample(idx: np.ndarray, size: int, key: str) -> np.ndarray:
    """A fixed seeded subsample (sorted) of item indices."""
    if len(idx) <= size:
        return np.sort(idx)
    return np.sort(np.array(random.Random(key).sample(list(idx), size)))


def null_gains_many(
    loaded: Loaded,
    prompts: list,
    gold: list[int],
    dist: list[int],
    selected: list[HeadSet],
    draws: list[HeadSet],
    batch_size: int,
    bf16: bool = False,
    ablation: Ablation = ZERO,
) -> tuple[list[float], np.ndarray]:
    """(observed mean gain of each selected set, mean gain of each draw) on the same items, in one batched pass:
    masks of one size share their draws, so their null costs one computation."""
    info = loaded.info
    masks = head_masks([()] + [s.heads for s in selected] + [d.heads for d in draws], info.n_layers, info.n_heads)
    logits = probe_logits(
        loaded, prompts, list(zip(gold, dist)), masks, max(batch_size, 64), bf16=bf16, ablation=ablation
    )
    delta = logits[..., 0] - logits[..., 1]  # [masks, items]
    gains = (delta[1:] - delta[0]).mean(axis=1)  # the selected sets, then each draw
    return [float(g) for g in gains[: len(selected)]], gains[len(selected) :]
