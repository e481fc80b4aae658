"""Are the entrainment heads induction or copying heads? Agreement and dissociation (head_type_agreement.parquet).

Agreement (Yin & Steinhardt 2025's tests of whether two head populations are the same): per (relation, head-type
score, entrainment ranking), the Spearman correlation over all heads with a 95% percentile-bootstrap CI that
resamples *heads* (not subjects: the scores are per head), and the overlap of the type's top-k heads with the
entrainment heads against the hypergeometric chance k·m/N, with the one-sided p = P(X ≥ overlap). Rankings: the
single-head ``scan`` and ``atp`` scores (head_scores.parquet, the search's ablation method; entrainment heads = their
top-k) and the inclusion ``frequency`` over searches (head_stability.parquet; entrainment heads = the stable set).

Dissociation: with the entrainment heads E (the stable set, else the first seed's learned mask, else the scan's
top-k), remove (a) the top-k induction (or copying) heads outside E and (b) E without the top-k induction (or
copying) heads, and measure both the entrainment gain (mean Δ change, with context, on the discovery relation's test
subsample; Δ = ℓ(gold) − ℓ(distractor)) and the induction loss (the increase of the next-token loss on the second
half of the repeated random tokens), each beside the mean over random head sets of the same size (zero ablation).
Separable populations: (a) moves the induction loss and not the gain, (b) the gain and not the loss.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import polars as pl
import torch
from scipy import stats as st

from entrainment.heads.random_heads import random_sets
from entrainment.model.hooks import scaled_heads
from entrainment.model.loading import Loaded
from entrainment.model.multimask import head_masks, probe_logits
from entrainment.model.scoring import model_device

Heads = tuple[tuple[int, int], ...]


def top_k(grid: np.ndarray, k: int, exclude: Sequence[tuple[int, int]] = ()) -> Heads:
    """The k highest-scoring heads (ties in (layer, head) order; NaN last), skipping `exclude`."""
    flat = np.nan_to_num(grid.ravel(), nan=-np.inf)
    order = np.lexsort((np.arange(flat.size), -flat))
    skip = set(exclude)
    picked = [divmod(int(i), grid.shape[1]) for i in order if divmod(int(i), grid.shape[1]) not in skip]
    return tuple(sorted(picked[:k]))


def entrainment_heads(
    relation: str, heads, scores: dict[tuple[str, str], np.ndarray], model: str, k: int
) -> tuple[tuple[tuple[int, int], ...], str]:
    """The entrainment heads of a relation and where they come from: the stable set (heads.parquet, seed −1),
    else the first seed's learned mask, else the scan's top-k; ((), "none") without any."""
    from entrainment.heads import masks

    found = (
        [m for m in masks.learned_masks(heads) if m.model == model and m.relation == relation]
        if heads is not None and not heads.is_empty()
        else []
    )
    for m in sorted(found, key=lambda m: (m.seed != masks.STABLE_SEED, m.seed)):
        if m.head_set.heads:
            return tuple(m.head_set.heads), "stable" if m.seed == masks.STABLE_SEED else f"mask:seed{m.seed}"
    if (relation, "scan") in scores:
        return top_k(scores[(relation, "scan")], k), "scan"
    return (), "none"


def rankings(
    model: str, n_layers: int, n_heads: int, method: str, k: int, head_scores=None, stability=None
) -> dict[tuple[str, str], tuple[np.ndarray, tuple]]:
    """(relation, scan | atp | frequency) -> ([L, H] entrainment score, entrainment heads) from the scan's and the
    searches' tables (the scan's top-k; the stable set)."""
    out: dict = {}
    if head_scores is not None and not head_scores.is_empty():
        df = head_scores.filter((pl.col("model") == model) & (pl.col("ablation_method") == method))
        for (rel, name), g in df.group_by("relation", "method"):
            grid = np.full((n_layers, n_heads), np.nan)
            grid[g["layer"].to_numpy(), g["head"].to_numpy()] = g["score"].to_numpy()
            out[(rel, name)] = (grid, top_k(grid, k))
    if stability is not None and not stability.is_empty():
        df = stability.filter(pl.col("model") == model)
        if not df.is_empty():
            df = df.filter(
                pl.col("ablation_method")
                == (method if method in set(df["ablation_method"]) else sorted(set(df["ablation_method"]))[0])
            )
        for (rel,), g in df.group_by("relation"):
            grid = np.full((n_layers, n_heads), np.nan)
            grid[g["layer"].to_numpy(), g["head"].to_numpy()] = g["frequency"].to_numpy()
            stable = g.filter(pl.col("stable")).sort("layer", "head")
            out[(rel, "frequency")] = (grid, tuple(zip(stable["layer"].to_list(), stable["head"].to_list())))
    return out


def spearman_ci(
    x: np.ndarray, y: np.ndarray, draws: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float, float]:
    """(Spearman ρ, bootstrap CI low, high, p) over the heads where both are finite; NaN with fewer than 3."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return (float("nan"),) * 4
    rho, p = st.spearmanr(x, y)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(draws, len(x)))
    rx, ry = st.rankdata(x[idx], axis=1), st.rankdata(y[idx], axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    den = np.sqrt((rx**2).sum(1) * (ry**2).sum(1))
    boot = np.where(den > 0, (rx * ry).sum(1) / np.where(den > 0, den, 1), np.nan)
    lo, hi = np.nanpercentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return float(rho), float(lo), float(hi), float(p)


def overlap(a: Heads, b: Heads, n: int) -> tuple[int, float, float]:
    """(|a ∩ b|, its hypergeometric expectation |a|·|b|/n, one-sided p = P(X ≥ |a ∩ b|))."""
    obs = len(set(a) & set(b))
    return obs, len(a) * len(b) / n, float(st.hypergeom.sf(obs - 1, n, len(b), len(a)))


def agreement_rows(
    model: str,
    types: dict[str, np.ndarray],
    rankings: dict[tuple[str, str], tuple[np.ndarray, Heads]],
    k: int,
    seed: int,
) -> list[dict]:
    """One row per (relation, score, ranking): Spearman with its CI over heads, top-k overlap against chance.

    Args:
        model: the model spec.
        types: score name -> [L, H] head-type scores.
        rankings: (relation, ranking name) -> ([L, H] entrainment score, the entrainment heads).
        k: heads per type score compared.
        seed: bootstrap seed.
    Returns:
        head_type_agreement rows (kind = agreement).
    """
    out = []
    for (relation, ranking), (grid, entr) in sorted(rankings.items()):
        for name, score in types.items():
            rho, lo, hi, p = spearman_ci(score.ravel(), grid.ravel(), seed=seed)
            mine = top_k(score, k) if np.isfinite(score).any() else ()
            obs, chance, op = overlap(mine, entr, grid.size) if mine and entr else (None, None, None)
            out.append(
                {
                    "model": model,
                    "relation": relation,
                    "score": name,
                    "ranking": ranking,
                    "kind": "agreement",
                    "spearman": rho,
                    "spearman_ci_low": lo,
                    "spearman_ci_high": hi,
                    "spearman_p": p,
                    "n_heads": int(grid.size),
                    "k": len(mine),
                    "k_entrainment": len(entr),
                    "topk_overlap": obs,
                    "chance_overlap": chance,
                    "overlap_p": op,
                    "heads_type": _names(mine),
                    "heads_entrainment": _names(entr),
                }
            )
    return out


def _names(heads: Heads) -> str:
    return ",".join(f"{a}.{b}" for a, b in heads)


def repeat_loss(loaded: Loaded, seqs: torch.Tensor, bos: int, masks: torch.Tensor, chunk: int = 4) -> np.ndarray:
    """[M] mean next-token loss on the second half of the repeated sequences under each keep-mask [M, L, H]."""
    model = loaded.model
    device = model_device(model)
    length = (seqs.shape[1] - bos) // 2
    target = seqs[:, bos + length + 1 :].to(device)
    out = []
    with torch.inference_mode():
        for lo in range(0, len(masks), chunk):
            m = masks[lo : lo + chunk]
            scale = m.repeat_interleave(len(seqs), dim=0)  # one mask per row
            with scaled_heads(model, scale):
                lg = model(input_ids=seqs.repeat(len(m), 1).to(device), use_cache=False, logits_to_keep=length).logits
            lp = torch.log_softmax(lg[:, :-1].float(), dim=-1)
            nll = -lp.gather(-1, target.repeat(len(m), 1)[..., None])[..., 0]  # [rows, T-1]
            out += nll.view(len(m), len(seqs), -1).mean(dim=(1, 2)).cpu().tolist()
    return np.array(out)


def dissociation_rows(
    loaded: Loaded,
    types: dict[str, np.ndarray],
    entr: Heads,
    source: str,
    relation: str,
    k: int,
    items: tuple[list, list[int], list[int]],
    seqs: torch.Tensor,
    bos: int,
    draws: int,
    seed: int,
    batch_size: int = 64,
) -> list[dict]:
    """The 2 x 2 (x induction, copying) dissociation (module docstring), one row per removed population.

    Args:
        loaded: the model.
        types: score name -> [L, H] (induction, copying read).
        entr: the entrainment heads; source: where they come from (stable | mask | scan).
        relation: the discovery relation the gains are measured on.
        k: top-k heads per type.
        items: (prompt ids with context, gold first tokens, distractor first tokens) of the test subsample.
        seqs, bos: the repeated random tokens (head_types.repeated_tokens).
        draws: random head sets per removed set; seed: their seed.
        batch_size: rows per multi-mask pass.
    Returns:
        head_type_agreement rows (kind = dissociation).
    """
    info = loaded.info
    sets = []
    for name in ("induction", "copying"):
        if np.isfinite(types[name]).any():
            sets.append((name, "entrainment", name, top_k(types[name], k, exclude=entr)))
            top = set(top_k(types[name], k))
            sets.append((name, "entrainment", name, tuple(h for h in entr if h not in top)))
    heads: list[Heads] = [()]
    plan = []
    for name, _, _, s in sets:
        rnd = [r.heads for r in random_sets(len(s), info.n_layers, info.n_heads, draws, seed, frozenset({s}))]
        plan.append((s, rnd))
        heads += [s] + rnd
    unique = list(dict.fromkeys(heads))
    masks = head_masks(unique, info.n_layers, info.n_heads)
    prompts, gold, dist = items
    if prompts:
        lg = probe_logits(loaded, prompts, list(zip(gold, dist)), masks, batch_size)
        delta = lg[..., 0] - lg[..., 1]  # [M, N]
        gain = dict(zip(unique, (delta - delta[0]).mean(axis=1)))
    else:
        gain = {h: float("nan") for h in unique}
    loss = repeat_loss(loaded, seqs, bos, masks)
    dloss = dict(zip(unique, loss - loss[0]))
    out = []
    for (name, _, _, s), (_, rnd), i in zip(sets, plan, range(len(sets))):
        removed, excluded = ("entrainment", name) if i % 2 else (name, "entrainment")
        out.append(
            {
                "model": info.spec,
                "relation": relation,
                "score": name,
                "ranking": source,
                "kind": "dissociation",
                "removed": removed,
                "excluded": excluded,
                "n_removed": len(s),
                "heads_type": _names(s),
                "heads_entrainment": _names(entr),
                "n_heads": info.n_total_heads,
                "k": k,
                "k_entrainment": len(entr),
                "n_items": len(prompts),
                "draws": draws,
                "entrainment_gain": float(gain[s]) if s else float("nan"),
                "entrainment_gain_random": float(np.mean([gain[r] for r in rnd])) if s else float("nan"),
                "induction_loss": float(dloss[s]) if s else float("nan"),
                "induction_loss_random": float(np.mean([dloss[r] for r in rnd])) if s else float("nan"),
            }
        )
    return out
