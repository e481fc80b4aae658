"""Report panels of the head verdict (verdict.parquet, subject_gains.parquet): the subject as the unit.

``verdict_plot``: per mask, the gain with context, the gain without context and their difference (the interaction),
each with its 95% CI over subjects. ``subject_plot``: the cross-fitted verdict, one point per subject: its mean Δ
intact (x) and with its fold's heads removed (y), above the diagonal = the heads help that subject.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from entrainment.figures.base import plt, png


def verdict_plot(verdict: pl.DataFrame, method: str | None = None) -> str | None:
    """Gain, no-context gain and interaction per mask with subject-level 95% CIs (one method: the first present).

    Args:
        verdict: verdict.parquet rows.
        method: the ablation method shown (default: zero if present, else the first).
    Returns:
        A PNG data URI, or None without rows.
    """
    if verdict.is_empty():
        return None
    methods = sorted(verdict["ablation_method"].unique())
    method = method or ("zero" if "zero" in methods else methods[0])
    rows = verdict.filter(pl.col("ablation_method") == method).sort("model", "relation", "ablation_label")
    if rows.is_empty():
        return None
    labels = [
        f"{r['ablation_label']}\n{r['n_heads']} heads, {r['subjects_helped']}/{r['n_subjects']} helped"
        for r in rows.iter_rows(named=True)
    ]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(9, 0.7 * len(rows) + 1.6))
    for k, (col, name, color) in enumerate(
        (
            ("gain", "gain with context", "#2ca02c"),
            ("gain_noctx", "gain without context", "#7f7f7f"),
            ("interaction", "interaction (difference)", "#9467bd"),
        )
    ):
        mean = rows[col].to_numpy()
        lo = rows[f"{col}_ci_low"].to_numpy()
        hi = rows[f"{col}_ci_high"].to_numpy()
        err = np.nan_to_num(np.vstack([mean - lo, hi - mean]))
        ax.errorbar(mean, y + (k - 1) * 0.22, xerr=err, fmt="o", color=color, capsize=3, label=name)
    ax.axvline(0, color="#444", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("change in Δ = ℓ(gold) − ℓ(distractor) from removing the heads (95% CI over subjects)")
    ax.set_title(f"The head verdict, subject as the unit ({method} ablation)")
    ax.legend(frameon=False, fontsize=8, loc="best")
    return png(fig)


def subject_plot(sg: pl.DataFrame) -> str | None:
    """The cross-fitted verdict per subject: mean Δ intact vs with the fold's heads removed, coloured by fold.

    Args:
        sg: subject_gains.parquet rows.
    Returns:
        A PNG data URI, or None without cross-fitted rows.
    """
    rows = sg.filter(pl.col("ablation_label").str.starts_with("crossfit:") & pl.col("fold").is_not_null())
    if rows.is_empty():
        return None
    groups = sorted(rows.group_by("model", "relation", "ablation_method"), key=lambda kv: tuple(map(str, kv[0])))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.6), squeeze=False)
    for ax, ((model, relation, method), g) in zip(axes[0], groups):
        for fold, part in sorted(g.group_by("fold"), key=lambda kv: kv[0][0]):
            ax.scatter(
                part["delta_original"],
                part["delta_ablated"],
                s=18 + 4 * part["n_items"].to_numpy(),
                alpha=0.75,
                label=f"fold {fold[0]}",
            )
        lo = float(min(g["delta_original"].min(), g["delta_ablated"].min()))
        hi = float(max(g["delta_original"].max(), g["delta_ablated"].max()))
        ax.plot([lo, hi], [lo, hi], color="#444", lw=0.8)
        helped = int((g["gain"] > 0).sum())
        ax.set_xlabel("subject's mean Δ, intact (with context)")
        ax.set_ylabel("same, its fold's heads removed")
        ax.set_title(f"{relation} [{method}]: {helped}/{len(g)} subjects above the diagonal", fontsize=9)
        ax.legend(frameon=False, fontsize=8)
    return png(fig)
