"""Is removing the learned heads better than removing random heads? The statistics of that claim.

- ``paired_gain``: per-item gain g_i = Δ_ablated,i − Δ_original,i (Δ = ℓ(gold) − ℓ(distractor)); its mean,
  the t-based CI and the paired two-sided t-test (equal to ``scipy.stats.ttest_rel``).
- ``null_summary``: the random-head null. Each draw removes as many heads as the mask, chosen uniformly at
  random (seeded); its statistic is the mean gain over the same items as the observed gain. Empirical
  p = (1 + #{draws with mean gain ≥ observed}) / (1 + draws) (never 0), and the observed gain's z-score
  against the draws (NaN when the draws do not vary).
- ``holm``: Holm's step-down adjustment (across relations, for the summary).
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps


def t_interval(mean: float, se: float, df: float, level: float = 0.95) -> tuple[float, float, float]:
    """The t-based CI and two-sided p of a mean with standard error `se` on `df` degrees of freedom.

    Args:
        mean: the estimate.
        se: its standard error.
        df: degrees of freedom (n − 1, or Welch–Satterthwaite's).
        level: confidence level.
    Returns:
        (low, high, p); NaNs when df < 1 or se is not positive and finite.
    """
    if not (df >= 1 and se > 0 and np.isfinite(se)):
        return float("nan"), float("nan"), float("nan")
    half = sps.t.ppf(0.5 + level / 2, df) * se
    return mean - half, mean + half, float(2 * sps.t.sf(abs(mean / se), df))


def paired_gain(ablated: np.ndarray, original: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean, CI and paired-t p of ablated − original (per item)."""
    g = np.asarray(ablated, float) - np.asarray(original, float)
    n = len(g)
    mean = float(g.mean()) if n else float("nan")
    if n < 2 or not np.std(g) > 0:
        return {"gain": mean, "gain_ci_low": float("nan"), "gain_ci_high": float("nan"), "gain_p": float("nan")}
    low, high, p = t_interval(mean, g.std(ddof=1) / np.sqrt(n), n - 1, level)
    return {"gain": mean, "gain_ci_low": low, "gain_ci_high": high, "gain_p": p}


def empirical_p(observed: float, draws: np.ndarray) -> float:
    """(1 + #{draws ≥ observed}) / (1 + number of draws)."""
    draws = np.asarray(draws, float)
    return float((1 + np.sum(draws >= observed)) / (1 + len(draws)))


def z_score(observed: float, draws: np.ndarray) -> float:
    """(observed − mean of draws) / sd of draws (ddof 1); NaN if fewer than 2 draws or no spread."""
    draws = np.asarray(draws, float)
    if len(draws) < 2 or not draws.std(ddof=1) > 0:
        return float("nan")
    return float((observed - draws.mean()) / draws.std(ddof=1))


def null_summary(observed: float, draw_gains: np.ndarray) -> dict[str, float]:
    """The null columns of an `ablated` row: null_draws, null_mean, null_p, null_z."""
    draw_gains = np.asarray(draw_gains, float)
    return {
        "null_draws": len(draw_gains),
        "null_mean": float(draw_gains.mean()) if len(draw_gains) else float("nan"),
        "null_p": empirical_p(observed, draw_gains) if len(draw_gains) else float("nan"),
        "null_z": z_score(observed, draw_gains),
    }


def holm(p: list[float]) -> list[float]:
    """Holm-adjusted p-values (NaN stays NaN and does not count)."""
    p_arr = np.asarray(p, float)
    ok = np.flatnonzero(~np.isnan(p_arr))
    out = np.full(len(p_arr), np.nan)
    order = ok[np.argsort(p_arr[ok], kind="stable")]
    k, running = len(order), 0.0
    for step, i in enumerate(order):
        running = max(running, min(1.0, (k - step) * p_arr[i]))
        out[i] = running
    return out.tolist()
