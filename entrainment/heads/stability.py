"""Stability selection over mask searches: which heads are removed because of the model, not the seed or items.

Every search (seed x training resample) selects a head set. For each head: how many searches removed it, the
inclusion frequency and its Wilson 95% score interval; the **stable set** is the heads removed by at least
`threshold` of the searches (Meinshausen & Buehlmann's stability selection; the MIB shared task keeps what
survives bootstrapping), with Meinshausen & Buehlmann's bound on the expected false selections (``pfer_bound``).
Agreement between searches: pairwise Jaccard of their head sets, its chance level for sets of those sizes
(``expected_jaccard``), the chance-corrected Jaccard, the overlap coefficient and the rank correlation of the
keep-logits; each measure's mean over pairs with a bootstrap CI that resamples the searches (``mean_pairwise``).
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
    n = len(sets)
    pair = np.array([[jaccard(sets[i], sets[j]) for j in range(n)] for i in range(n)]).reshape(n, n)
    return mean_pairwise(pair, draws, level, key)


def mean_pairwise(
    pair: np.ndarray, draws: int = 1000, level: float = 0.95, key: str = "pairwise"
) -> tuple[float, float, float]:
    """Mean of a pairwise agreement measure over every pair of searches, with a bootstrap CI over the searches.

    The searches (not the pairs) are the resampled unit: pairs share searches, so they are not independent. Each
    draw resamples the searches with replacement and averages the measure over pairs of distinct draws. Where the
    searches differ by their training subjects (half-samples), this is the variation from which subjects trained them.

    Args:
        pair: [n, n] symmetric matrix of the measure between searches i and j (diagonal ignored; NaN pairs skipped).
        draws: bootstrap resamples.
        level: confidence level.
        key: seeds the resampling (same key, same CI).
    Returns:
        (mean, ci_low, ci_high); NaN with fewer than two searches or no finite pair; the CI NaN with fewer than three
        searches (two searches make one pair: no spread to resample).
    """
    n = len(pair)
    nan = float("nan")
    upper = [pair[i, j] for i, j in itertools.combinations(range(n), 2)]
    if n < 2 or not np.isfinite(upper).any():
        return nan, nan, nan
    mean = float(np.nanmean(upper))
    if n < 3:
        return mean, nan, nan
    rng = random.Random(key)
    stats = []
    for _ in range(draws):
        pick = [rng.randrange(n) for _ in range(n)]
        vals = [pair[a, b] for a, b in itertools.combinations(pick, 2) if a != b and np.isfinite(pair[a, b])]
        if vals:
            stats.append(float(np.mean(vals)))
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)]) if stats else (nan, nan)
    return mean, float(lo), float(hi)


def expected_jaccard(a: int, b: int, n: int) -> float:
    """E[J] of two independent uniformly random sets of sizes a and b out of n items (exact: the intersection is
    hypergeometric, J = x / (a + b - x)); 1.0 when both are empty (jaccard's convention)."""
    if not 0 <= a <= n or not 0 <= b <= n:
        raise ValueError(f"set sizes {a}, {b} outside 0..{n}")
    if a == 0 and b == 0:
        return 1.0
    lo, hi = max(0, a + b - n), min(a, b)
    x = np.arange(lo, hi + 1)
    p = sps.hypergeom.pmf(x, n, a, b)
    return float(np.sum(p * x / (a + b - x)))


def corrected_jaccard(j: float, chance: float) -> float:
    """Chance-corrected Jaccard (J - E[J]) / (1 - E[J]): 0 = what random sets of these sizes give, 1 = identical
    sets; NaN when E[J] = 1 (two empty sets or two sets of every item: no room above chance)."""
    return float("nan") if chance >= 1 - 1e-12 else (j - chance) / (1 - chance)


def overlap_coefficient(a: set, b: set) -> float:
    """|a & b| / min(|a|, |b|) (Szymkiewicz-Simpson); 1.0 for two empty sets, NaN when only one is empty."""
    if not a and not b:
        return 1.0
    if not a or not b:
        return float("nan")
    return len(a & b) / min(len(a), len(b))


def rank_correlation(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Spearman's rank correlation of two searches' keep-logits over every head: agreement on the whole ranking of
    heads, not only on the few a threshold removes.

    Args:
        a: the first search's keep-logits (any fixed head order).
        b: the second's, same order.
    Returns:
        rho, or NaN when either is missing, shorter than 3 or constant.
    """
    if a is None or b is None or len(a) != len(b) or len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(sps.spearmanr(a, b).statistic)


def pfer_bound(mean_selected: float, n_items: int, threshold: float) -> float:
    """Meinshausen & Buehlmann (2010, Theorem 1): the expected number of falsely selected heads in the stable set
    at inclusion threshold pi is at most q^2 / ((2 pi - 1) p), with q the mean number of heads a search selects and
    p the number of heads (assumes exchangeable noise heads and a selection better than random guessing; stated
    for subsamples of half the data). Infinite for pi <= 1/2, where the theorem says nothing."""
    if threshold <= 0.5 or n_items <= 0:
        return float("inf")
    return float(mean_selected**2 / ((2 * threshold - 1) * n_items))
