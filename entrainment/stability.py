"""Stability selection over mask searches: which heads are removed because of the model, not the seed or items.

Every search (seed x training resample) selects a head set. For each head: how many searches removed it, the
inclusion frequency and its Wilson 95% score interval; the **stable set** is the heads removed by at least
`threshold` of the searches (Meinshausen & Buehlmann's stability selection; the MIB shared task keeps what
survives bootstrapping). Agreement between searches: pairwise Jaccard of their head sets, its mean, and a
bootstrap CI of the mean (the searches resampled with replacement).
"""

from __future__ import annotations

import itertools
import random

import numpy as np
from scipy import stats as sps


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials."""
    if n == 0:
        return float("nan"), float("nan")
    z = sps.norm.ppf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def inclusion(
    sets: list[set[tuple[int, int]]], n_layers: int, n_heads: int, threshold: float = 0.5, level: float = 0.95
) -> list[dict]:
    """One row per head: searches, selected, frequency, Wilson CI, stable (frequency >= threshold)."""
    n = len(sets)
    rows = []
    for layer in range(n_layers):
        for head in range(n_heads):
            k = sum((layer, head) in s for s in sets)
            lo, hi = wilson(k, n, level)
            freq = k / n if n else float("nan")
            rows.append(
                {
                    "layer": layer,
                    "head": head,
                    "searches": n,
                    "selected": k,
                    "frequency": freq,
                    "ci_low": lo,
                    "ci_high": hi,
                    "stable": bool(n and freq >= threshold - 1e-12),
                }
            )
    return rows


def stable_set(rows: list[dict]) -> tuple[tuple[int, int], ...]:
    """The stable heads of inclusion() rows, sorted."""
    return tuple(sorted((r["layer"], r["head"]) for r in rows if r["stable"]))


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets)."""
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def mean_jaccard(
    sets: list[set], draws: int = 1000, level: float = 0.95, key: str = "jaccard"
) -> tuple[float, float, float]:
    """(mean pairwise Jaccard, bootstrap CI low, high): searches resampled with replacement, pairs of distinct
    draws; NaN with fewer than two searches."""
    if len(sets) < 2:
        return float("nan"), float("nan"), float("nan")
    n = len(sets)
    pair = np.array([[jaccard(sets[i], sets[j]) for j in range(n)] for i in range(n)])
    mean = float(np.mean([pair[i, j] for i, j in itertools.combinations(range(n), 2)]))
    rng = random.Random(key)
    stats = []
    for _ in range(draws):
        pick = [rng.randrange(n) for _ in range(n)]
        vals = [pair[a, b] for a, b in itertools.combinations(pick, 2) if a != b]
        if vals:
            stats.append(float(np.mean(vals)))
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)]) if stats else (float("nan"),) * 2
    return mean, float(lo), float(hi)
