"""Sentence-level measures and their statistics, the subject as the unit (entrainment.stages.sentences's docstring).

``item_effects`` turns sentence_scores rows into one value per (item, measure): Δ_self, Δ_net = Δ_self − Δ_control,
and the gap Δ(self_cf) − Δ(gold). ``subject_stats`` summarises them per (model, ablation, relation, condition,
measure): the mean over query subjects of their items' mean, a t CI and p over subjects; the pooled ``ALL`` row
weights relations equally (a stratified mean, its variance the sum of the relations' squared standard errors over
R², Welch–Satterthwaite df); Holm within each (model, ablation, measure) family.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from entrainment.data.sentence_items import OWN_CF
from entrainment.statistics.null import holm, t_interval

MEASURES = ("self", "net", "gap")
_KEY = ["model", "ablation", "relation", "condition", "item", "subject"]


def item_effects(scores: pl.DataFrame) -> pl.DataFrame:
    """One row per (model, ablation, relation, condition, item, subject, measure) with `value` (module docstring)."""
    d = (
        scores.pivot(on="arm", index=_KEY + ["target"], values="mean_logprob")
        .with_columns(diff=pl.col("present") - pl.col("absent"))
        .pivot(on="target", index=_KEY, values="diff")
    )
    for t in ("self", "self_cf", "gold", "control"):
        if t not in d.columns:
            d = d.with_columns(pl.lit(None, pl.Float64).alias(t))
    own = pl.when(pl.col("condition") == OWN_CF).then(pl.col("self_cf")).otherwise(pl.col("self"))
    d = d.with_columns(own.alias("m_self")).with_columns(
        (pl.col("m_self") - pl.col("control")).alias("m_net"),
        (pl.col("self_cf") - pl.col("gold")).alias("m_gap"),
    )
    long = d.unpivot(index=_KEY, on=[f"m_{m}" for m in MEASURES], variable_name="measure", value_name="value")
    return long.with_columns(pl.col("measure").str.strip_prefix("m_")).drop_nulls("value")


def _subject_means(g: pl.DataFrame) -> np.ndarray:
    return g.group_by("subject").agg(pl.col("value").mean()).sort("subject")["value"].to_numpy()  # fixed order


def subject_stats(effects: pl.DataFrame, level: float = 0.95) -> pl.DataFrame:
    """sentence_stats rows (without the null columns): per relation and pooled (`ALL`, relations weighted equally).

    Args:
        effects: from item_effects.
        level: confidence level.
    Returns:
        One row per (model, relation or ALL, condition, measure, ablation).
    """
    out = []
    for (model, ablation, cond, measure), g in effects.group_by("model", "ablation", "condition", "measure"):
        parts = []
        for (rel,), gr in sorted(g.group_by("relation"), key=lambda kv: kv[0]):
            m = _subject_means(gr)
            k = len(m)
            se = m.std(ddof=1) / np.sqrt(k) if k > 1 else float("nan")
            lo, hi, p = t_interval(float(m.mean()), se, k - 1, level)
            out.append(
                {
                    "model": model,
                    "relation": rel,
                    "condition": cond,
                    "measure": measure,
                    "ablation": ablation,
                    "n": len(gr),
                    "n_subjects": k,
                    "mean": float(m.mean()),
                    "ci_low": lo,
                    "ci_high": hi,
                    "p_value": p,
                }
            )
            parts.append((float(m.mean()), se**2, k))
        r = len(parts)
        mean = sum(p[0] for p in parts) / r
        var = sum(p[1] for p in parts) / r**2
        den = sum((p[1] / r**2) ** 2 / (p[2] - 1) for p in parts if p[2] > 1)
        df = var**2 / den if den > 0 and all(p[2] > 1 for p in parts) else float("nan")
        lo, hi, p = t_interval(mean, float(np.sqrt(var)), df, level)
        out.append(
            {
                "model": model,
                "relation": "ALL",
                "condition": cond,
                "measure": measure,
                "ablation": ablation,
                "n": len(g),
                "n_subjects": sum(p_[2] for p_ in parts),
                "mean": mean,
                "ci_low": lo,
                "ci_high": hi,
                "p_value": p,
            }
        )
    df_out = pl.DataFrame(out).sort("model", "ablation", "measure", "relation", "condition")
    adj = []
    for _, g in df_out.group_by("model", "ablation", "measure", maintain_order=True):
        adj.append(g.with_columns(pl.Series("p_adjusted", holm(g["p_value"].to_list()), pl.Float64)))
    return pl.concat(adj).sort("model", "ablation", "measure", "relation", "condition")
