"""The head verdict with the query subject as the unit: subject_gains.parquet and verdict.parquet.

A claim that removing heads helps on *new subjects* has the subject as its unit: the prompts of one subject share
its no-context arm and its answer, so they are not independent. Per (model, relation, ablation_label,
ablation_method, fold, subject), from the per-item Δ = ℓ(gold) − ℓ(distractor) of the mask's own relation and
training condition(s) on its test items (``evaluate.subject_items``):

  gain        = mean over the subject's items of Δ_ablated − Δ_original            (with context)
  gain_noctx  = mean over the subject's items of Δ_noctx,ablated − Δ_noctx          (no context, heads removed in
                                                                                    both arms of the difference)
  interaction = gain − gain_noctx

``gain`` says the heads lower Δ with context; ``interaction`` says they do so *because of the context*: heads that
lift Δ in general (also without context) have gain ≈ gain_noctx and no interaction.

verdict.parquet aggregates the subjects of each (model, relation, ablation_label, ablation_method): the mean over
subjects of each subject's value, its t CI (df = subjects − 1) and two-sided p (``subject_t``), the number of
subjects helped (gain > 0), and ``null_p`` against random head sets of the same size. First-token collisions are not
in the items (``evaluate.without_collisions``).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from entrainment.statistics.null import paired_gain
from entrainment.store.schema import SUBJECT_GAINS, VERDICT

GROUP = ("model", "relation", "ablation_label", "ablation_method")


def subject_t(values: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean of per-subject values, its t CI (df = n − 1) and the two-sided one-sample t p (NaN with < 2 subjects
    or no spread).

    Args:
        values: one value per subject.
        level: the CI's confidence level.
    Returns:
        {"mean", "ci_low", "ci_high", "p"}.
    """
    v = np.asarray(values, float)
    g = paired_gain(v, np.zeros_like(v), level)
    return {"mean": g["gain"], "ci_low": g["gain_ci_low"], "ci_high": g["gain_ci_high"], "p": g["gain_p"]}


def subject_gains(items: pl.DataFrame) -> pl.DataFrame:
    """subject_gains.parquet rows from labelled per-item rows.

    Args:
        items: per-item rows with model, relation, ablation_label, ablation_method, fold (null outside the
            cross-fitted verdict), subject and delta_original / delta_ablated / delta_noctx / delta_noctx_ablated.
    Returns:
        One row per (model, relation, ablation_label, ablation_method, fold, subject), SUBJECT_GAINS's columns.
    """
    if items.is_empty():
        return pl.DataFrame(schema=SUBJECT_GAINS.polars_schema())
    if "fold" not in items.columns:
        items = items.with_columns(pl.lit(None, pl.Int64).alias("fold"))
    out = (
        items.group_by(*GROUP, "fold", "subject")
        .agg(
            pl.len().alias("n_items"),
            pl.col("delta_original").mean(),
            pl.col("delta_ablated").mean(),
            (pl.col("delta_ablated") - pl.col("delta_original")).mean().alias("gain"),
            (pl.col("delta_noctx_ablated") - pl.col("delta_noctx")).mean().alias("gain_noctx"),
            (pl.col("delta_original").fill_nan(None) > 0).cast(pl.Float64).mean().alias("acc_original"),
            (pl.col("delta_ablated").fill_nan(None) > 0).cast(pl.Float64).mean().alias("acc_ablated"),
        )
        .with_columns(
            (pl.col("gain") - pl.col("gain_noctx")).alias("interaction"),
            (pl.col("acc_ablated") - pl.col("acc_original")).alias("acc_gain"),
        )
    )
    return (
        out.select(SUBJECT_GAINS.names)
        .cast(SUBJECT_GAINS.polars_schema())
        .sort(*GROUP, "fold", "subject", nulls_last=False)
    )


def verdict_rows(
    sg: pl.DataFrame, null_p: dict[tuple, tuple[float, int]], n_heads: dict[tuple, int], level: float = 0.95
) -> pl.DataFrame:
    """verdict.parquet rows: per (model, relation, ablation_label, ablation_method), the subject-level verdict.

    Args:
        sg: subject_gains rows.
        null_p: GROUP key -> (empirical p against random head sets of the same size, number of draws); missing: NaN.
        n_heads: GROUP key -> heads removed (the cross-fitted verdict: the mean over its folds, rounded).
        level: the CIs' confidence level.
    Returns:
        VERDICT's columns, one row per GROUP key.
    """
    rows = []
    for key, g in sorted(sg.group_by(*GROUP), key=lambda kv: tuple(str(x) for x in kv[0])):
        key = tuple(key)
        gain, inter, noctx, acc = (
            subject_t(g[c].to_numpy(), level) for c in ("gain", "interaction", "gain_noctx", "acc_gain")
        )
        p, draws = null_p.get(key, (float("nan"), 0))
        rows.append(
            dict(zip(GROUP, key))
            | {
                "n_heads": n_heads.get(key, -1),
                "n_folds": g["fold"].drop_nulls().n_unique(),
                "n_subjects": len(g),
                "n_items": int(g["n_items"].sum()),
                "subjects_helped": int((g["gain"] > 0).sum()),
                "gain": gain["mean"],
                "gain_ci_low": gain["ci_low"],
                "gain_ci_high": gain["ci_high"],
                "gain_p": gain["p"],
                "gain_noctx": noctx["mean"],
                "gain_noctx_ci_low": noctx["ci_low"],
                "gain_noctx_ci_high": noctx["ci_high"],
                "interaction": inter["mean"],
                "interaction_ci_low": inter["ci_low"],
                "interaction_ci_high": inter["ci_high"],
                "interaction_p": inter["p"],
                "acc_original": float(g["acc_original"].mean()),
                "acc_gain": acc["mean"],
                "acc_gain_ci_low": acc["ci_low"],
                "acc_gain_ci_high": acc["ci_high"],
                "acc_gain_p": acc["p"],
                "null_p": p,
                "null_draws": draws,
                "unit": "subject",
            }
        )
    return pl.DataFrame(rows, schema=VERDICT.polars_schema())


def null_from_ablation(abl: pl.DataFrame, conditions: tuple[str, ...]) -> dict[tuple, tuple[float, int]]:
    """The random-head null of each evaluated mask, from its ablation.parquet row (own relation, test split, all
    templates, the first training condition with a null): GROUP key -> (null_p, null_draws)."""
    rows = abl.filter(
        (pl.col("variant") == "ablated")
        & (pl.col("null_draws") > 0)
        & (pl.col("templates") == "all")
        & (pl.col("relation") == pl.col("mask_relation"))
        & pl.col("condition").is_in(list(conditions))
    )
    out: dict[tuple, tuple[float, int]] = {}
    for r in rows.sort("condition").iter_rows(named=True):
        out.setdefault(
            (r["model"], r["relation"], r["ablation_label"], r["ablation_method"]), (r["null_p"], r["null_draws"])
        )
    return out


def heads_of(abl: pl.DataFrame) -> dict[tuple, int]:
    """GROUP key -> heads removed, from ablation.parquet's ablated rows on the mask's own relation."""
    rows = abl.filter((pl.col("variant") == "ablated") & (pl.col("relation") == pl.col("mask_relation")))
    return {
        (r["model"], r["relation"], r["ablation_label"], r["ablation_method"]): r["n_heads_removed"]
        for r in rows.iter_rows(named=True)
    }


def empirical_null(observed: float, draws: np.ndarray) -> float:
    """(1 + #{draws ≥ observed}) / (1 + draws); NaN without draws."""
    from entrainment.statistics.null import empirical_p

    return empirical_p(observed, draws) if len(draws) else float("nan")


def subject_means(subjects: list, values: np.ndarray) -> np.ndarray:
    """Each subject's mean of its items' values (subjects in first-seen order).

    Args:
        subjects: each item's subject.
        values: each item's value.
    Returns:
        One mean per subject.
    """
    by: dict = {}
    for s, v in zip(subjects, values):
        by.setdefault(s, []).append(v)
    return np.array([np.mean(v) for v in by.values()])


def subject_mean_gain(subjects: list, gains: np.ndarray) -> float:
    """The verdict's statistic: the mean over subjects of each subject's mean per-item gain."""
    means = subject_means(subjects, gains)
    return float(means.mean()) if len(means) else float("nan")


def lines(verdict: pl.DataFrame) -> list[str]:
    """One printed line per verdict row: subjects, how many helped, the gain and the interaction with CIs, null."""
    out = []
    multi = verdict["model"].n_unique() > 1 if len(verdict) else False
    for r in verdict.iter_rows(named=True):
        tag = f"[{r['model']}] " if multi else ""
        null = (
            f"vs {r['null_draws']} random {r['n_heads']}-head sets p = {r['null_p']:.3g}"
            if r["null_draws"]
            else "no random-head null"
        )
        out.append(
            f"{tag}verdict {r['ablation_label']} [{r['ablation_method']}] on {r['relation']} ({r['n_heads']} heads"
            f"{', ' + str(r['n_folds']) + ' folds' if r['n_folds'] else ''}): {r['n_subjects']} subjects "
            f"({r['n_items']} items), helped {r['subjects_helped']}/{r['n_subjects']}; gain {r['gain']:+.2f} "
            f"[{r['gain_ci_low']:+.2f}, {r['gain_ci_high']:+.2f}] p = {r['gain_p']:.2g}; interaction "
            f"{r['interaction']:+.2f} [{r['interaction_ci_low']:+.2f}, {r['interaction_ci_high']:+.2f}] "
            f"p = {r['interaction_p']:.2g}; accuracy {r['acc_original']:.2f} {r['acc_gain']:+.2f} "
            f"[{r['acc_gain_ci_low']:+.2f}, {r['acc_gain_ci_high']:+.2f}]; {null} (unit: subject)"
        )
    return out
