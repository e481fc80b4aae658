"""Where disagreement between mask searches comes from: the optimiser, the selection rule, the data (issue #31).

Three components, each an agreement between head sets, so they compare on one scale (chance-corrected Jaccard,
(J − E[J]) / (1 − E[J]), and the Spearman correlation of the keep-logits):

- **optimiser**: searches on the *same* training sample with different seeds (the full training split, resample 0,
  of every seed: half-samples and bootstrap resamples are drawn from the seed, so they differ in data too);
- **data**: complementary subject half-samples (seed s, resamples 2k − 1 and 2k: disjoint training subjects, same
  seed; left out under bootstrap resampling);
- **selection**: each search's own trajectory re-selected under the dev noise the selection rule reads: the per-epoch
  dev Δ redrawn as N(dev_delta, dev_se²) (a parametric bootstrap: the per-item dev values are not stored, and the
  epochs' noise is drawn independently, which overstates it where epochs share dev items), the rule applied again, and
  the re-selected mask compared with the search's own choice.

The unit of each CI is what varies independently: for optimiser the searches (its pairs share searches:
``stability.mean_pairwise``), for data the complementary pairs (disjoint searches), for selection the searches (one
value per search: its mean over the redraws). Two identical head sets (two empty ones included) agree fully (1).
Fewer than two units: no CI (NaN). The data component needs subject half-samples (``search_resampling = "half"``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import numpy as np
import polars as pl

from entrainment.heads import stability

COMPONENTS = ("optimiser", "selection", "data")
Key = tuple  # (model, relation, seed, resample)


def pairs_of(keys: list[Key], component: str) -> list[tuple[Key, Key]]:
    """The (search, search) pairs a component compares (optimiser or data).

    Args:
        keys: (model, relation, seed, resample) of every search.
        component: optimiser | data.
    Returns:
        The pairs, sorted.
    """
    keys = sorted(keys)
    if component == "optimiser":
        full = [k for k in keys if k[3] == 0]
        return [(a, b) for i, a in enumerate(full) for b in full[i + 1 :] if a[:2] == b[:2]]
    if component == "data":
        have = set(keys)
        return [(k, (*k[:3], k[3] + 1)) for k in keys if k[3] % 2 == 1 and (*k[:3], k[3] + 1) in have]
    raise ValueError(f"unknown component {component!r}")


def _mean(values: list[float]) -> float:
    """Mean of the finite values; NaN (without a warning) when there are none."""
    v = [x for x in values if x == x]
    return float(np.mean(v)) if v else float("nan")


def _ci(values: list[float], key: str, draws: int = 1000, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, percentile-bootstrap CI) of independent values; NaN CI with fewer than two."""
    v = np.asarray([x for x in values if x == x], float)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    if len(v) < 2:
        return float(v.mean()), float("nan"), float("nan")
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
    boot = rng.choice(v, (draws, len(v))).mean(axis=1)
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return float(v.mean()), float(lo), float(hi)


def _agree(a: set, b: set, la: np.ndarray | None, lb: np.ndarray | None, n_heads: int) -> tuple[float, float]:
    """(chance-corrected Jaccard, keep-logit Spearman) of two head sets; two identical sets (two empty ones
    included, where the chance correction is 0/0) agree fully: 1."""
    if a == b:
        return 1.0, stability.rank_correlation(la, lb)
    chance = stability.expected_jaccard(len(a), len(b), n_heads)
    return stability.corrected_jaccard(stability.jaccard(a, b), chance), stability.rank_correlation(la, lb)


def reselect(log: pl.DataFrame, rule: Callable[[list[dict]], int], draws: int, key: str) -> list[int]:
    """The epochs the selection rule picks when each epoch's dev Δ is redrawn from N(dev_delta, dev_se²).

    Args:
        log: one search's discovery rows (epoch, dev_delta, dev_se, n_removed).
        rule: the selection rule (rows -> epoch), e.g. search.select_epoch with the search's rule.
        draws: redraws.
        key: seeds the redraws.
    Returns:
        The picked epoch of every redraw.
    """
    rows = log.sort("epoch").to_dicts()
    rng = random.Random(key)
    picked = []
    for _ in range(draws):
        noisy = [
            dict(r, dev_delta=r["dev_delta"] + rng.gauss(0.0, r["dev_se"] if r["dev_se"] == r["dev_se"] else 0.0))
            for r in rows
        ]
        picked.append(rule(noisy))
    return picked


def decompose(
    log: pl.DataFrame,
    masks: pl.DataFrame,
    n_heads: dict[str, int],
    rule: Callable[[list[dict], str], int],
    draws: int = 100,
    resampling: str = "half",
) -> list[dict]:
    """head_disagreement rows: per (model, relation, component) the mean agreement and its CI (module docstring).

    Args:
        log: discovery rows of every search (model, relation, seed, resample, epoch, dev_delta, dev_se, n_removed,
            selected, selection_rule).
        masks: discovery_masks rows (every epoch's mask of every search).
        n_heads: model -> number of heads (for the chance level).
        rule: (log rows, selection rule name) -> selected epoch.
        draws: the selection component's redraws per search.
        resampling: how the searches' training samples were drawn (half | bootstrap): the data component needs
            complementary subject halves and is left out otherwise.
    Returns:
        One row (dict) per (model, relation, component) with at least one finite comparison.
    """
    keys = ["model", "relation", "seed", "resample"]
    epoch_sets: dict[tuple, set] = {}
    epoch_logits: dict[tuple, np.ndarray] = {}
    for k, g in masks.sort(*keys, "epoch", "layer", "head").group_by(*keys, "epoch", maintain_order=True):
        epoch_sets[tuple(k)] = set(zip(g.filter(pl.col("removed"))["layer"], g.filter(pl.col("removed"))["head"]))
        epoch_logits[tuple(k)] = g["mask_logit"].to_numpy()
    chosen = {tuple(r[c] for c in keys): r["epoch"] for r in log.filter(pl.col("selected")).iter_rows(named=True)}

    def agree(a: Key, b: Key, ea: int, eb: int, n: int) -> tuple[float, float]:
        (sa, la), (sb, lb) = ((epoch_sets[(*x, e)], epoch_logits[(*x, e)]) for x, e in ((a, ea), (b, eb)))
        return _agree(sa, sb, la, lb, n)

    out = []
    for (model, relation), g in sorted(log.group_by("model", "relation"), key=lambda kv: kv[0]):
        searches = sorted(k for k in chosen if k[:2] == (model, relation))
        n = n_heads[model]
        label = f"{model}|{relation}"
        rows: dict[str, tuple] = {}
        # optimiser: every pair of full-split searches; pairs share searches, so the CI resamples the searches
        full = [k for k in searches if k[3] == 0]
        if len(full) >= 2:
            pair = [[agree(a, b, chosen[a], chosen[b], n) if a != b else (np.nan, np.nan) for b in full] for a in full]
            m = np.array(pair, float)  # [searches, searches, 2]
            rows["optimiser"] = (
                len(full) * (len(full) - 1) // 2,
                stability.mean_pairwise(m[..., 0], key=f"optimiser|j|{label}"),
                stability.mean_pairwise(m[..., 1], key=f"optimiser|rho|{label}"),
            )
        # selection: one value per search (its mean over the redraws), the searches independent units
        per_search = []
        for k in searches:
            lg = g.filter((pl.col("seed") == k[2]) & (pl.col("resample") == k[3]))
            name = lg["selection_rule"][0]
            redrawn = reselect(lg, lambda r: rule(r, name), draws, f"reselect|{'|'.join(map(str, k))}")
            per = [agree(k, k, chosen[k], e, n) for e in redrawn]
            per_search.append(tuple(_mean([p[i] for p in per]) for i in (0, 1)))
        rows["selection"] = _unit_row(per_search, f"selection|{label}")
        # data: complementary subject halves, disjoint pairs (independent units); only for half-samples
        if resampling == "half":
            halves = [agree(a, b, chosen[a], chosen[b], n) for a, b in pairs_of(searches, "data")]
            rows["data"] = _unit_row(halves, f"data|{label}")
        for component in COMPONENTS:
            if component not in rows or rows[component][0] == 0:
                continue
            units, j, rho = rows[component]
            out.append(
                {
                    "model": model,
                    "relation": relation,
                    "component": component,
                    "n": units,
                    "jaccard_corrected": j[0],
                    "jaccard_corrected_ci_low": j[1],
                    "jaccard_corrected_ci_high": j[2],
                    "spearman_logits": rho[0],
                    "spearman_logits_ci_low": rho[1],
                    "spearman_logits_ci_high": rho[2],
                }
            )
    return out


def _unit_row(values: list[tuple[float, float]], key: str) -> tuple:
    """(units with a finite Jaccard, its mean and CI, the Spearman's) over independent units."""
    units = sum(1 for v in values if v[0] == v[0])
    return units, _ci([v[0] for v in values], f"{key}|j"), _ci([v[1] for v in values], f"{key}|rho")
