"""Donors for resample ablation: which item's head outputs replace another item's.

A donor is another prompt of the same group (relation and condition), chosen by a seeded derangement (Sattolo's
algorithm: a random cyclic permutation, so no prompt is its own donor) over the group's distinct prompts. A group
with a single distinct prompt has no donor; its removed heads take the mean.
"""

from __future__ import annotations

import random
from typing import Hashable, Sequence


def derangement(n: int, key: str) -> list[int]:
    """A seeded permutation of range(n) with no fixed point (n >= 2); [-1] for n = 1, [] for n = 0."""
    if n < 2:
        return [-1] * n
    order = list(range(n))
    rng = random.Random(key)
    for i in range(n - 1, 0, -1):  # Sattolo: j < i, so the result is one n-cycle
        j = rng.randrange(i)
        order[i], order[j] = order[j], order[i]
    return order


def donor_map(
    prompts: Sequence[tuple[int, ...]], groups: Sequence[Hashable], key: str
) -> dict[tuple[int, ...], tuple[int, ...]]:
    """prompt -> its donor prompt, a derangement within each group of distinct prompts (seeded by `key`).

    Args:
        prompts: token ids of each item's prompt (repeats allowed).
        groups: each item's group (e.g. (relation, condition)); donors never cross groups.
        key: the seed string.
    Returns:
        A dict over the prompts that have a donor (groups with one distinct prompt are left out).
    """
    by_group: dict[Hashable, list[tuple[int, ...]]] = {}
    for p, g in zip(prompts, groups):
        members = by_group.setdefault(g, [])
        if p not in members:
            members.append(p)
    out: dict[tuple[int, ...], tuple[int, ...]] = {}
    for g, members in by_group.items():
        members = sorted(members)
        perm = derangement(len(members), f"{key}|{g}")
        for p, j in zip(members, perm):
            if j >= 0 and p not in out:
                out[p] = members[j]
    return out


def ablation_for(method: str, mean, prompts: Sequence[tuple[int, ...]], groups: Sequence[Hashable], key: str):
    """The hooks.Ablation of a method: zero; mean (with the reference means); resample (means + donors drawn among
    `prompts` within `groups`, seeded by `key`)."""
    from entrainment.model.hooks import ZERO, Ablation

    if method == "zero":
        return ZERO
    if method == "mean":
        return Ablation("mean", mean)
    return Ablation("resample", mean, donor_map(prompts, groups, key))
